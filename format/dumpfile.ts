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

export interface ParseOptions {
  /** mkcomposefs strict mode (CFS_PARSE_STRICT): exact symlink sizes, rdev 0 on non-devices, final newline. */
  strict?: boolean;
  /** Name of the input, for error messages. */
  input?: string;
}

const SPACE = 0x20;
const NL = 0x0a;
const BACKSLASH = 0x5c;
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

/** Undo the dump escapes of buf[start, end). */
function unescape(buf: Buffer, start: number, end: number): Buffer {
  if (buf.indexOf(BACKSLASH, start) === -1 || buf.indexOf(BACKSLASH, start) >= end) return buf.subarray(start, end);
  const out = Buffer.allocUnsafe(end - start);
  let o = 0;
  let i = start;
  while (i < end) {
    let c = buf[i++];
    if (c === BACKSLASH) {
      if (i >= end) fail('No character after escape');
      c = buf[i++];
      switch (c) {
        case BACKSLASH:
          out[o++] = BACKSLASH;
          break;
        case 0x6e: // n
          out[o++] = 0x0a;
          break;
        case 0x72: // r
          out[o++] = 0x0d;
          break;
        case 0x74: // t
          out[o++] = 0x09;
          break;
        case 0x78: {
          // x
          if (i + 2 > end) fail('No hex characters after hex escape');
          const h = hexValue(buf[i]);
          const l = hexValue(buf[i + 1]);
          if (h < 0 || l < 0) fail('Invalid hex characters after hex escape');
          out[o++] = (h << 4) | l;
          i += 2;
          break;
        }
        default:
          fail(`Unsupported escape type ${String.fromCharCode(c)}`);
      }
    } else {
      out[o++] = c;
    }
  }
  return out.subarray(0, o);
}

/** C string semantics: the value ends at the first NUL. */
function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return (z === -1 ? b : b.subarray(0, z)).toString('latin1');
}

const isDash = (buf: Buffer, s: number, e: number): boolean => e - s === 1 && buf[s] === 0x2d;

/** strtoull: leading space, optional sign, digits, nothing after; saturates on overflow. */
function parseU64(buf: Buffer, s: number, e: number, base: 8 | 10): bigint {
  const text = buf.toString('latin1', s, e);
  let i = 0;
  while (i < text.length && (text[i] === ' ' || (text.charCodeAt(i) >= 9 && text.charCodeAt(i) <= 13))) i++;
  let neg = false;
  if (text[i] === '+' || text[i] === '-') {
    neg = text[i] === '-';
    i++;
  }
  const digits = text.slice(i);
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(digits)) fail(`Invalid integer ${text}`);
  let v = base === 8 ? BigInt('0o' + digits) : BigInt(digits);
  if (v > U64_MAX) return U64_MAX;
  if (neg) v = (-v) & U64_MAX;
  return v;
}
const u32 = (v: bigint): number => Number(v & 0xffffffffn);

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
export function setXattr(xattrs: Xattr[], key: string, value: Buffer, budget: number, limit = MAX_INODE_XATTR_SIZE): number {
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
  fixups: LinkFixup[];
  linkOf: Map<Dirent, Dirent | Inode>;
  strict: boolean;
}

const FIELD_COUNT = 11;

function lookupPath(root: Inode, path: string): Dirent | Inode | null {
  let node: Inode = root;
  let found: Dirent | Inode = root;
  for (const part of path.split('/')) {
    if (part === '') continue;
    if (!node.children) return null;
    const i = findChild(node.children, part);
    if (i < 0) return null;
    found = node.children[i];
    node = found.inode;
  }
  return found;
}

function parseLine(st: ParseState, buf: Buffer, start: number, end: number): void {
  const nul = buf.indexOf(0, start);
  if (nul !== -1 && nul < end) fail(`Invalid embedded NUL character at position ${nul - start}`);

  const fs = new Array<number>(FIELD_COUNT);
  const fe = new Array<number>(FIELD_COUNT);
  let p = start;
  for (let i = 0; i < FIELD_COUNT; i++) {
    let sp = buf.indexOf(SPACE, p);
    if (sp === -1 || sp >= end) sp = end;
    fs[i] = p;
    fe[i] = sp;
    p = sp < end ? sp + 1 : end;
  }

  const path = cString(unescape(buf, fs[0], fe[0]));
  if (path.length === 0) fail('Invalid empty path');

  let modeStart = fs[2];
  const isLink = fe[2] > modeStart && buf[modeStart] === 0x40; // '@'
  if (isLink) modeStart++;
  const mode = u32(parseU64(buf, modeStart, fe[2], 8));
  if (!isValidModeType(mode)) fail(`Invalid mode ${mode.toString(8)}`);
  const type = mode & S_IFMT;

  // Add the node to the tree.
  const inode = newInode(mode);
  let dirent: Dirent | null = null;
  if (path === '/') {
    if (type !== S_IFDIR) fail('Root must be a directory');
    if (st.root) fail("Can't have multiple roots");
    st.root = inode;
  } else {
    if (!st.root) fail('Root node not present');
    const slash = path.lastIndexOf('/');
    const name = path.slice(slash + 1);
    const parent = slash <= 0 ? st.root : lookupPath(st.root!, path.slice(0, slash));
    if (!parent) fail(`Parent directory missing for ${path}`);
    const parentInode = 'inode' in parent! ? parent.inode : parent!;
    if ((parentInode.mode & S_IFMT) !== S_IFDIR || ('link' in parent! && parent.link)) {
      fail(`Parent must be a directory for ${path}`);
    }
    if (name === '.' || name === '..') fail(`Invalid . or .. in path: ${path}`);
    if (name.length === 0 || name.length > MAX_NAME_LEN) fail("Can't add child");
    dirent = { name, inode, link: isLink };
    if (!addChild(parentInode, dirent)) fail(`Path ${path} already exist`);
  }

  if (isLink) {
    if (type === S_IFDIR) fail("Directories can't be hardlinked");
    const target = isDash(buf, fs[8], fe[8]) ? null : cString(unescape(buf, fs[8], fe[8]));
    st.fixups.push({ dirent: dirent!, target });
    return;
  }

  const size = parseU64(buf, fs[1], fe[1], 10);
  const nlink = parseU64(buf, fs[3], fe[3], 10);
  const uid = parseU64(buf, fs[4], fe[4], 10);
  // mkcomposefs only reports bad GID/RDEV fields when UID is 0; otherwise they read as 0.
  const lenient = (s: number, e: number): bigint => {
    try {
      return parseU64(buf, s, e, 10);
    } catch (err) {
      if (uid === 0n) throw err;
      return 0n;
    }
  };
  const gid = lenient(fs[5], fe[5]);
  const rdev = lenient(fs[6], fe[6]);

  // MTIME is SEC.NSEC
  let dot = buf.indexOf(0x2e, fs[7]);
  if (dot === -1 || dot >= fe[7]) dot = fe[7];
  const sec = parseU64(buf, fs[7], dot, 10);
  const nsec = parseU64(buf, dot < fe[7] ? dot + 1 : fe[7], fe[7], 10);

  const payload = isDash(buf, fs[8], fe[8]) ? null : cString(unescape(buf, fs[8], fe[8]));
  const content = isDash(buf, fs[9], fe[9]) ? null : unescape(buf, fs[9], fe[9]);
  if (content && BigInt(content.length) !== size) {
    fail(`Invalid content size ${content.length}, must match size ${size}`);
  }
  let digest: Buffer | null = null;
  if (!isDash(buf, fs[10], fe[10])) {
    const hex = unescape(buf, fs[10], fe[10]).toString('latin1');
    if (hex.length > 0 || st.strict) {
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) fail(`Invalid digest ${hex}: must be ${DIGEST_SIZE * 2} hex characters`);
      digest = Buffer.from(hex, 'hex');
    }
  }

  inode.nlink = u32(nlink);
  inode.uid = u32(uid);
  inode.gid = u32(gid);
  if (type === S_IFCHR || type === S_IFBLK) inode.rdev = u32(rdev);
  else if (st.strict && rdev !== 0n) fail('Non-zero devnum on non-device');
  inode.mtimeSec = BigInt.asIntN(64, sec);
  inode.mtimeNsec = u32(nsec);

  if (type === S_IFLNK) {
    if (!payload) fail('Invalid symlink');
    if (payload!.length >= PATH_MAX) fail('Invalid symlink');
    inode.payload = payload;
    inode.size = payload!.length;
    if (st.strict) {
      if (size !== BigInt(payload!.length)) {
        fail(`Invalid symlink size ${payload!.length}, must match size ${size}`);
      }
      if (content && content.length > 0) fail('Symlink cannot have content');
    }
  } else {
    if (type === S_IFREG && !content && size > BigInt(MAX_FILE_SIZE)) fail(`File too large: ${size} bytes`);
    inode.size = Number(size);
    if (payload !== null && payload.length >= PATH_MAX) fail('Invalid payload');
    inode.payload = payload;
    if (content) {
      if (content.length > MAX_INLINE_CONTENT) {
        fail(`Inline content size ${content.length} exceeds maximum ${MAX_INLINE_CONTENT}`);
      }
      inode.content = content.length > 0 ? Buffer.from(content) : null;
      inode.size = content.length;
    }
  }
  inode.digest = digest;

  const restStart = fs[10] === end ? end : Math.min(fe[10] + 1, end);
  if (end - restStart > U16_MAX) fail('Too many xattrs');
  let budget = 0;
  let q = restStart;
  while (q < end) {
    let sp = buf.indexOf(SPACE, q);
    if (sp === -1 || sp >= end) sp = end;
    let eq = buf.indexOf(0x3d, q);
    if (eq === -1 || eq >= sp) fail('Missing = in xattr');
    const key = cString(unescape(buf, q, eq));
    const value = Buffer.from(unescape(buf, eq + 1, sp));
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
    const target = lookupPath(root, f.target!);
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

/** Parse composefs-dump text into a tree. Throws CfsError naming the input and line. */
export function parseDump(text: Buffer, opts: ParseOptions = {}): Inode {
  const st: ParseState = { root: null, fixups: [], linkOf: new Map(), strict: !!opts.strict };
  let lineNo = 0;
  let pos = 0;
  const len = text.length;
  try {
    while (pos < len) {
      lineNo++;
      let nl = text.indexOf(NL, pos);
      if (nl === -1) {
        if (st.strict) throw new LineError('Missing trailing newline');
        nl = len;
      }
      parseLine(st, text, pos, nl);
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
  const walk = (dir: Inode, path: string): void => {
    for (const d of dir.children!) {
      const p = `${path}/${d.name}`;
      if (!d.link) {
        owners.set(d.inode, p);
        if (d.inode.children) walk(d.inode, p);
      }
    }
  };
  walk(root, '');
  return owners;
}

function dumpLine(path: string, inode: Inode, linkPath: string | null): string {
  let line = escapeStr(path, Esc.Standard);
  line += ` ${inode.size} ${linkPath !== null ? '@' : ''}${inode.mode.toString(8)} ${inode.nlink} ${inode.uid} ${inode.gid} ${inode.rdev} ${inode.mtimeSec}.${inode.mtimeNsec} `;
  line += escapeOptional(linkPath ?? inode.payload);
  line += ' ';
  line += inode.content ? escapeOptional(inode.content.toString('latin1')) : '-';
  line += inode.digest ? ' ' + inode.digest.toString('hex') : ' -';
  for (const x of inode.xattrs) {
    line += ' ' + escapeStr(x.key, Esc.Equal) + '=' + escapeStr(x.value.toString('latin1'), Esc.Equal);
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
