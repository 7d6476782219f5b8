/**
 * Tree → composefs image, byte for byte as mkcomposefs 1.0.8 writes it.
 * Steps: pick the format version; copy the tree and rewrite it for overlayfs (escape
 * trusted.overlay.*, metacopy/redirect, whiteouts, root opaque and the 00..ff whiteouts); number
 * inodes breadth first; choose shared xattrs; lay out every inode once (nid, padding, tails,
 * blocks); then emit into one buffer from that layout.
 *
 * The same steps also lay out a packed image (encodePacked): a plain EROFS image whose regular
 * files carry their data in blocks of their own (FLAT_PLAIN, the last partial block inline when
 * it is at most half a block, as for inline content). The tree is taken as it is (no overlay
 * rewriting, no root whiteouts); the encoder emits only the metadata and tells the caller which
 * blocks and tails to fill with which file's data, so file contents never pass through memory
 * at once.
 */
import { CfsError, ErrorCode } from './errors.js';
import { setXattr, xattrBudget } from './dumpfile.js';
import {
  BLOCK_SIZE,
  PATH_MAX,
  PACK_HEADER,
  PACK_MAGIC,
  PACK_VERSION,
  CFS_FLAG_HAS_ACL,
  CFS_HEADER,
  CFS_HEADER_VERSION,
  CFS_MAGIC,
  CFS_VERSION_MAX,
  CHUNK_ENTRY_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  DIRENT,
  DataLayout,
  DATALAYOUT_SHIFT,
  EROFS_SUPER_MAGIC,
  FEATURE_COMPAT_MTIME,
  FEATURE_COMPAT_XATTR_FILTER,
  FILE_TYPES,
  INODE_COMPACT,
  INODE_EXTENDED,
  MAX_CHUNKS,
  MAX_DEPTH,
  MAX_SHARED_XATTRS_PER_INODE,
  MAX_XATTR_NAME_LEN,
  MAX_XATTR_VALUE_LEN,
  MAX_INODE_XATTR_SIZE,
  METACOPY_HEADER,
  OVERLAY_ESCAPED_PREFIX,
  OVERLAY_PREFIX,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SLOT_SIZE,
  SUPERBLOCK,
  SUPERBLOCK_OFFSET,
  XATTR_ENTRY,
  XATTR_ESCAPED_OPAQUE,
  XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS,
  XATTR_FILTER_BITS,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER,
  XATTR_METACOPY,
  XATTR_OPAQUE,
  XATTR_PREFIXES,
  XATTR_REDIRECT,
  XATTR_USER_OPAQUE,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
  ACL_XATTRS,
  isValidModeType,
} from './layout.js';
import type { Inode, Xattr } from './tree.js';
import { xxh32 } from './xxhash.js';
import { readLatin1, writeLatin1 } from './bytes.js';

export interface EncodeOptions {
  /** Lowest format version to write (default 0). */
  minVersion?: number;
  /** Highest format version allowed (default 1); raised to minVersion if lower. */
  maxVersion?: number;
  /** Name of the input, for error messages. */
  input?: string;
  /**
   * The caller is done with the tree: it is taken apart while it is copied (directories lose
   * their entries, xattr lists move over), so the two need not fit in memory at once.
   */
  consume?: boolean;
  /** Called once the tree is copied (with `consume`, a good moment for a full GC). */
  afterCopy?: () => void;
  /** Called once the copy is rewritten for overlayfs (digests and payloads became xattrs: another). */
  afterRewrite?: () => void;
  /**
   * An external file with a digest and no payload is redirected to its object, `xx/yyyy…`
   * (the payload mkcomposefs gives it with a digest store): a big tree need not hold both.
   */
  redirectToObject?: boolean;
}

/** Options of encodeImageLate. */
export interface LateEncodeOptions extends EncodeOptions {
  /**
   * Regular files whose digest comes later: a caller's index (≥ 0, one per file), else -1. Each
   * is laid out with a placeholder digest and, as its payload, the digest's object path
   * (`xx/yyyy…`). Only for files whose content no other file can have (for instance, of a size
   * no other file has): their metacopy and redirect values must not be shared.
   */
  late: (inode: Inode) => number;
}

/** An image with late files still to fill in. */
export interface LateImage {
  /** Write the digest of late file `index`, and its object path as its redirect, into the image. */
  fill(index: number, digest: string): void;
  /** Late files not filled in yet. */
  readonly unfilled: number;
  /** The image, once every late file is filled in. */
  image(): Buffer;
}

/** Options of encodePacked. */
export interface PackOptions {
  /** Name of the input, for error messages. */
  input?: string;
  /**
   * Regular files with the same key (and size) share their data blocks; null = blocks of its
   * own. Hardlinked names share their inode anyway.
   */
  dataKey?: (inode: Inode) => string | null;
}

/** Where one file content goes in a packed image. */
export interface PackedData {
  /** The inode whose content fills these places (the first of those sharing them). */
  inode: Inode;
  size: number;
  /** Full blocks: the first `size - tailSize` bytes, from block `blkaddr` on (count 0: none). */
  blkaddr: number;
  nBlocks: number;
  /** The last `tailSize` bytes go inline after each sharing inode, at these offsets of `meta`. */
  tailSize: number;
  tailOffsets: number[];
}

export interface PackedImage {
  /** Pack header, superblock, inodes, xattrs, directory and symlink blocks: blocks [0, metaBlocks). */
  meta: Buffer;
  metaBlocks: number;
  /** The image is this many blocks long. */
  totalBlocks: number;
  /** File contents in block order. */
  data: PackedData[];
  inodes: number;
  /** Regular files whose blocks are shared with an identical earlier file, and the bytes saved. */
  dedupFiles: number;
  dedupBytes: number;
}

interface Entry {
  name: string;
  node: ENode;
  /** This name places the inode (not a hardlink, `.` or `..`). */
  owned: boolean;
}

/** A node of the writer's private copy of the tree, plus its layout. */
interface ENode {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  payload: string | null;
  content: string | null;
  digest: string | null;
  xattrs: Xattr[];
  parent: ENode;
  entries: Entry[] | null;
  // layout
  nid: number;
  compact: boolean;
  nBlocks: number;
  tail: number;
  xattrSize: number;
  /** Per xattr (in sorted order): its (key, value) pair with the shared table offset; null = none shared. */
  pairs: PairCount[] | null;
  nShared: number;
  blkaddr: number;
  /** External files: chunk size bits and chunk count. */
  chunkBits: number;
  chunkCount: number;
  /** Directories: [first, end) entry ranges of the full blocks, then of the inline tail. */
  dirBlocks: [number, number][] | null;
  dirTail: [number, number] | null;
  /** Late files: the caller's index; -1 for all others. */
  late: number;
}

const fail = (code: ErrorCode, msg: string, input?: string): never => {
  throw new CfsError(code, msg, { input });
};

const typeOf = (n: { mode: number }): number => n.mode & S_IFMT;

function newENode(src: Inode | null, parent: ENode | null, consume = false, late = -1): ENode {
  const n: ENode = {
    mode: src?.mode ?? 0,
    nlink: src?.nlink ?? 1,
    uid: src?.uid ?? 0,
    gid: src?.gid ?? 0,
    rdev: src?.rdev ?? 0,
    size: src?.size ?? 0,
    mtimeSec: src?.mtimeSec ?? 0n,
    mtimeNsec: src?.mtimeNsec ?? 0,
    payload: src?.payload ?? null,
    content: src?.content ?? null,
    digest: src?.digest ?? null,
    // shallow: an entry whose key is rewritten gets a new object (rewriteNode)
    xattrs: src ? (consume ? src.xattrs : src.xattrs.slice()) : [],
    parent: null as unknown as ENode,
    entries: null,
    nid: 0,
    compact: true,
    nBlocks: 0,
    tail: 0,
    xattrSize: 0,
    pairs: null,
    nShared: 0,
    blkaddr: 0,
    chunkBits: 0,
    chunkCount: 0,
    dirBlocks: null,
    dirTail: null,
    late,
  };
  n.parent = parent ?? n;
  return n;
}

/** A node's path, for error messages: its names are looked up in the parents' entries (nodes keep none). */
function pathOf(n: ENode): string {
  const parts: string[] = [];
  for (let c = n; c.parent !== c; c = c.parent) {
    const e = c.parent.entries?.find((x) => x?.node === c && x.owned);
    parts.push(e ? e.name : '?');
  }
  return '/' + parts.reverse().join('/');
}

/**
 * Copy the input tree: one ENode per inode; link names resolve to their owner's ENode.
 * `consume`: directories without link names lose their entries once copied. `srcOf` gets each
 * copy's original (a packed image asks for the files' data by their inodes).
 */
function copyTree(root: Inode, input?: string, consume = false, late?: (inode: Inode) => number, srcOf?: Map<ENode, Inode>): ENode {
  // Inodes that hardlink names point at; only those need a lookup from inode to copy.
  const linked = new Map<Inode, ENode | null>();
  const walk: Inode[] = [root];
  for (let i = 0; i < walk.length; i++) {
    for (const d of walk[i].children!) {
      if (d.link) linked.set(d.inode, null);
      else if (d.inode.children) walk.push(d.inode);
    }
  }
  const eroot = newENode(root, null);
  srcOf?.set(eroot, root);
  const stack: [ENode, Inode, number][] = [[eroot, root, 0]];
  const dirs: [ENode, Inode][] = [];
  while (stack.length) {
    const [en, inode, depth] = stack.pop()!;
    if (depth > MAX_DEPTH) fail(ErrorCode.InvalidTree, `tree deeper than ${MAX_DEPTH} levels`, input);
    const entries: Entry[] = new Array(inode.children!.length);
    en.entries = entries; // already: error messages find names there
    let hasLinks = false;
    for (let i = 0; i < entries.length; i++) {
      const d = inode.children![i];
      if (d.link) {
        hasLinks = true;
        continue;
      }
      const child = newENode(d.inode, en, consume, late?.(d.inode) ?? -1);
      srcOf?.set(child, d.inode);
      entries[i] = { name: d.name, node: child, owned: true };
      if (linked.size > 0 && linked.has(d.inode)) {
        if (linked.get(d.inode)) fail(ErrorCode.InvalidTree, `${pathOf(child)}: inode has two owning names`, input);
        linked.set(d.inode, child);
      }
      if (d.inode.children) {
        if (typeOf(d.inode) !== S_IFDIR) fail(ErrorCode.InvalidTree, `${pathOf(child)}: only directories have children`, input);
        stack.push([child, d.inode, depth + 1]);
      }
    }
    if (hasLinks) dirs.push([en, inode]);
    else if (consume && inode !== root) inode.children = [];
  }
  // Resolve hardlink names once every owner has its copy.
  for (const [en, inode] of dirs) {
    const entries = en.entries!;
    for (let i = 0; i < entries.length; i++) {
      const d = inode.children![i];
      if (!d.link) continue;
      const target = d.inode === root ? eroot : linked.get(d.inode);
      if (!target) fail(ErrorCode.InvalidTree, `hardlink ${pathOf(en)}/${d.name}: target is not in the tree`, input);
      if (typeOf(target!) === S_IFDIR) fail(ErrorCode.InvalidTree, `hardlink ${pathOf(en)}/${d.name} points to a directory`, input);
      entries[i] = { name: d.name, node: target!, owned: false };
    }
  }
  return eroot;
}

function set(n: ENode, key: string, value: string, input?: string): void {
  try {
    setXattr(n.xattrs, key, value, xattrBudget(n.xattrs));
  } catch (e) {
    if (e instanceof RangeError) fail(ErrorCode.TooLarge, `${pathOf(n)}: cannot set xattr ${key}: ${e.message}`, input);
    throw e;
  }
}

const EMPTY = '';
const X = 'x';
const Y = 'y';
const metacopyScratch = Buffer.alloc(4 + 32);
metacopyScratch.set(METACOPY_HEADER);
/** trusted.overlay.metacopy value for a digest: header + 32 digest bytes (a shared scratch buffer). */
function metacopyBytes(hex: string): Buffer {
  metacopyScratch.write(hex, 4, 'hex');
  return metacopyScratch;
}
/** metacopyBytes as a flat string. */
function metacopyValue(hex: string): string {
  return readLatin1(metacopyBytes(hex), 0, metacopyScratch.length);
}

/**
 * Placeholder metacopy and redirect values of late file `index`: as long as real ones, never
 * equal to one (a real metacopy value starts with METACOPY_HEADER, a real redirect is hex).
 */
function latePlaceholders(index: number): { metacopy: string; redirect: string } {
  // written into a scratch buffer and read out flat: no intermediate strings per late file
  const b = lateScratch;
  const hex = index.toString(16);
  b.fill(0x30, 4); // '0'
  writeLatin1(b, hex, 66 - hex.length);
  const redirect = readLatin1(b, 0, 66);
  b.fill(0xff, 30, 34);
  return { metacopy: readLatin1(b, 30, 66), redirect };
}
const lateScratch = Buffer.from('/!!/' + '0'.repeat(62), 'latin1');

/** Writes signed 64-bit values; most inodes share a few mtimes, so it keeps the last one. */
function s64Writer(): (img: Buffer, v: bigint, at: number) => void {
  let last: bigint | null = null;
  let lo = 0;
  let hi = 0;
  return (img, v, at) => {
    if (v !== last) {
      const u = BigInt.asUintN(64, v);
      lo = Number(u & 0xffffffffn);
      hi = Number(u >> 32n);
      last = v;
    }
    img.writeUInt32LE(lo, at);
    img.writeUInt32LE(hi, at + 4);
  };
}

/** What writeInode needs besides the node. */
interface WriteContext {
  sharedBase: number;
  names: XattrNames;
  writeS64: (img: Buffer, v: bigint, at: number) => void;
  /** Packed image: regular file data is the caller's to write. */
  packed: boolean;
  /** Late files: index → offsets of the metacopy and redirect values. */
  lateSlots: Map<number, [number, number]> | null;
  input: string | undefined;
}

/** chunkbits and chunk count of an external file (chunk-based, every chunk a hole). */
export function chunking(size: number): { chunkBits: number; chunkCount: number } {
  // chunkbits = ilog2(size - 1) + 1 = bit length of size - 1 (ilog2(0) is 0), at least the
  // block size, at most 12 + 31
  const n = size - 1;
  let bits = n < 2 ** 32 ? 32 - Math.clz32(n) : 64 - Math.clz32(Math.floor(n / 2 ** 32));
  if (bits === 0) bits = 1;
  if (bits < 12) bits = 12;
  if (bits - 12 > CHUNK_FORMAT_BLKBITS_MASK) bits = CHUNK_FORMAT_BLKBITS_MASK + 12;
  return { chunkBits: bits, chunkCount: Math.ceil(size / 2 ** bits) };
}

const isExternal = (n: ENode): boolean => typeOf(n) === S_IFREG && n.size > 0 && n.content === null;

/** The checks every node gets: a valid file type and xattrs within the parser's limits. */
function checkNode(n: ENode, input?: string): void {
  if (!isValidModeType(n.mode)) fail(ErrorCode.InvalidTree, `${pathOf(n)}: invalid mode ${n.mode.toString(8)}`, input);
  // trees built in code (not parsed) get the limits the parser enforces
  for (const x of n.xattrs) {
    if (x.key.length === 0 || x.key.length > MAX_XATTR_NAME_LEN) fail(ErrorCode.InvalidTree, `${pathOf(n)}: xattr name of ${x.key.length} bytes`, input);
    if (x.value.length > MAX_XATTR_VALUE_LEN) fail(ErrorCode.TooLarge, `${pathOf(n)}: xattr ${x.key} value of ${x.value.length} bytes (at most ${MAX_XATTR_VALUE_LEN})`, input);
  }
  if (xattrBudget(n.xattrs) > MAX_INODE_XATTR_SIZE) fail(ErrorCode.TooLarge, `${pathOf(n)}: xattrs exceed the per-inode size limit`, input);
}

const redirectScratch = Buffer.alloc(1 + PATH_MAX);
redirectScratch[0] = 0x2f;
/** '/' + payload as one flat string (a concatenation would keep both parts alive). */
function redirectValue(payload: string): string {
  const b = payload.length <= PATH_MAX ? redirectScratch : Buffer.allocUnsafe(payload.length + 1);
  b[0] = 0x2f;
  return readLatin1(b, 0, 1 + writeLatin1(b, payload, 1));
}

/** '/xx/yyyy…', the redirect to the object of `hex`: its 66 bytes at the start of a shared scratch buffer. */
function objectRedirectBytes(hex: string): Buffer {
  const b = redirectScratch; // [0] is '/' for good
  writeLatin1(b, hex, 2);
  b[1] = b[2];
  b[2] = b[3];
  b[3] = 0x2f;
  return b;
}
/** objectRedirectBytes as a flat string. */
const objectRedirect = (hex: string): string => readLatin1(objectRedirectBytes(hex), 0, 66);

/**
 * An external file's metacopy and redirect (null = none) xattrs. The digest and payload are
 * then no longer needed: they are dropped. A file without other xattrs gets a list of exactly
 * these two (on a big tree, digests and spare list room add up to a quarter of the encoder's heap).
 */
function setOverlay(n: ENode, metacopy: string, redirect: string | null, input?: string): void {
  if (n.xattrs.length === 0 && (redirect === null || redirect.length <= 1 + PATH_MAX)) {
    // most files: a list of just these (pushing onto [] would reserve 16 slots, then garbage);
    // values this short are within every limit set() checks, so only longer ones go through it
    const mc = { key: XATTR_METACOPY, value: metacopy };
    n.xattrs = redirect === null ? [mc] : [mc, { key: XATTR_REDIRECT, value: redirect }];
  } else {
    set(n, XATTR_METACOPY, metacopy, input);
    if (redirect !== null) set(n, XATTR_REDIRECT, redirect, input);
  }
  n.digest = null;
  n.payload = null;
}

/** Rewrite one node for overlayfs (mkcomposefs add_overlayfs_xattrs). */
function rewriteNode(n: ENode, version: number, toObject: boolean, input?: string): void {
  checkNode(n, input);
  if (isExternal(n)) {
    const c = chunking(n.size);
    if (c.chunkCount > MAX_CHUNKS) fail(ErrorCode.TooLarge, `${pathOf(n)}: file too large (${n.size} bytes)`, input);
    n.chunkBits = c.chunkBits;
    n.chunkCount = c.chunkCount;
  }
  const xs = n.xattrs;
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (x.key.startsWith(OVERLAY_PREFIX)) {
      xs[i] = { key: OVERLAY_ESCAPED_PREFIX + x.key.slice(OVERLAY_PREFIX.length), value: x.value };
    }
  }
  if (n.late >= 0) {
    if (!isExternal(n)) fail(ErrorCode.InvalidTree, `${pathOf(n)}: only a file kept outside the image can have its digest filled in later`, input);
    const p = latePlaceholders(n.late);
    setOverlay(n, p.metacopy, p.redirect, input);
  } else if (isExternal(n)) {
    const redirect = n.payload ? redirectValue(n.payload) : toObject && n.digest !== null ? objectRedirect(n.digest) : null;
    setOverlay(n, n.digest !== null ? metacopyValue(n.digest) : EMPTY, redirect, input);
  }
  if (typeOf(n) === S_IFCHR && n.rdev === 0) {
    const parent = n.parent;
    n.size = 0;
    n.mode = S_IFREG | (n.mode & ~S_IFMT);
    set(n, XATTR_ESCAPED_WHITEOUT, EMPTY, input);
    set(n, XATTR_USER_WHITEOUT, EMPTY, input);
    set(parent, XATTR_ESCAPED_WHITEOUTS, EMPTY, input);
    set(parent, XATTR_USER_WHITEOUTS, EMPTY, input);
    if (version >= 1) {
      set(parent, XATTR_ESCAPED_OPAQUE, X, input);
      set(parent, XATTR_USER_OPAQUE, X, input);
    }
  }
}

/** Index of `name` in sorted entries, or -(insertion point) - 1. */
function findEntry(entries: Entry[], name: string): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const n = entries[mid].name;
    if (n === name) return mid;
    if (n < name) lo = mid + 1;
    else hi = mid;
  }
  return -lo - 1;
}

function insertEntry(entries: Entry[], e: Entry): void {
  const i = findEntry(entries, e.name);
  if (i < 0) entries.splice(-i - 1, 0, e);
}

function addRootWhiteouts(root: ENode): void {
  const selinux = root.xattrs.find((x) => x.key === 'security.selinux');
  for (let i = 0; i < 256; i++) {
    const name = i.toString(16).padStart(2, '0');
    if (findEntry(root.entries!, name) >= 0) continue;
    const w = newENode(null, root);
    w.mode = S_IFCHR | 0o644;
    w.uid = root.uid;
    w.gid = root.gid;
    w.mtimeSec = root.mtimeSec;
    w.mtimeNsec = root.mtimeNsec;
    insertEntry(root.entries!, { name, node: w, owned: true });
    if (selinux) set(w, 'security.selinux', selinux.value);
  }
}

/** Which version the input needs: 1 if it has whiteouts (char 0:0) and max allows it. */
function selectVersion(root: Inode, minVersion: number, maxVersion: number): number {
  let version = minVersion;
  if (version < 1 && maxVersion >= 1) {
    const stack = [root];
    while (stack.length) {
      const n = stack.pop()!;
      if ((n.mode & S_IFMT) === S_IFCHR && n.rdev === 0) return 1;
      if (n.children) for (const d of n.children) if (!d.link) stack.push(d.inode);
    }
  }
  return version;
}

/** The name index of an xattr key and the length of its prefix, as `index << 8 | length`. */
function xattrPrefix(key: string): number {
  const c = key.charCodeAt(0);
  // only these first bytes start a known prefix
  if (c !== 0x75 && c !== 0x73 && c !== 0x74) return 0;
  for (const [prefix, index] of XATTR_PREFIXES) {
    if (key.startsWith(prefix)) return (index << 8) | prefix.length;
  }
  return 0;
}

/**
 * What the encoder works out about xattr names, once per name: an image has few distinct names,
 * met again on every inode (and inode after inode in the same order).
 */
class XattrNames {
  private readonly prefixes = new Map<string, number>();
  private readonly bits = new Map<string, number>();
  private lastKeys: string[] = [];
  private lastFilter = 0;

  /** xattrPrefix(key). */
  prefix(key: string): number {
    let p = this.prefixes.get(key);
    if (p === undefined) this.prefixes.set(key, (p = xattrPrefix(key)));
    return p;
  }

  /** Bytes of an xattr entry (header, name without its prefix, value, padding). */
  entrySize(x: Xattr): number {
    return (XATTR_ENTRY.SIZE + x.key.length - (this.prefix(x.key) & 0xff) + x.value.length + 3) & ~3;
  }

  /** Inverted bloom filter of an inode's xattr names (bit set = name absent). */
  filter(xs: Xattr[]): number {
    const last = this.lastKeys;
    if (xs.length === last.length) {
      let i = 0;
      while (i < xs.length && xs[i].key === last[i]) i++;
      if (i === xs.length) return this.lastFilter;
    }
    let bits = 0;
    for (const x of xs) {
      let bit = this.bits.get(x.key);
      if (bit === undefined) this.bits.set(x.key, (bit = filterBit(x.key, this.prefix(x.key))));
      bits |= bit;
    }
    this.lastKeys = xs.map((x) => x.key);
    return (this.lastFilter = ~bits >>> 0);
  }
}

/** Sort by key (unique keys): insertion sort, as inodes carry a handful of xattrs. */
function sortByKey(xs: Xattr[]): void {
  for (let i = 1; i < xs.length; i++) {
    const x = xs[i];
    let j = i - 1;
    for (; j >= 0 && xs[j].key > x.key; j--) xs[j + 1] = xs[j];
    xs[j + 1] = x;
  }
}

interface PairCount {
  x: Xattr;
  count: number;
  /** Offset in the shared table, or -1 when not shared. */
  offset: number;
}
/** Every pair seen once. */
const UNIQUE: Readonly<PairCount> = { x: { key: '', value: '' }, count: 1, offset: -1 };

/** A cheap hash of a pair from the key's length and last byte and at most 12 value bytes. */
function fingerprint(x: Xattr): number {
  const key = x.key;
  const v = x.value;
  const n = v.length;
  let h = Math.imul(key.length ^ (key.charCodeAt(key.length - 1) << 8) ^ (n << 16), 0x9e3779b1);
  for (let i = n > 8 ? n - 8 : 0; i < n; i++) h = Math.imul(h ^ v.charCodeAt(i), 0x01000193);
  if (n > 16) for (let i = n >> 1, end = i + 4; i < end; i++) h = Math.imul(h ^ v.charCodeAt(i), 0x01000193);
  return h ^ (h >>> 15);
}

/**
 * Count each exact (key, value) pair over all inodes; pairs used by two or more are shared.
 * Returns the shared entries in table order and, per node, each xattr's pair.
 */
function computeShared(nodes: ENode[], names: XattrNames): { entries: Xattr[]; size: number; pairs: (PairCount[] | null)[] } {
  // Most pairs (metacopy, redirect) are unique. A bit table of pair fingerprints finds the pairs
  // that may repeat; only those go through the exact count.
  let total = 0;
  for (const n of nodes) total += n.xattrs.length;
  let tableBits = 1 << 10;
  while (tableBits < total * 16 && tableBits < 1 << 27) tableBits *= 2;
  const mask = tableBits - 1;
  const seen = new Int32Array(tableBits >>> 5);
  const again = new Int32Array(tableBits >>> 5);
  const fps = new Int32Array(total);
  let k = 0;
  for (const n of nodes) {
    for (const x of n.xattrs) {
      const fp = fingerprint(x) & mask;
      fps[k++] = fp;
      const w = fp >>> 5;
      const bit = 1 << (fp & 31);
      if (seen[w] & bit) again[w] |= bit;
      else seen[w] |= bit;
    }
  }
  const byKey = new Map<string, Map<string, PairCount>>();
  // per node: null when every pair is unique (most inodes of a tree without SELinux labels)
  const pairs: (PairCount[] | null)[] = new Array(nodes.length).fill(null);
  k = 0;
  // the pair before is often the same (one SELinux label on a whole directory)
  let lastKey = '';
  let lastValue = '';
  let lastPair = UNIQUE as PairCount;
  for (let i = 0; i < nodes.length; i++) {
    const xs = nodes[i].xattrs;
    let list: PairCount[] | null = null;
    for (let j = 0; j < xs.length; j++, k++) {
      const x = xs[j];
      if ((again[fps[k] >>> 5] & (1 << (fps[k] & 31))) === 0) continue;
      list ??= new Array<PairCount>(xs.length).fill(UNIQUE);
      if (x.key === lastKey && x.value === lastValue) {
        lastPair.count++;
        list[j] = lastPair;
        continue;
      }
      let values = byKey.get(x.key);
      if (!values) byKey.set(x.key, (values = new Map()));
      let e = values.get(x.value);
      if (e) e.count++;
      else values.set(x.value, (e = { x, count: 1, offset: -1 }));
      list[j] = e;
      lastKey = x.key;
      lastValue = x.value;
      lastPair = e;
    }
    pairs[i] = list;
  }
  const shared: PairCount[] = [];
  for (const values of byKey.values()) for (const e of values.values()) if (e.count > 1) shared.push(e);
  // key descending, then value length descending, then value bytes descending
  shared.sort((a, b) => {
    if (a.x.key !== b.x.key) return a.x.key < b.x.key ? 1 : -1;
    if (a.x.value.length !== b.x.value.length) return b.x.value.length - a.x.value.length;
    return a.x.value < b.x.value ? 1 : a.x.value > b.x.value ? -1 : 0;
  });
  let off = 0;
  for (const e of shared) {
    e.offset = off;
    off += names.entrySize(e.x);
  }
  return { entries: shared.map((e) => e.x), size: off, pairs };
}

/** Pack directory entries into full blocks; a last partial block over half a block is full too. */
function dirLayout(n: ENode): void {
  const entries = n.entries!;
  const blocks: [number, number][] = [];
  let used = 0;
  let first = 0;
  for (let i = 0; i < entries.length; i++) {
    const len = DIRENT.SIZE + entries[i].name.length;
    if (used + len > BLOCK_SIZE) {
      blocks.push([first, i]);
      used = 0;
      first = i;
    }
    used += len;
  }
  n.dirTail = null;
  if (used > BLOCK_SIZE / 2) {
    blocks.push([first, entries.length]);
    used = 0;
  } else if (used > 0) {
    n.dirTail = [first, entries.length];
  }
  n.dirBlocks = blocks;
  n.nBlocks = blocks.length;
  n.tail = used;
}

function dataLayout(n: ENode): void {
  const type = typeOf(n);
  n.nBlocks = 0;
  n.tail = 0;
  if (type === S_IFDIR) dirLayout(n);
  else if (type === S_IFLNK) n.tail = n.payload!.length;
  else if (type === S_IFREG && n.size > 0) {
    if (n.chunkCount > 0) {
      n.tail = n.chunkCount * CHUNK_ENTRY_SIZE;
    } else {
      // inline content, or a packed file: full blocks, and a tail of at most half a block
      n.nBlocks = Math.floor(n.size / BLOCK_SIZE);
      n.tail = n.size % BLOCK_SIZE;
      if (n.tail > BLOCK_SIZE / 2) {
        n.nBlocks++;
        n.tail = 0;
      }
    }
  }
}

const roundUp = (x: number, a: number): number => Math.ceil(x / a) * a;

/** Padding before an inode so that its tail does not cross a block (may push the tail out). */
function tailPadding(n: ENode, pos: number, isize: number): number {
  const total = isize + n.xattrSize + n.tail;
  if (typeOf(n) === S_IFLNK) {
    if (Math.floor(total / BLOCK_SIZE) > 0) {
      n.nBlocks++;
      n.tail = 0;
    }
    if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE)) return roundUp(pos, BLOCK_SIZE) - pos;
    return 0;
  }
  const nonTail = isize + n.xattrSize;
  let rem = BLOCK_SIZE - ((pos + nonTail) % BLOCK_SIZE);
  if (rem < n.tail) {
    const pad = roundUp(rem, SLOT_SIZE);
    rem = BLOCK_SIZE - ((pos + nonTail + pad) % BLOCK_SIZE);
    if (n.tail <= rem) return pad;
    n.nBlocks++;
    n.tail = 0;
    return roundUp(pos, BLOCK_SIZE) - pos;
  }
  return 0;
}

/** The bloom filter bit of an xattr name (`p`: its xattrPrefix). */
function filterBit(key: string, p: number): number {
  return 1 << (xxh32(Buffer.from(key.slice(p & 0xff), 'latin1'), (XATTR_FILTER_SEED + (p >> 8)) >>> 0) & (XATTR_FILTER_BITS - 1));
}

function dirSize(n: ENode): number {
  return n.nBlocks * BLOCK_SIZE + n.tail;
}

// The encoder's phases before writing, in the order encode() runs them.

/** Rewrite (version >= 0) or only check (-1, packed images) every node, parents before children; add . and .. */
function rewriteTree(eroot: ENode, version: number, toObject: boolean, input: string | undefined): void {
  const queue: ENode[] = [eroot];
  for (let i = 0; i < queue.length; i++) {
    const n = queue[i];
    if (version < 0) checkNode(n, input);
    else rewriteNode(n, version, toObject, input);
    if (n.entries) {
      for (const e of n.entries) if (e.owned) queue.push(e.node);
      insertEntry(n.entries, { name: '.', node: n, owned: false });
      insertEntry(n.entries, { name: '..', node: n.parent, owned: false });
    }
  }
}

/** Breadth-first numbering over owning names; nlink of directories; min mtime; ACL flag. */
function numberNodes(eroot: ENode): { nodes: ENode[]; minSec: bigint; minNsec: number; hasAcl: boolean } {
  const nodes: ENode[] = [eroot];
  let minSec = eroot.mtimeSec;
  let minNsec = eroot.mtimeNsec;
  let hasAcl = false;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    if (n.entries) {
      let nlink = 2;
      for (const e of n.entries) {
        if (!e.owned) continue;
        if (typeOf(e.node) === S_IFDIR) nlink++;
        nodes.push(e.node);
      }
      n.nlink = nlink;
    }
    if (n.xattrs.length > 1) sortByKey(n.xattrs);
    if (n.mtimeSec < minSec || (n.mtimeSec === minSec && n.mtimeNsec < minNsec)) {
      minSec = n.mtimeSec;
      minNsec = n.mtimeNsec;
    }
    if (!hasAcl) for (const x of n.xattrs) if (ACL_XATTRS.includes(x.key)) hasAcl = true;
  }
  return { nodes, minSec, minNsec, hasAcl };
}

/** Each inode's shared references (at most 128, in key order) and xattr area size. */
function layoutXattrs(nodes: ENode[], pairsOf: (PairCount[] | null)[], names: XattrNames): void {
  for (let ni = 0; ni < nodes.length; ni++) {
    const n = nodes[ni];
    if (n.xattrs.length === 0) continue;
    const pairs = pairsOf[ni];
    let nShared = 0;
    let inlineSize = 0;
    for (let i = 0; i < n.xattrs.length; i++) {
      if (pairs !== null && pairs[i].offset >= 0 && nShared < MAX_SHARED_XATTRS_PER_INODE) nShared++;
      else inlineSize += names.entrySize(n.xattrs[i]);
    }
    n.pairs = pairs;
    n.nShared = nShared;
    n.xattrSize = roundUp(XATTR_IBODY_HEADER.SIZE + nShared * 4 + inlineSize, 4);
  }
}

/** Inode placement: format, nid and data layout of each inode; where the inodes end. */
function placeInodes(nodes: ENode[], minSec: bigint, minNsec: number): { inodesEnd: number; nDataBlocks: number } {
  let pos = SUPERBLOCK_OFFSET + SUPERBLOCK.SIZE;
  let nDataBlocks = 0;
  for (const n of nodes) {
    dataLayout(n);
    const size = typeOf(n) === S_IFDIR ? dirSize(n) : n.size;
    n.compact =
      n.mtimeSec === minSec &&
      n.mtimeNsec === minNsec &&
      n.nlink <= 0xffff &&
      n.uid <= 0xffff &&
      n.gid <= 0xffff &&
      size <= 0xffffffff;
    const isize = n.compact ? INODE_COMPACT.SIZE : INODE_EXTENDED.SIZE;
    pos = roundUp(pos, SLOT_SIZE);
    pos += tailPadding(n, pos, isize);
    n.nid = pos / SLOT_SIZE;
    nDataBlocks += n.nBlocks;
    pos += isize + n.xattrSize + n.tail;
  }
  return { inodesEnd: roundUp(pos, SLOT_SIZE), nDataBlocks };
}

/** Encode a tree into a composefs image. */
export function encodeImage(root: Inode, opts: EncodeOptions = {}): Buffer {
  return encode(root, opts, null).img;
}

/**
 * encodeImage with some digests still unknown (see LateEncodeOptions): the layout does not
 * depend on them, so the image is complete once each is filled in.
 */
export function encodeImageLate(root: Inode, opts: LateEncodeOptions): LateImage {
  const { img, lateSlots } = encode(root, opts, null);
  const slots = lateSlots!;
  let unfilled = slots.size;
  return {
    fill(index, digest) {
      const slot = slots.get(index);
      if (!slot) throw new RangeError(`no late file ${index} in this image`);
      if (!/^[0-9a-f]{64}$/.test(digest)) throw new RangeError(`invalid digest ${JSON.stringify(digest)}`);
      if (slot[0] < 0) throw new RangeError(`late file ${index} is filled in already`);
      metacopyBytes(digest).copy(img, slot[0]);
      objectRedirectBytes(digest).copy(img, slot[1], 0, 66);
      slot[0] = -1;
      unfilled--;
    },
    get unfilled() {
      return unfilled;
    },
    image() {
      if (unfilled > 0) throw new Error(`${unfilled} late file(s) not filled in`);
      return img;
    },
  };
}

/**
 * Lay out a packed image of a tree and emit its metadata. The caller writes `meta` at offset 0,
 * each file's content where `data` says, and makes the image `totalBlocks` blocks long.
 */
export function encodePacked(root: Inode, opts: PackOptions = {}): PackedImage {
  const { img, packed } = encode(root, { input: opts.input }, opts);
  return { ...packed!, meta: img };
}

/** The encoder proper; `pack` set = a packed image (metadata only in `img`). */
function encode(
  root: Inode,
  opts: EncodeOptions & { late?: (inode: Inode) => number },
  pack: PackOptions | null,
): { img: Buffer; packed?: Omit<PackedImage, 'meta'>; lateSlots?: Map<number, [number, number]> } {
  const input = opts.input;
  let version = 0;
  if (!pack) {
    const minVersion = opts.minVersion ?? 0;
    let maxVersion = opts.maxVersion ?? 1;
    for (const v of [minVersion, maxVersion]) {
      if (!Number.isInteger(v) || v < 0 || v > CFS_VERSION_MAX) fail(ErrorCode.Usage, `invalid format version ${v} (0..${CFS_VERSION_MAX})`, input);
    }
    if (maxVersion < minVersion) maxVersion = minVersion;
    if (typeOf(root) !== S_IFDIR) fail(ErrorCode.InvalidTree, 'root must be a directory', input);
    version = selectVersion(root, minVersion, maxVersion);
  } else if (typeOf(root) !== S_IFDIR) fail(ErrorCode.InvalidTree, 'root must be a directory', input);

  // Copy and rewrite (a packed tree is only checked), parents before children; add . and ..
  const srcOf = pack ? new Map<ENode, Inode>() : undefined;
  const eroot = copyTree(root, input, opts.consume === true && !pack, pack ? undefined : opts.late, srcOf);
  opts.afterCopy?.();
  rewriteTree(eroot, pack ? -1 : version, opts.redirectToObject === true, input);
  opts.afterRewrite?.();
  if (!pack) {
    set(eroot, XATTR_OPAQUE, Y, input);
    addRootWhiteouts(eroot);
  }
  const { nodes, minSec, minNsec, hasAcl } = numberNodes(eroot);
  const names = new XattrNames();
  const shared = computeShared(nodes, names);
  layoutXattrs(nodes, shared.pairs, names);
  const { inodesEnd, nDataBlocks } = placeInodes(nodes, minSec, minNsec);
  const dataStart = roundUp(inodesEnd + shared.size, BLOCK_SIZE);
  if (eroot.nid > 0xffff) fail(ErrorCode.TooLarge, 'root inode does not fit a 16-bit nid', input);
  let nextBlock = dataStart / BLOCK_SIZE;
  let totalBlocks = nextBlock + nDataBlocks;
  let metaBlocks = totalBlocks;
  let packed: Omit<PackedImage, 'meta'> | undefined;
  if (!pack) {
    if (totalBlocks > 0xffffffff) fail(ErrorCode.TooLarge, 'image too large', input);
    for (const n of nodes) {
      if (n.nBlocks > 0) {
        n.blkaddr = nextBlock;
        nextBlock += n.nBlocks;
      }
    }
  } else {
    packed = placePackedData(nodes, eroot, nextBlock, pack, srcOf!);
    metaBlocks = packed.metaBlocks;
    totalBlocks = packed.totalBlocks;
    if (totalBlocks > 0xffffffff) fail(ErrorCode.TooLarge, `image too large (${totalBlocks} blocks of ${BLOCK_SIZE} bytes)`, input);
  }

  const img = Buffer.alloc(metaBlocks * BLOCK_SIZE);
  if (!pack) {
    const H = CFS_HEADER.off;
    img.writeUInt32LE(CFS_MAGIC, H.magic);
    img.writeUInt32LE(CFS_HEADER_VERSION, H.version);
    img.writeUInt32LE(hasAcl ? CFS_FLAG_HAS_ACL : 0, H.flags);
    img.writeUInt32LE(version, H.composefsVersion);
  } else {
    const H = PACK_HEADER.off;
    img.writeUInt32LE(PACK_MAGIC, H.magic);
    img.writeUInt32LE(PACK_VERSION, H.version);
    img.writeUInt32LE(metaBlocks, H.metaBlocks);
  }
  const S = SUPERBLOCK.off;
  const sb = SUPERBLOCK_OFFSET;
  img.writeUInt32LE(EROFS_SUPER_MAGIC, sb + S.magic);
  img.writeUInt32LE(FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER, sb + S.featureCompat);
  img[sb + S.blkszbits] = 12;
  img.writeUInt16LE(eroot.nid, sb + S.rootNid);
  img.writeBigUInt64LE(BigInt(nodes.length), sb + S.inos);
  img.writeBigUInt64LE(BigInt.asUintN(64, minSec), sb + S.buildTime);
  img.writeUInt32LE(minNsec, sb + S.buildTimeNsec);
  img.writeUInt32LE(totalBlocks, sb + S.blocks);
  img.writeUInt32LE(Math.floor((SUPERBLOCK_OFFSET + SUPERBLOCK.SIZE) / BLOCK_SIZE), sb + S.metaBlkaddr);
  img.writeUInt32LE(Math.floor(inodesEnd / BLOCK_SIZE), sb + S.xattrBlkaddr);

  const sharedBase = inodesEnd % BLOCK_SIZE;
  const lateSlots = opts.late ? new Map<number, [number, number]>() : null;
  const ctx: WriteContext = { sharedBase, names, writeS64: s64Writer(), packed: pack !== null, lateSlots, input };
  for (let i = 0; i < nodes.length; i++) writeInode(img, nodes[i], i, ctx); // inode numbers: the nodes' order
  let p = inodesEnd;
  for (const x of shared.entries) p = writeXattr(img, p, x, names);
  for (const n of nodes) if (!(pack && typeOf(n) === S_IFREG)) writeData(img, n);
  return { img, packed, lateSlots: lateSlots ?? undefined };
}

/**
 * Packed image: directory and symlink blocks first (so all metadata comes before `metaBlocks`),
 * then file contents in depth-first name order (the order a tree walk reads them), each distinct
 * content once.
 */
function placePackedData(nodes: ENode[], root: ENode, firstBlock: number, pack: PackOptions, srcOf: Map<ENode, Inode>): Omit<PackedImage, 'meta'> {
  let next = firstBlock;
  for (const n of nodes) {
    if (n.nBlocks > 0 && typeOf(n) !== S_IFREG) {
      n.blkaddr = next;
      next += n.nBlocks;
    }
  }
  const metaBlocks = next;
  const data: PackedData[] = [];
  const byKey = new Map<string, PackedData>();
  let dedupFiles = 0;
  let dedupBytes = 0;
  const stack: ENode[] = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (n.entries) {
      for (let i = n.entries.length - 1; i >= 0; i--) if (n.entries[i].owned) stack.push(n.entries[i].node);
      continue;
    }
    if (typeOf(n) !== S_IFREG || n.size === 0) continue;
    const tailOffset = n.nid * SLOT_SIZE + (n.compact ? INODE_COMPACT.SIZE : INODE_EXTENDED.SIZE) + n.xattrSize;
    const src = srcOf.get(n)!;
    const k = pack.dataKey?.(src) ?? null;
    const key = k === null ? null : `${n.size}:${k}`;
    const same = key === null ? undefined : byKey.get(key);
    if (same) {
      n.blkaddr = same.blkaddr;
      if (n.tail > 0) same.tailOffsets.push(tailOffset);
      if (n.nBlocks > 0) {
        dedupFiles++;
        dedupBytes += n.size - n.tail;
      }
      continue;
    }
    const d: PackedData = { inode: src, size: n.size, blkaddr: n.nBlocks > 0 ? next : 0, nBlocks: n.nBlocks, tailSize: n.tail, tailOffsets: n.tail > 0 ? [tailOffset] : [] };
    n.blkaddr = d.blkaddr;
    next += n.nBlocks;
    data.push(d);
    if (key !== null) byKey.set(key, d);
  }
  return { metaBlocks, totalBlocks: next, data, inodes: nodes.length, dedupFiles, dedupBytes };
}

/** An unsigned 64-bit field from a number below 2^53 (no BigInt per inode). */
function writeU64(img: Buffer, v: number, at: number): void {
  img.writeUInt32LE(v % 2 ** 32, at);
  img.writeUInt32LE(Math.floor(v / 2 ** 32), at + 4);
}

function writeXattr(img: Buffer, p: number, x: Xattr, names: XattrNames): number {
  const key = x.key;
  const pre = names.prefix(key);
  const from = pre & 0xff;
  const E = XATTR_ENTRY.off;
  img[p + E.nameLen] = key.length - from;
  img[p + E.nameIndex] = pre >> 8;
  img.writeUInt16LE(x.value.length, p + E.valueSize);
  p += XATTR_ENTRY.SIZE;
  for (let i = from; i < key.length; i++) img[p++] = key.charCodeAt(i);
  p += writeLatin1(img, x.value, p);
  return (p + 3) & ~3;
}

function writeDirents(img: Buffer, p: number, entries: Entry[], from: number, to: number): void {
  let nameoff = (to - from) * DIRENT.SIZE;
  const D = DIRENT.off;
  let q = p;
  for (let i = from; i < to; i++) {
    const e = entries[i];
    writeU64(img, e.node.nid, q + D.nid);
    img.writeUInt16LE(nameoff, q + D.nameoff);
    img[q + D.fileType] = FILE_TYPES.get(typeOf(e.node)) ?? 0;
    nameoff += e.name.length;
    q += DIRENT.SIZE;
  }
  for (let i = from; i < to; i++) q += writeLatin1(img, entries[i].name, q);
}

function writeInode(img: Buffer, n: ENode, ino: number, ctx: WriteContext): void {
  const type = typeOf(n);
  let pos = n.nid * SLOT_SIZE;
  let layout: number = n.tail > 0 ? DataLayout.FlatInline : DataLayout.FlatPlain;
  let size: number;
  let u = 0;
  if (type === S_IFDIR) {
    size = dirSize(n);
    if (n.nBlocks > 0) u = n.blkaddr;
  } else if (type === S_IFREG) {
    size = n.size;
    if (n.nBlocks > 0) u = n.blkaddr;
    if (n.chunkCount > 0) {
      layout = DataLayout.ChunkBased;
      // the chunk format overwrites the low 16 bits of any block address
      u = ((u & 0xffff0000) | (n.chunkBits - 12)) >>> 0;
    }
  } else if (type === S_IFLNK) {
    size = n.nBlocks === 0 ? n.tail : n.size;
    if (n.nBlocks > 0) u = n.blkaddr;
  } else {
    size = 0;
    if (type === S_IFCHR || (n.mode & S_IFMT) === 0o060000) u = n.rdev;
  }
  const icount = n.xattrSize === 0 ? 0 : (n.xattrSize - XATTR_IBODY_HEADER.SIZE) / 4 + 1;
  const format = (layout << DATALAYOUT_SHIFT) | (n.compact ? 0 : 1);
  if (n.compact) {
    const I = INODE_COMPACT.off;
    img.writeUInt16LE(format, pos + I.format);
    img.writeUInt16LE(icount, pos + I.xattrIcount);
    img.writeUInt16LE(n.mode & 0xffff, pos + I.mode);
    img.writeUInt16LE(n.nlink, pos + I.nlink);
    img.writeUInt32LE(size, pos + I.size);
    img.writeUInt32LE(u, pos + I.u);
    img.writeUInt32LE(ino, pos + I.ino);
    img.writeUInt16LE(n.uid, pos + I.uid);
    img.writeUInt16LE(n.gid, pos + I.gid);
    pos += INODE_COMPACT.SIZE;
  } else {
    const I = INODE_EXTENDED.off;
    img.writeUInt16LE(format, pos + I.format);
    img.writeUInt16LE(icount, pos + I.xattrIcount);
    img.writeUInt16LE(n.mode & 0xffff, pos + I.mode);
    writeU64(img, size, pos + I.size);
    img.writeUInt32LE(u, pos + I.u);
    img.writeUInt32LE(ino, pos + I.ino);
    img.writeUInt32LE(n.uid, pos + I.uid);
    img.writeUInt32LE(n.gid, pos + I.gid);
    ctx.writeS64(img, n.mtimeSec, pos + I.mtime);
    img.writeUInt32LE(n.mtimeNsec, pos + I.mtimeNsec);
    img.writeUInt32LE(n.nlink, pos + I.nlink);
    pos += INODE_EXTENDED.SIZE;
  }
  if (n.xattrSize > 0) {
    const X = XATTR_IBODY_HEADER.off;
    img.writeUInt32LE(ctx.names.filter(n.xattrs), pos + X.nameFilter);
    img[pos + X.sharedCount] = n.nShared;
    // the first 128 shareable xattrs (in key order) are references, the rest inline
    let p = pos + XATTR_IBODY_HEADER.SIZE;
    const pairs = n.pairs;
    let refs = 0;
    if (pairs !== null) {
      for (let i = 0; i < pairs.length; i++) {
        if (pairs[i].offset >= 0 && refs < n.nShared) {
          img.writeUInt32LE((ctx.sharedBase + pairs[i].offset) / 4, p);
          p += 4;
          refs++;
        }
      }
    }
    refs = 0;
    for (let i = 0; i < n.xattrs.length; i++) {
      const x = n.xattrs[i];
      const inline = !(pairs !== null && pairs[i].offset >= 0 && refs < n.nShared);
      if (n.late >= 0 && (x.key === XATTR_METACOPY || x.key === XATTR_REDIRECT)) noteLate(n, x.key, inline ? p + XATTR_ENTRY.SIZE + x.key.length - (ctx.names.prefix(x.key) & 0xff) : -1, ctx);
      if (inline) p = writeXattr(img, p, x, ctx.names);
      else refs++;
    }
    pos += n.xattrSize;
  }
  if (n.tail > 0) {
    if (type === S_IFDIR) {
      if (n.dirTail) writeDirents(img, pos, n.entries!, n.dirTail[0], n.dirTail[1]);
    } else if (type === S_IFLNK) {
      writeLatin1(img, n.payload!, pos);
    } else if (n.chunkCount > 0) {
      img.fill(0xff, pos, pos + n.tail);
    } else if (n.content && !ctx.packed) {
      writeLatin1(img, n.content.slice(n.size - n.tail), pos);
    }
  }
}

/** Where a late file's metacopy or redirect value goes (-1: in the shared table, which it must not be). */
function noteLate(n: ENode, key: string, at: number, ctx: WriteContext): void {
  if (at < 0) fail(ErrorCode.InvalidTree, `${pathOf(n)}: its digest cannot be filled in later, another file has the same ${key} value`, ctx.input);
  let slot = ctx.lateSlots!.get(n.late);
  if (!slot) ctx.lateSlots!.set(n.late, (slot = [-1, -1]));
  const which = key === XATTR_METACOPY ? 0 : 1;
  if (slot[which] >= 0) fail(ErrorCode.InvalidTree, `${pathOf(n)}: late file index ${n.late} is used twice`, ctx.input);
  slot[which] = at;
}

function writeData(img: Buffer, n: ENode): void {
  if (n.nBlocks === 0) return;
  let p = n.blkaddr * BLOCK_SIZE;
  const type = typeOf(n);
  if (type === S_IFDIR) {
    for (const [from, to] of n.dirBlocks!) {
      writeDirents(img, p, n.entries!, from, to);
      p += BLOCK_SIZE;
    }
  } else if (type === S_IFREG) {
    // Only the first block is ever written (inline content is at most 5000 bytes).
    if (n.content) writeLatin1(img, n.content.slice(0, BLOCK_SIZE), p);
    else img.fill(0xff, p, p + BLOCK_SIZE);
  } else if (type === S_IFLNK) {
    writeLatin1(img, n.payload!, p);
  }
}
