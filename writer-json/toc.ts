/**
 * TOC JSON → composefs tree, following ../shared/notes/toc.md ("Our conversion convention").
 *
 * Everything is iterative (no recursion over the tree or the JSON), so depth is bounded only by
 * the path limit. Children are collected unsorted and sorted once at the end, so a directory with
 * 100k entries in any order costs one sort, not 100k insertions.
 */
import {
  CfsError, ErrorCode, PATH_MAX, MAX_NAME_LEN, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG,
  makedev32, newInode, type Dirent, type Inode, type Xattr,
} from '../format/index.js';
import { setXattr } from '../format/dumpfile.js';
import { TocEntrySchema, TocSchema, describeZodError, type TocEntry } from './schema.js';

/** JSON nested deeper than this is refused before parsing (a TOC needs 4 levels). */
export const MAX_JSON_DEPTH = 64;
/** Root-level files eStargz writers add to mark the prefetch set; not part of the tree. */
export const LANDMARKS: ReadonlySet<string> = new Set(['.prefetch.landmark', '.no.prefetch.landmark']);
/** Go's zero time.Time, which writers that don't omit zero values emit for "no time". */
const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

/** One chunk of a regular file's content in the blob. */
export interface ContentChunk {
  /** Blob offset of the compressed member. */
  offset: number | undefined;
  /** Uncompressed offset inside the stream that starts at `offset`. */
  innerOffset: number;
  /** Offset of this chunk in the file. */
  chunkOffset: number;
  /** Length of this chunk (0 = to the end of the file). */
  chunkSize: number;
  /** zstd:chunked hole: all zeros, nothing in the blob. */
  zeros: boolean;
}

/** A regular file whose content lives in the blob (not given by x-payload). */
export interface ContentFile {
  index: number;
  /** Normalized path (bytes as latin1). */
  path: string;
  inode: Inode;
  size: number;
  /** Hex sha256 of the whole content from the TOC. */
  sha256: string;
  chunks: ContentChunk[];
}

export interface TocTree {
  root: Inode;
  /** Entries in the TOC (including chunk entries and skipped landmarks). */
  entries: number;
  /** Non-empty regular files without x-payload, one per inode, in TOC order. */
  files: ContentFile[];
  /** Every blob offset a reg or chunk entry names (member boundaries), including skipped ones. */
  offsets: Set<number>;
}

export interface TocOptions {
  /** Name of the input, for error messages. */
  input?: string;
}

/** Decode TOC JSON bytes: strict UTF-8, bounded nesting, then JSON.parse. */
export function parseTocJson(bytes: Uint8Array, input?: string): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new CfsError(ErrorCode.InvalidTree, 'TOC is not valid UTF-8 text', { input });
  }
  const depth = jsonDepth(text);
  if (depth > MAX_JSON_DEPTH) throw new CfsError(ErrorCode.TooLarge, `TOC JSON is nested deeper than ${MAX_JSON_DEPTH} levels`, { input });
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CfsError(ErrorCode.InvalidTree, `TOC is not valid JSON: ${(e as Error).message}`, { input });
  }
}

/** Maximum bracket nesting outside strings; stops counting once past the limit. */
function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped char
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) {
        max = depth;
        if (max > MAX_JSON_DEPTH) return max;
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Bytes of a JSON string as a latin1 string (UTF-8 encoded); refuses lone surrogates. */
function bytesOf(s: string): string | null {
  // Fast path: pure ASCII needs no re-encoding.
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  if (LONE_SURROGATE.test(s)) return null;
  return Buffer.from(s, 'utf8').toString('latin1');
}

/**
 * Normalize a TOC path like the estargz reader (path.Clean("/"+name) minus the leading "/"),
 * but refuse what Clean would silently rewrite: absolute names, `..`, NUL, over-long names.
 * Returns the components (empty for the root).
 */
export function normalizePath(raw: string, what: string, fail: (msg: string) => never): string[] {
  const b = bytesOf(raw);
  if (b === null) fail(`${what} is not valid Unicode (lone surrogate)`);
  const s = b!;
  if (s.includes('\0')) fail(`${what} contains a NUL byte`);
  if (s.startsWith('/')) fail(`${what} is absolute`);
  if (s.length >= PATH_MAX) fail(`${what} is ${s.length} bytes long (limit ${PATH_MAX - 1})`);
  const parts: string[] = [];
  for (const p of s.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') fail(`${what} has a ".." component`);
    if (p.length > MAX_NAME_LEN) fail(`${what} has a component of ${p.length} bytes (limit ${MAX_NAME_LEN})`);
    parts.push(p);
  }
  return parts;
}

/** RFC 3339 → whole seconds since the epoch (fraction truncated, offset honoured). */
export function parseModtime(s: string): bigint | null {
  if (s === GO_ZERO_TIME) return 0n;
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i]));
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 60) return null;
  let t = daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
  if (!m[7]) {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) return null;
    const off = oh * 3600 + om * 60;
    t -= m[8] === '+' ? off : -off;
  }
  return BigInt(t);
}

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return [31, 0, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** glibc makedev, refusing numbers that don't fit the image's 32-bit rdev. */
function makedev(major: number, minor: number, fail: (msg: string) => never): number {
  if (major > 0xfff) fail(`devMajor ${major} does not fit the image's 32-bit device number (max 4095)`);
  if (minor > 0xfffff) fail(`devMinor ${minor} does not fit the image's 32-bit device number (max 1048575)`);
  return makedev32(major, minor);
}

const TYPE_BITS: Record<string, number> = { dir: S_IFDIR, reg: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO };

/** Per path: the inode and the entry that made it explicit (-1 = created as an implicit parent). */
interface Node {
  inode: Inode;
  entry: number;
  /** The entry that created it (itself, or the child an implicit directory was made for). */
  createdBy: number;
}

/** Validate a parsed TOC document and build the tree. */
export function buildTree(doc: unknown, opts: TocOptions = {}): TocTree {
  const input = opts.input;
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new CfsError(ErrorCode.InvalidTree, 'TOC top level must be a JSON object', { input });
  }
  const top = TocSchema.safeParse(doc);
  if (!top.success) {
    const unsupported = top.error.issues.some((i) => i.path[0] === 'version' && i.code === 'invalid_literal');
    throw new CfsError(unsupported ? ErrorCode.Unsupported : ErrorCode.InvalidTree, `TOC: ${describeZodError(top.error)}`, { input });
  }
  const raw = top.data.entries;

  const root = newInode(S_IFDIR | 0o755);
  const nodes = new Map<string, Node>([['', { inode: root, entry: -1, createdBy: -1 }]]);
  const files: ContentFile[] = [];
  const offsets = new Set<number>();
  const hardlinked = new Set<Inode>();
  /** The last reg entry, for the chunk entries that follow it (null content = nothing to collect). */
  let lastReg: { path: string; content: ContentFile | null } | null = null;
  let lastTime = '';
  let lastSec: bigint | null = null;

  for (let i = 0; i < raw.length; i++) {
    const r = raw[i];
    const fail = (msg: string): never => {
      const rawName = typeof r === 'object' && r !== null && typeof (r as { name?: unknown }).name === 'string' ? (r as { name: string }).name : undefined;
      const where = `entry ${i}${rawName !== undefined ? ` ${quoteName(rawName)}` : ''}`;
      throw new CfsError(ErrorCode.InvalidTree, `${where}: ${msg}`, { input });
    };
    if (typeof r !== 'object' || r === null || Array.isArray(r)) fail('not a JSON object');
    const parsed = TocEntrySchema.safeParse(r);
    if (parsed.success) raw[i] = null; // the parsed copy is all that's needed from here
    if (!parsed.success) fail(describeZodError(parsed.error));
    const e = parsed.data as TocEntry;
    const parts = normalizePath(e.name, 'name', fail);
    const path = parts.join('/');
    if (e.offset !== undefined && (e.type === 'reg' || e.type === 'chunk')) offsets.add(e.offset);

    if (e.type === 'chunk') {
      if (!lastReg || lastReg.path !== path) fail('chunk entry without a preceding reg entry of the same name');
      lastReg!.content?.chunks.push(chunkOf(e));
      continue;
    }
    lastReg = null;

    if (e.type === 'reg' && parts.length === 1 && LANDMARKS.has(path)) {
      lastReg = { path, content: null }; // skipped, with any chunks of it
      continue;
    }

    if (e.type === 'hardlink') {
      if (e.linkName === undefined || e.linkName === '') fail('hardlink without linkName');
      const target = normalizePath(e.linkName!, 'hardlink target', fail).join('/');
      const t = nodes.get(target);
      if (!t) fail(`hardlink target ${JSON.stringify(e.linkName)} is not an earlier entry`);
      if ((t!.inode.mode & S_IFMT) === S_IFDIR) fail(`hardlink target ${JSON.stringify(e.linkName)} is a directory`);
      place(i, parts, path, t!.inode, true, fail);
      t!.inode.nlink++;
      hardlinked.add(t!.inode);
      continue;
    }

    const inode = newInode(TYPE_BITS[e.type] | ((e.mode ?? 0) & 0o7777));
    inode.uid = e.uid ?? 0;
    inode.gid = e.gid ?? 0;
    if (e.modtime !== undefined && e.modtime !== '') {
      // Most entries share a few times: parse each distinct string once in a row.
      const t: bigint | null = e.modtime === lastTime ? lastSec : parseModtime(e.modtime);
      lastTime = e.modtime;
      lastSec = t;
      if (t === null) fail(`modtime ${JSON.stringify(e.modtime)} is not an RFC 3339 time`);
      inode.mtimeSec = t!;
    }
    if (e.xattrs) inode.xattrs = xattrsOf(e.xattrs, fail);

    switch (e.type) {
      case 'reg': {
        const size = e.size ?? 0;
        inode.size = size;
        let content: ContentFile | null = null;
        if (size > 0) {
          const xp = e['x-payload'];
          if (xp !== undefined) {
            const p = normalizePath(xp, 'x-payload', fail);
            if (p.length === 0) fail('x-payload is empty');
            inode.payload = p.join('/');
          } else {
            if (e.digest === undefined) fail('non-empty regular file without digest');
            const hex = e.digest!.slice('sha256:'.length);
            inode.payload = `${hex.slice(0, 2)}/${hex.slice(2)}`;
            content = { index: i, path, inode, size, sha256: hex, chunks: [chunkOf(e)] };
            files.push(content);
          }
        }
        lastReg = { path, content };
        break;
      }
      case 'symlink': {
        if (e.linkName === undefined || e.linkName === '') fail('symlink without linkName');
        const target = bytesOf(e.linkName!);
        if (target === null) fail('linkName is not valid Unicode (lone surrogate)');
        if (target!.includes('\0')) fail('linkName contains a NUL byte');
        if (target!.length >= PATH_MAX) fail(`linkName is ${target!.length} bytes long (limit ${PATH_MAX - 1})`);
        inode.mode = S_IFLNK | 0o777; // symlink permissions are always 0777 on Linux
        inode.payload = target!;
        inode.size = target!.length;
        break;
      }
      case 'char':
      case 'block':
        inode.rdev = makedev(e.devMajor ?? 0, e.devMinor ?? 0, fail);
        break;
      case 'dir':
      case 'fifo':
        break;
    }
    place(i, parts, path, inode, false, fail);
  }

  sortAndOwn(root, hardlinked);
  return { root, entries: raw.length, files, offsets };

  /** Put a name in the tree, creating missing parents; an explicit dir may follow its children. */
  function place(index: number, parts: string[], path: string, inode: Inode, link: boolean, fail: (msg: string) => never): void {
    const isDir = (inode.mode & S_IFMT) === S_IFDIR;
    const existing = nodes.get(path);
    if (existing) {
      if (existing.entry >= 0) fail(`duplicate entry: same path as entry ${existing.entry}`);
      if (path === '' && !isDir) fail('the root must be a directory');
      if (!isDir) fail(`not a directory, but entry ${existing.createdBy} has it as a parent directory`);
      // Fill in the metadata of the root or of the directory created for earlier children.
      const old = existing.inode;
      old.mode = inode.mode;
      old.uid = inode.uid;
      old.gid = inode.gid;
      old.mtimeSec = inode.mtimeSec;
      old.xattrs = inode.xattrs;
      existing.entry = index;
      return;
    }
    const parent = parentDir(index, parts, path, fail);
    parent.children!.push({ name: parts[parts.length - 1], inode, link });
    nodes.set(path, { inode, entry: index, createdBy: index });
  }

  /** The parent directory of `path`, created (with its missing ancestors) as needed. */
  function parentDir(index: number, parts: string[], path: string, fail: (msg: string) => never): Inode {
    const cut = path.length - parts[parts.length - 1].length - 1;
    const parentPath = cut > 0 ? path.slice(0, cut) : '';
    const p = nodes.get(parentPath);
    if (p) return checkDir(p, parentPath, fail);
    // Walk up to the nearest existing ancestor, then create the missing ones top-down.
    const prefix = (n: number): string => parts.slice(0, n).join('/');
    let k = parts.length - 2;
    while (k > 0 && !nodes.has(prefix(k))) k--;
    let dir = checkDir(nodes.get(prefix(k))!, prefix(k), fail);
    for (let j = k + 1; j < parts.length; j++) {
      const d = newInode(S_IFDIR | 0o755);
      dir.children!.push({ name: parts[j - 1], inode: d, link: false });
      nodes.set(prefix(j), { inode: d, entry: -1, createdBy: index });
      dir = d;
    }
    return dir;
  }

  function checkDir(n: Node, p: string, fail: (msg: string) => never): Inode {
    if ((n.inode.mode & S_IFMT) !== S_IFDIR) fail(`parent ${JSON.stringify(bytesToText(p))} is not a directory (entry ${n.entry})`);
    return n.inode;
  }
}

function chunkOf(e: TocEntry): ContentChunk {
  return {
    offset: e.offset,
    innerOffset: e.innerOffset ?? 0,
    chunkOffset: e.chunkOffset ?? 0,
    chunkSize: e.chunkSize ?? 0,
    zeros: e.chunkType === 'zeros',
  };
}

function xattrsOf(x: Record<string, string>, fail: (msg: string) => never): Xattr[] {
  const out: Xattr[] = [];
  let budget = 0;
  for (const [k, v] of Object.entries(x)) {
    const key = bytesOf(k);
    if (key === null || key === '' || key.includes('\0')) fail(`xattr name ${JSON.stringify(k)} is empty or not valid`);
    if (key!.length > MAX_NAME_LEN) fail(`xattr name ${JSON.stringify(k)} is longer than ${MAX_NAME_LEN} bytes`);
    if (!BASE64.test(v)) fail(`xattr ${JSON.stringify(k)}: value is not valid base64`);
    const value = Buffer.from(v, 'base64').toString('latin1');
    try {
      budget = setXattr(out, key!, value, budget); // libcomposefs's value and per-inode limits
    } catch (e) {
      if (e instanceof RangeError) fail(`xattr ${JSON.stringify(k)}: ${e.message}`);
      throw e;
    }
  }
  out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return out;
}

/** A name for messages: JSON-quoted, long ones shortened. */
export function quoteName(name: string): string {
  return JSON.stringify(name.length > 120 ? `${name.slice(0, 60)}…${name.slice(-40)}` : name);
}

/** A byte path for messages: UTF-8 where it decodes. */
function bytesToText(p: string): string {
  return Buffer.from(p, 'latin1').toString('utf8');
}

/**
 * Sort every directory's children by name bytes and, for each hardlinked inode, make the name
 * first in depth-first order its owner (as mkcomposefs and composefs-info count them).
 */
function sortAndOwn(root: Inode, hardlinked: ReadonlySet<Inode>): void {
  const owned = new Set<Inode>();
  // Pre-order walk; each directory is sorted when it is entered.
  const lists: Dirent[][] = [root.children!.sort(byName)];
  const pos: number[] = [0];
  while (lists.length) {
    const top = lists.length - 1;
    const list = lists[top];
    if (pos[top] >= list.length) {
      lists.pop();
      pos.pop();
      continue;
    }
    const d = list[pos[top]++];
    if (d.inode.children) {
      lists.push(d.inode.children.sort(byName));
      pos.push(0);
    } else if (hardlinked.has(d.inode)) {
      d.link = owned.has(d.inode);
      owned.add(d.inode);
    }
  }
}

const byName = (a: Dirent, b: Dirent): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
