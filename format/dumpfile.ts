/**
 * composefs-dump(5) text: the parser (as mkcomposefs --from-file reads it, including its strict
 * mode) and the printer (as `composefs-info dump` writes it).
 */
import { CfsError, ErrorCode } from './errors.js';
import {
  DIGEST_SIZE,
  MAX_FILE_SIZE,
  MAX_INLINE_CONTENT,
  MAX_INODE_XATTR_SIZE,
  MAX_NAME_LEN,
  MAX_XATTR_NAME_LEN,
  MAX_XATTR_VALUE_LEN,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  isValidModeType,
} from './layout.js';
import { type Dirent, type Inode, type Xattr, addChild, findChild, newInode } from './tree.js';
import { readLatin1 } from './bytes.js';

export interface ParseOptions {
  /** mkcomposefs strict mode (CFS_PARSE_STRICT): exact symlink sizes, rdev 0 on non-devices, final newline. */
  strict?: boolean;
  /** Name of the input, for error messages. */
  input?: string;
}

const U64_MAX = (1n << 64n) - 1n;
const U16_MAX = 0xffff;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

class LineError extends Error {}
const fail = (msg: string): never => {
  throw new LineError(msg);
};

/** Undo the dump escapes of a field (byte string in, byte string out). */
function unescape(s: string): string {
  if (s.indexOf('\\') === -1) return s;
  let out = '';
  let i = 0;
  const end = s.length;
  while (i < end) {
    const bs = s.indexOf('\\', i);
    if (bs === -1) {
      out += s.slice(i);
      break;
    }
    out += s.slice(i, bs);
    i = bs + 1;
    if (i >= end) fail('No character after escape');
    const c = s[i++];
    switch (c) {
      case '\\':
        out += '\\';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'x': {
        if (i + 2 > end) fail('No hex characters after hex escape');
        const h = hexValue(s.charCodeAt(i));
        const l = hexValue(s.charCodeAt(i + 1));
        if (h < 0 || l < 0) fail('Invalid hex characters after hex escape');
        out += String.fromCharCode((h << 4) | l);
        i += 2;
        break;
      }
      default:
        fail(`Unsupported escape type ${c}`);
    }
  }
  return out;
}

/** C string semantics: the value ends at the first NUL. */
function cString(s: string): string {
  const z = s.indexOf('\0');
  return z === -1 ? s : s.slice(0, z);
}

/**
 * strtoull: optional leading white space and sign, digits, nothing after; saturates on
 * overflow. Returns a number when the value is below 2^53, else a bigint.
 */
function parseU64(text: string, base: 8 | 10): number | bigint {
  const len = text.length;
  // fast path: plain digits that fit exactly in a double
  if (len > 0 && len <= (base === 10 ? 15 : 17)) {
    let v = 0;
    let i = 0;
    for (; i < len; i++) {
      const d = text.charCodeAt(i) - 0x30;
      if (d < 0 || d >= base) break;
      v = v * base + d;
    }
    if (i === len) return v;
  }
  let i = 0;
  while (i < len && (text[i] === ' ' || (text.charCodeAt(i) >= 9 && text.charCodeAt(i) <= 13))) i++;
  let neg = false;
  if (text[i] === '+' || text[i] === '-') {
    neg = text[i] === '-';
    i++;
  }
  const digits = text.slice(i);
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(digits)) fail(`Invalid integer ${text}`);
  let v = base === 8 ? BigInt('0o' + digits) : BigInt(digits);
  if (v > U64_MAX) v = U64_MAX;
  else if (neg) v = -v & U64_MAX;
  return v < 2n ** 53n ? Number(v) : v;
}
/** Truncate to u32, as the library's u32 fields do. */
const u32 = (v: number | bigint): number => (typeof v === 'number' ? v >>> 0 : Number(v & 0xffffffffn));
const isZero = (v: number | bigint): boolean => v === 0 || v === 0n;

/** Per-inode xattr budget as mkcomposefs accounts it (12-byte header + 7 + key + value each). */
export function xattrBudget(xattrs: readonly Xattr[]): number {
  if (xattrs.length === 0) return 0;
  let n = 12;
  for (const x of xattrs) n += 7 + x.key.length + x.value.length;
  return n;
}

/**
 * Set an xattr the way libcomposefs does: replace an existing key (the last entry moves into
 * its slot), enforce name/value limits and the per-inode budget. Returns the new budget.
 */
export function setXattr(xattrs: Xattr[], key: string, value: string, budget: number, limit = MAX_INODE_XATTR_SIZE): number {
  if (key.length === 0 || key.length > MAX_XATTR_NAME_LEN) throw new RangeError(`invalid xattr name length ${key.length}`);
  if (value.length > MAX_XATTR_VALUE_LEN) throw new RangeError(`xattr value too long (${value.length} bytes)`);
  for (let i = 0; i < xattrs.length; i++) {
    if (xattrs[i].key === key) {
      const old = xattrs[i];
      xattrs[i] = xattrs[xattrs.length - 1];
      xattrs.pop();
      budget = xattrs.length > 0 ? budget - (7 + key.length + old.value.length) : 0;
      break;
    }
  }
  let entry = 7 + key.length + value.length;
  if (xattrs.length === 0) entry += 12;
  if (budget + entry > limit) throw new RangeError('xattrs exceed the per-inode size limit');
  xattrs.push({ key, value });
  return budget + entry;
}

interface LinkFixup {
  dirent: Dirent;
  target: string | null;
}

interface ParseState {
  root: Inode | null;
  /** Directories by normalized path ("" is the root), for finding parents. */
  dirs: Map<string, Inode>;
  fixups: LinkFixup[];
  linkOf: Map<Dirent, Dirent | Inode>;
  strict: boolean;
  /** Scratch: the 11 fixed fields of the current line, and where each starts in it. */
  fields: string[];
  fieldAt: number[];
  /** The input, and where the current line starts in it. */
  text: Buffer;
  lineStart: number;
  /** Xattr keys seen so far. */
  keys: Map<string, string>;
  lastSec: number;
  lastSecBig: bigint;
}

const FIELD_COUNT = 11;

/** Path components as mkcomposefs's lookup walks them: empty components are skipped. */
function normalize(path: string): string {
  if (path.startsWith('/') && !path.includes('//') && !path.endsWith('/')) return path;
  const parts = path.split('/').filter((p) => p !== '');
  return parts.length ? '/' + parts.join('/') : '';
}

function lookupPath(root: Inode, path: string): Dirent | Inode | null {
  let node: Inode = root;
  let found: Dirent | Inode = root;
  for (const part of path.split('/')) {
    if (part === '') continue;
    if (!node.children) return null;
    const i = findChild(node.children, part);
    if (i < 0) return null;
    found = node.children[i];
    if ((found as Dirent).link) return null; // a link has no children until it is resolved
    node = found.inode;
  }
  return found;
}

/**
 * `s`, a piece of `line` starting at `at`, as a string of its own: a slice longer than 12
 * characters would keep the whole line alive (and copied by every young-generation GC).
 */
function own(st: ParseState, line: string, s: string, at: number): string {
  if (s.length < 13 || line.charCodeAt(at) !== s.charCodeAt(0)) return s;
  return readLatin1(st.text, st.lineStart + at, st.lineStart + at + s.length);
}

function parseLine(st: ParseState, line: string): void {
  const fields = st.fields;
  const at = st.fieldAt;
  if (line.indexOf('\0') !== -1) fail(`Invalid embedded NUL character at position ${line.indexOf('\0')}`);

  let p = 0;
  let restStart = line.length;
  for (let i = 0; i < FIELD_COUNT; i++) {
    let sp = line.indexOf(' ', p);
    if (sp === -1) sp = line.length;
    fields[i] = line.slice(p, sp);
    at[i] = p;
    p = sp < line.length ? sp + 1 : line.length;
    if (i === FIELD_COUNT - 1) restStart = p;
  }

  const path = cString(unescape(fields[0]));
  if (path.length === 0) fail('Invalid empty path');

  let modeText = fields[2];
  const isLink = modeText.charCodeAt(0) === 0x40; // '@'
  if (isLink) modeText = modeText.slice(1);
  const mode = u32(parseU64(modeText, 8));
  if (!isValidModeType(mode)) fail(`Invalid mode ${mode.toString(8)}`);
  const type = mode & S_IFMT;

  // Add the node to the tree.
  const inode = newInode(mode);
  let dirent: Dirent | null = null;
  if (path === '/') {
    if (type !== S_IFDIR) fail('Root must be a directory');
    if (st.root) fail("Can't have multiple roots");
    st.root = inode;
    st.dirs.set('', inode);
  } else {
    if (!st.root) fail('Root node not present');
    const norm = normalize(path);
    const slash = norm.lastIndexOf('/');
    const name = path.endsWith('/') ? '' : norm === fields[0] ? own(st, line, norm.slice(slash + 1), at[0] + slash + 1) : norm.slice(slash + 1);
    const parentPath = norm.slice(0, Math.max(slash, 0));
    let parent = st.dirs.get(parentPath);
    if (!parent) {
      const found = lookupPath(st.root!, parentPath);
      if (!found) fail(`Parent directory missing for ${path}`);
      fail(`Parent must be a directory for ${path}`);
    }
    if (name === '.' || name === '..') fail(`Invalid . or .. in path: ${path}`);
    if (name.length === 0 || name.length > MAX_NAME_LEN) fail("Can't add child");
    dirent = { name, inode, link: isLink };
    if (!addChild(parent!, dirent)) fail(`Path ${path} already exist`);
    if (type === S_IFDIR && !isLink) st.dirs.set(parentPath + '/' + name, inode);
  }

  if (isLink) {
    if (type === S_IFDIR) fail("Directories can't be hardlinked");
    const target = fields[8] === '-' ? null : cString(unescape(fields[8]));
    st.fixups.push({ dirent: dirent!, target });
    return;
  }

  const size = parseU64(fields[1], 10);
  const nlink = parseU64(fields[3], 10);
  const uid = parseU64(fields[4], 10);
  // mkcomposefs only reports bad GID/RDEV fields when UID is 0; otherwise they read as 0.
  const lenient = (text: string): number | bigint => {
    try {
      return parseU64(text, 10);
    } catch (err) {
      if (isZero(uid)) throw err;
      return 0;
    }
  };
  const gid = lenient(fields[5]);
  const rdev = lenient(fields[6]);

  // MTIME is SEC.NSEC
  const mt = fields[7];
  const dot = mt.indexOf('.');
  const sec = parseU64(dot === -1 ? mt : mt.slice(0, dot), 10);
  const nsec = parseU64(dot === -1 ? '' : mt.slice(dot + 1), 10);

  let payload = fields[8] === '-' ? null : cString(unescape(fields[8]));
  if (payload === fields[8]) payload = own(st, line, payload, at[8]);
  const content = fields[9] === '-' ? null : unescape(fields[9]);
  if (content !== null && content.length !== Number(size)) {
    fail(`Invalid content size ${content.length}, must match size ${size}`);
  }
  let digest: string | null = null;
  if (fields[10] !== '-') {
    const hex = unescape(fields[10]);
    if (hex.length > 0 || st.strict) {
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) fail(`Invalid digest ${hex}: must be ${DIGEST_SIZE * 2} hex characters`);
      digest = hex.toLowerCase();
      if (digest === fields[10]) digest = own(st, line, digest, at[10]);
    }
  }

  inode.nlink = u32(nlink);
  inode.uid = u32(uid);
  inode.gid = u32(gid);
  if (type === S_IFCHR || type === S_IFBLK) inode.rdev = u32(rdev);
  else if (st.strict && !isZero(rdev)) fail('Non-zero devnum on non-device');
  if (typeof sec === 'number') {
    // mtimes repeat from line to line: reuse the last BigInt
    if (sec !== st.lastSec) {
      st.lastSec = sec;
      st.lastSecBig = BigInt(sec);
    }
    inode.mtimeSec = st.lastSecBig;
  } else {
    inode.mtimeSec = BigInt.asIntN(64, sec);
  }
  inode.mtimeNsec = u32(nsec);

  if (type === S_IFLNK) {
    if (!payload) fail('Invalid symlink');
    if (payload!.length >= PATH_MAX) fail('Invalid symlink');
    inode.payload = payload;
    inode.size = payload!.length;
    if (st.strict) {
      if (Number(size) !== payload!.length) {
        fail(`Invalid symlink size ${payload!.length}, must match size ${size}`);
      }
      if (content) fail('Symlink cannot have content');
    }
  } else {
    if (type === S_IFREG && content === null && typeof size === 'bigint' && size > BigInt(MAX_FILE_SIZE)) {
      fail(`File too large: ${size} bytes`);
    }
    inode.size = Number(size);
    if (payload !== null && payload.length >= PATH_MAX) fail('Invalid payload');
    inode.payload = payload;
    if (content !== null) {
      if (content.length > MAX_INLINE_CONTENT) {
        fail(`Inline content size ${content.length} exceeds maximum ${MAX_INLINE_CONTENT}`);
      }
      inode.content = content.length > 0 ? content : null;
      inode.size = content.length;
    }
  }
  inode.digest = digest;

  if (line.length - restStart > U16_MAX) fail('Too many xattrs');
  let budget = 0;
  let q = restStart;
  while (q < line.length) {
    let sp = line.indexOf(' ', q);
    if (sp === -1) sp = line.length;
    const eq = line.indexOf('=', q);
    if (eq === -1 || eq >= sp) fail('Missing = in xattr');
    let key = cString(unescape(line.slice(q, eq)));
    // one string per distinct key, so later lookups and comparisons are cheap
    const known = st.keys.get(key);
    if (known === undefined) st.keys.set(key, key);
    else key = known;
    let value = unescape(line.slice(eq + 1, sp));
    if (value.length === sp - eq - 1) value = own(st, line, value, eq + 1);
    try {
      budget = setXattr(inode.xattrs, key, value, budget);
    } catch (e) {
      if (e instanceof RangeError) fail(`Can't set xattr ${JSON.stringify(key)}: ${e.message}`);
      throw e;
    }
    q = sp + 1;
  }
}

function resolveLinks(st: ParseState): void {
  const root = st.root!;
  // mkcomposefs resolves the links last-first.
  for (let i = st.fixups.length - 1; i >= 0; i--) {
    const f = st.fixups[i];
    if (f.target === null) fail('No target path for the hardlink');
    const target = lookupLinkTarget(root, f.target!);
    if (!target) fail(`No target at ${f.target} for hardlink`);
    if (target === f.dirent) fail(`Self-referential hardlink ${f.target}`);
    st.linkOf.set(f.dirent, target!);
  }
  for (const f of st.fixups) {
    let cur: Dirent | Inode = f.dirent;
    const seen = new Set<Dirent | Inode>();
    while ('link' in cur && cur.link) {
      if (seen.has(cur)) fail(`Hardlink loop at ${f.target}`);
      seen.add(cur);
      cur = st.linkOf.get(cur)!;
    }
    const inode = 'inode' in cur ? cur.inode : cur;
    if ((inode.mode & S_IFMT) === S_IFDIR) fail(`Hardlink ${f.target} points to a directory`);
    f.dirent.inode = inode;
  }
}

/** The entry a hardlink names: any entry, including another hardlink. */
function lookupLinkTarget(root: Inode, path: string): Dirent | Inode | null {
  const norm = normalize(path);
  if (norm === '') return root;
  const slash = norm.lastIndexOf('/');
  const parent = lookupPath(root, norm.slice(0, slash));
  if (!parent) return null;
  const dir = 'inode' in parent ? parent.inode : parent;
  if (!dir.children) return null;
  const i = findChild(dir.children, norm.slice(slash + 1));
  return i < 0 ? null : dir.children[i];
}

/** Parse composefs-dump text into a tree. Throws CfsError naming the input and line. */
export function parseDump(text: Buffer, opts: ParseOptions = {}): Inode {
  const st: ParseState = { root: null, dirs: new Map(), fixups: [], linkOf: new Map(), strict: !!opts.strict, fields: new Array<string>(FIELD_COUNT), fieldAt: new Array<number>(FIELD_COUNT).fill(0), text, lineStart: 0, keys: new Map(), lastSec: -1, lastSecBig: 0n };
  let lineNo = 0;
  let pos = 0;
  const len = text.length;
  try {
    while (pos < len) {
      lineNo++;
      let nl = text.indexOf(0x0a, pos);
      if (nl === -1) {
        if (st.strict) throw new LineError('Missing trailing newline');
        nl = len;
      }
      st.lineStart = pos;
      parseLine(st, readLatin1(text, pos, nl));
      pos = nl + 1;
    }
    lineNo = 0;
    if (!st.root) throw new LineError('No root directory ("/" line) in input');
    resolveLinks(st);
  } catch (e) {
    if (e instanceof LineError) {
      throw new CfsError(ErrorCode.DumpSyntax, e.message, { input: opts.input, line: lineNo || undefined });
    }
    throw e;
  }
  return st.root!;
}

// ---------------------------------------------------------------------------------------------
// Printer

const enum Esc {
  Standard = 0,
  NoEscapeSpace = 1,
  Equal = 2,
}

function buildTable(mode: Esc): string[] {
  const t: string[] = [];
  for (let c = 0; c < 256; c++) {
    let s: string;
    if (c === 0x5c) s = '\\\\';
    else if (c === 0x0a) s = '\\n';
    else if (c === 0x0d) s = '\\r';
    else if (c === 0x09) s = '\\t';
    else if (c === 0x3d && mode === Esc.Equal) s = '\\x3d';
    else if (c >= 0x21 && c <= 0x7e) s = String.fromCharCode(c);
    else if (c === 0x20 && mode === Esc.NoEscapeSpace) s = ' ';
    else s = '\\x' + c.toString(16).padStart(2, '0');
    t.push(s);
  }
  return t;
}
const TABLES = [buildTable(Esc.Standard), buildTable(Esc.NoEscapeSpace), buildTable(Esc.Equal)];
const PLAIN = [/^[\x21-\x5b\x5d-\x7e]*$/, /^[\x20-\x5b\x5d-\x7e]*$/, /^[\x21-\x3c\x3e-\x5b\x5d-\x7e]*$/];

function escapeStr(s: string, mode: Esc): string {
  if (PLAIN[mode].test(s)) return s;
  const t = TABLES[mode];
  let out = '';
  for (let i = 0; i < s.length; i++) out += t[s.charCodeAt(i) & 0xff];
  return out;
}
export const escapeDumpField = (s: string): string => escapeStr(s, Esc.Standard);
export const escapeLsPath = (s: string): string => escapeStr(s, Esc.NoEscapeSpace);

const escapeOptional = (s: string | null): string => (s === null ? '-' : s === '-' ? '\\x2d' : escapeStr(s, Esc.Standard));

/** Map each hardlinked inode to the path of its owning (non-link) name. */
export function ownerPaths(root: Inode): Map<Inode, string> {
  const owners = new Map<Inode, string>();
  const linked = new Set<Inode>();
  const dirs: Inode[] = [root];
  for (let i = 0; i < dirs.length; i++) {
    for (const d of dirs[i].children!) {
      if (d.link) linked.add(d.inode);
      else if (d.inode.children) dirs.push(d.inode);
    }
  }
  if (linked.size === 0) return owners;
  const walk = (dir: Inode, path: string): void => {
    for (const d of dir.children!) {
      if (d.link) continue;
      if (linked.has(d.inode)) owners.set(d.inode, `${path}/${d.name}`);
      if (d.inode.children) walk(d.inode, `${path}/${d.name}`);
    }
  };
  walk(root, '');
  return owners;
}

// Text of modes and of the last mtime: most lines repeat a few of each.
const MODE_TEXT: (string | undefined)[] = [];
let lastSec = 0n;
let lastSecText = '0';

/** One dump line; `linkPath` set = a hardlink name (`@MODE`, the owner's path as payload). */
export function dumpLine(path: string, inode: Inode, linkPath: string | null): string {
  let line = escapeStr(path, Esc.Standard);
  const mode = inode.mode <= 0xffff ? (MODE_TEXT[inode.mode] ??= inode.mode.toString(8)) : inode.mode.toString(8);
  if (inode.mtimeSec !== lastSec) {
    lastSec = inode.mtimeSec;
    lastSecText = String(lastSec);
  }
  line += ` ${inode.size} ${linkPath !== null ? '@' : ''}${mode} ${inode.nlink} ${inode.uid} ${inode.gid} ${inode.rdev} ${lastSecText}.${inode.mtimeNsec} `;
  line += escapeOptional(linkPath ?? inode.payload);
  line += ' ';
  line += inode.content !== null ? escapeOptional(inode.content) : '-';
  line += inode.digest !== null ? ' ' + inode.digest : ' -';
  for (const x of inode.xattrs) {
    line += ' ' + escapeStr(x.key, Esc.Equal) + '=' + escapeStr(x.value, Esc.Equal);
  }
  return line + '\n';
}

/**
 * Print a tree as composefs-dump text, depth first, children in byte order; a name that is a
 * link prints `@MODE` and the owner's path as PAYLOAD. Calls `out` with chunks of text.
 */
export function printDump(root: Inode, out: (chunk: string) => void): void {
  const owners = ownerPaths(root);
  let pending = dumpLine('/', root, null);
  const walk = (dir: Inode, path: string): void => {
    for (const d of dir.children!) {
      const p = `${path}/${d.name}`;
      pending += dumpLine(p, d.inode, d.link ? owners.get(d.inode) ?? null : null);
      if (pending.length > 65536) {
        out(pending);
        pending = '';
      }
      if (!d.link && d.inode.children) walk(d.inode, p);
    }
  };
  walk(root, '');
  if (pending) out(pending);
}

export function dumpToString(root: Inode): string {
  const parts: string[] = [];
  printDump(root, (s) => parts.push(s));
  return parts.join('');
}
