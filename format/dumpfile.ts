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
  /** Every line through the general parser, none through the fast one (tests compare the two). */
  general?: boolean;
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
  /**
   * fastLine: the keys it has met and the last value of each, field boundaries, the last line's
   * parent directory (its path at [start, end) of `text`), and the next backslash and NUL.
   */
  keyList: string[];
  keyValue: string[];
  nextEscape: number;
  nextNul: number;
  fastAt: Int32Array;
  lastParent: Inode | null;
  lastParentStart: number;
  lastParentEnd: number;
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

const SP = 0x20;
const BACKSLASH = 0x5c;

/** Offset of the next byte `c` from `from` on; the text's length if none. */
function nextOf(b: Buffer, c: number, from: number): number {
  const i = b.indexOf(c, from);
  return i === -1 ? b.length : i;
}

/** A run of decimal (or octal) digits in bytes [s, e) as a number; -1 unless 1..15 digits. */
function digitsAt(b: Buffer, s: number, e: number, base: 8 | 10): number {
  if (e <= s || e - s > 15) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = b[i] - 0x30;
    if (d < 0 || d >= base) return -1;
    v = v * base + d;
  }
  return v;
}

/** Whether the byte string `str` is b[s, e). */
function sameBytes(str: string, b: Buffer, s: number, e: number): boolean {
  if (str.length !== e - s) return false;
  for (let i = 0; i < str.length; i++) if (str.charCodeAt(i) !== b[s + i]) return false;
  return true;
}

/** Index in keyList of the key whose bytes are b[s, e), or -1 (keys are few). */
function knownKey(st: ParseState, b: Buffer, s: number, e: number): number {
  const keys = st.keyList;
  for (let k = 0; k < keys.length; k++) if (sameBytes(keys[k], b, s, e)) return k;
  return -1;
}

/**
 * The common line, parsed from its bytes: a path below the root whose parent is known, plain
 * fields (no escapes, no hardlink, small numbers, valid file type, a digest of 64 hex digits)
 * and xattrs. Returns false, having changed nothing, for anything else: parseLine then takes
 * the line (and reports its errors), so both give the same tree.
 */
function fastLine(st: ParseState, b: Buffer, start: number, end: number): boolean {
  const at = st.fastAt;
  // no escapes or NULs (the next of each in the text is noted once, not looked for per byte)
  if (st.nextEscape < start) st.nextEscape = nextOf(b, BACKSLASH, start);
  if (st.nextNul < start) st.nextNul = nextOf(b, 0, start);
  if (st.nextEscape < end || st.nextNul < end) return false;
  // field boundaries: at[2k] = start, at[2k + 1] = end of field k
  let n = 0;
  let p = start;
  for (let i = start; i < end; i++) {
    if (b[i] !== SP) continue;
    if (i === p || n === 64) return false;
    at[n++] = p;
    at[n++] = i;
    p = i + 1;
  }
  if (p === end || n === 64) return false;
  at[n++] = p;
  at[n++] = end;
  const fields = n >> 1;
  if (fields < FIELD_COUNT || !st.root || (fields > FIELD_COUNT && end - at[2 * FIELD_COUNT] > U16_MAX)) return false;

  // path: "/…/name", no empty, `.` or `..` name, parent as the last line's or a known directory
  const ps = at[0];
  const pe = at[1];
  if (b[ps] !== 0x2f || b[pe - 1] === 0x2f || pe - ps < 2) return false;
  let slash = pe - 1;
  while (b[slash] !== 0x2f) slash--;
  for (let i = ps; i < pe - 1; i++) if (b[i] === 0x2f && b[i + 1] === 0x2f) return false;
  const nameLen = pe - slash - 1;
  if (nameLen > MAX_NAME_LEN || (b[slash + 1] === 0x2e && (nameLen === 1 || (nameLen === 2 && b[slash + 2] === 0x2e)))) return false;
  let parent: Inode | undefined;
  const lp = st.lastParent;
  if (lp && slash - ps === st.lastParentEnd - st.lastParentStart) {
    parent = lp;
    for (let i = 0, q = st.lastParentStart; i < slash - ps; i++) if (b[ps + i] !== b[q + i]) parent = undefined;
  }
  if (!parent) {
    parent = st.dirs.get(readLatin1(b, ps, slash));
    if (!parent) return false;
  }

  const mode = digitsAt(b, at[4], at[5], 8);
  if (mode < 0 || mode > 0xffffffff || !isValidModeType(mode)) return false;
  const type = mode & S_IFMT;
  const size = digitsAt(b, at[2], at[3], 10);
  const nlink = digitsAt(b, at[6], at[7], 10);
  const uid = digitsAt(b, at[8], at[9], 10);
  const gid = digitsAt(b, at[10], at[11], 10);
  const rdev = digitsAt(b, at[12], at[13], 10);
  if (size < 0 || nlink < 0 || uid < 0 || gid < 0 || rdev < 0) return false;
  if (rdev !== 0 && type !== S_IFCHR && type !== S_IFBLK && st.strict) return false;
  let dot = at[14];
  while (dot < at[15] && b[dot] !== 0x2e) dot++;
  const sec = digitsAt(b, at[14], dot, 10);
  const nsec = digitsAt(b, dot + 1, at[15], 10);
  if (sec < 0 || nsec < 0) return false;

  const dash = (k: number): boolean => at[2 * k + 1] - at[2 * k] === 1 && b[at[2 * k]] === 0x2d;
  const payloadDash = dash(8);
  const contentDash = dash(9);
  if (!contentDash && (at[19] - at[18] !== size || size > MAX_INLINE_CONTENT || type === S_IFLNK)) return false;
  if (at[17] - at[16] >= PATH_MAX) return false;
  if (type === S_IFLNK && (payloadDash || (st.strict && at[17] - at[16] !== size))) return false;
  let digest: string | null = null;
  if (!dash(10)) {
    if (at[21] - at[20] !== 64) return false;
    for (let i = at[20]; i < at[21]; i++) {
      const c = b[i];
      if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false; // upper case: parseLine
    }
    digest = readLatin1(b, at[20], at[21]);
  }

  const inode = newInode(mode);
  inode.nlink = nlink >>> 0;
  inode.uid = uid >>> 0;
  inode.gid = gid >>> 0;
  if (type === S_IFCHR || type === S_IFBLK) inode.rdev = rdev >>> 0;
  if (sec !== st.lastSec) {
    st.lastSec = sec;
    st.lastSecBig = BigInt(sec);
  }
  inode.mtimeSec = st.lastSecBig;
  inode.mtimeNsec = nsec >>> 0;
  const payload = payloadDash ? null : readLatin1(b, at[16], at[17]);
  inode.payload = payload;
  inode.size = type === S_IFLNK ? payload!.length : size;
  if (!contentDash) inode.content = readLatin1(b, at[18], at[19]);
  inode.digest = digest;
  let budget = 0;
  for (let k = FIELD_COUNT; k < fields; k++) {
    const s = at[2 * k];
    const e = at[2 * k + 1];
    let eq = s;
    while (eq < e && b[eq] !== 0x3d) eq++;
    if (eq === e || eq === s) return false;
    let ki = knownKey(st, b, s, eq);
    if (ki < 0) {
      if (st.keyList.length >= 32) return false;
      let key = readLatin1(b, s, eq);
      // parseLine interns through `keys`: the two must hand out the same strings
      const known = st.keys.get(key);
      if (known === undefined) st.keys.set(key, key);
      else key = known;
      ki = st.keyList.push(key) - 1;
      st.keyValue.push('');
    }
    // a value often repeats the last one of its key (one SELinux label on many files)
    let value = st.keyValue[ki];
    if (!sameBytes(value, b, eq + 1, e)) st.keyValue[ki] = value = readLatin1(b, eq + 1, e);
    try {
      budget = setXattr(inode.xattrs, st.keyList[ki], value, budget);
    } catch {
      return false;
    }
  }

  const name = readLatin1(b, slash + 1, pe);
  if (!addChild(parent, { name, inode, link: false })) return false;
  if (type === S_IFDIR) st.dirs.set(readLatin1(b, ps, pe), inode);
  st.lastParent = parent;
  st.lastParentStart = ps;
  st.lastParentEnd = slash;
  return true;
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
  const st: ParseState = { root: null, dirs: new Map(), fixups: [], linkOf: new Map(), strict: !!opts.strict, fields: new Array<string>(FIELD_COUNT), fieldAt: new Array<number>(FIELD_COUNT).fill(0), text, lineStart: 0, keys: new Map(), keyList: [], keyValue: [], nextEscape: -1, nextNul: -1, fastAt: new Int32Array(64), lastParent: null, lastParentStart: 0, lastParentEnd: 0, lastSec: -1, lastSecBig: 0n };
  const general = opts.general === true;
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
      if (general || !fastLine(st, text, pos, nl)) parseLine(st, readLatin1(text, pos, nl));
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
