/**
 * composefs image → tree, strict and bounded. Every offset, length, nid, block address, xattr
 * count and name length is checked against the image; directories are visited once (cycles and
 * directory hardlinks are errors); depth is capped. The result is what a dump line describes:
 * overlay xattrs are turned back into PAYLOAD/DIGEST/whiteouts as composefs-info does, except
 * where it is wrong (it over-reads redirects and takes an input `trusted.overlay.whiteout` for a
 * whiteout).
 *
 * With `plain`, the image is read as a plain EROFS image (a cfs-pack image): no composefs header,
 * xattrs as stored, character devices 0:0 kept, and regular files' data located, not read.
 */
import { CfsError, ErrorCode } from './errors.js';
import { setXattr } from './dumpfile.js';
import {
  BLOCK_SIZE,
  CFS_HEADER,
  CFS_HEADER_VERSION,
  CFS_MAGIC,
  DATALAYOUT_MASK,
  DATALAYOUT_SHIFT,
  DIRENT,
  DataLayout,
  EROFS_SUPER_MAGIC,
  FILE_TYPES,
  INODE_COMPACT,
  INODE_EXTENDED,
  INODE_FORMAT_EXTENDED,
  KNOWN_INCOMPAT,
  MAX_DEPTH,
  MAX_FILE_SIZE,
  MAX_IMAGE_SIZE,
  MAX_INLINE_CONTENT,
  MAX_NAME_LEN,
  METACOPY_SIZE,
  OVERLAY_ESCAPED_PREFIX,
  OVERLAY_PREFIX,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SLOT_SIZE,
  SUPERBLOCK,
  SUPERBLOCK_OFFSET,
  XATTR_ENTRY,
  XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS,
  XATTR_IBODY_HEADER,
  XATTR_LONG_PREFIX_BIT,
  XATTR_METACOPY,
  XATTR_PREFIX_OF_INDEX,
  XATTR_REDIRECT,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
  isValidModeType,
} from './layout.js';
import { type Dirent, type Inode, type Xattr, addChild, newInode } from './tree.js';
import { readLatin1 } from './bytes.js';

export interface DecodeOptions {
  /** Name of the input, for error messages. */
  input?: string;
  /** Only these top-level names (composefs-info --filter). */
  filter?: readonly string[];
  /**
   * Which name of a hardlinked inode owns it: 'first' = first in depth-first order (what
   * composefs-info prints), 'image' = the name that keeps the image's inode order, so that the
   * dump rebuilds the identical image.
   */
  owner?: 'first' | 'image';
  /**
   * A plain EROFS image such as cfs-pack writes: the first 1024 bytes are not looked at, xattrs
   * are taken as they are, and regular files (flat layouts, any size) get their data places in
   * `data` instead of contents. `data` is all the image bytes needed up to the first file data
   * block; file blocks are checked against the superblock's block count only.
   */
  plain?: boolean;
}

/** Where a regular file's data lies in a plain image. */
export interface DataPlace {
  /** The first `size - tailSize` bytes: `nBlocks` blocks from block `blkaddr`. */
  blkaddr: number;
  nBlocks: number;
  /** The rest: inline at this byte offset. */
  tailOffset: number;
  tailSize: number;
}

export interface DecodedImage {
  root: Inode;
  /** composefs format version from the header (0 or 1). */
  version: number;
  /** Header flags (bit 0: has ACLs). */
  flags: number;
  buildTimeSec: bigint;
  buildTimeNsec: number;
  /** Number of inodes the superblock declares. */
  inodeCount: bigint;
  /** Image size in blocks, from the superblock. */
  blocks: number;
  /** `plain` images: each regular file's data place (files of size 0 have none). */
  data: Map<Inode, DataPlace>;
}

interface DirEntries {
  names: string[];
  nids: number[];
  types: number[];
}

class Reader {
  constructor(
    readonly buf: Buffer,
    readonly input: string | undefined,
  ) {}
  get size(): number {
    return this.buf.length;
  }
  error(code: ErrorCode, msg: string, offset?: number): CfsError {
    return new CfsError(code, msg, { input: this.input, offset });
  }
  /** Bounds check; `what` names the structure (a function, so no message is built unless it fails). */
  check(off: number, len: number, what: string | (() => string)): void {
    if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > this.buf.length) {
      const name = typeof what === 'function' ? what() : what;
      throw this.error(ErrorCode.OutOfBounds, `${name} (${len} bytes at ${off}) runs past the end of the image (${this.buf.length} bytes)`, Number.isSafeInteger(off) ? off : undefined);
    }
  }
  u8(off: number): number {
    this.check(off, 1, 'u8');
    return this.buf[off];
  }
  u16(off: number): number {
    this.check(off, 2, 'u16');
    return this.buf.readUInt16LE(off);
  }
  u32(off: number): number {
    this.check(off, 4, 'u32');
    return this.buf.readUInt32LE(off);
  }
  u64(off: number): bigint {
    this.check(off, 8, 'u64');
    return this.buf.readBigUInt64LE(off);
  }
  bytes(off: number, len: number, what: string | (() => string)): Buffer {
    this.check(off, len, what);
    return this.buf.subarray(off, off + len);
  }
}

export interface RawInode {
  nid: number;
  off: number;
  mode: number;
  layout: number;
  size: number;
  u: number;
  xattrIcount: number;
  isize: number;
  nlink: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
}

export const typeOf = (mode: number): number => mode & S_IFMT;
/** Names the decoder compares against: interned as these very strings. */
const KNOWN_KEYS = [XATTR_REDIRECT, XATTR_METACOPY, XATTR_ESCAPED_WHITEOUT, XATTR_ESCAPED_WHITEOUTS, XATTR_USER_WHITEOUT, XATTR_USER_WHITEOUTS];
/** readXattrs result bits. */
export const WHITEOUT = 1;
export const MARKERS = 2;
/** The directory whiteouts marker as it reads back after unescaping. */
const XATTR_ESCAPED_WHITEOUTS_UNESCAPED = OVERLAY_PREFIX + XATTR_ESCAPED_WHITEOUTS.slice(OVERLAY_ESCAPED_PREFIX.length);

function cStr(s: string): string {
  const z = s.indexOf('\0');
  return z === -1 ? s : s.slice(0, z);
}


export class Decoder {
  readonly r: Reader;
  metaStart = 0;
  xattrStart = 0;
  buildTimeSec = 0n;
  buildTimeNsec = 0;
  /** Upper bound of the nids the image can hold. */
  readonly nidCount: number;
  private byNidList: (Inode | undefined)[] | null = null;
  /** nid → inode, for hardlinks; directories are recorded to reject cycles. Made on first use. */
  get byNid(): (Inode | undefined)[] {
    return (this.byNidList ??= new Array(this.nidCount));
  }
  /** inode → nid, only kept for 'image' ownership. */
  readonly nids: Map<Inode, number> | null;
  /** Superblock block count (plain images check file blocks against it). */
  blocks = 0;
  readonly data = new Map<Inode, DataPlace>();

  constructor(
    buf: Buffer,
    input: string | undefined,
    keepNids: boolean,
    readonly plain: boolean,
  ) {
    this.r = new Reader(buf, input);
    this.nidCount = Math.ceil(buf.length / SLOT_SIZE);
    this.nids = keepNids ? new Map() : null;
  }

  err(code: ErrorCode, msg: string, offset?: number): CfsError {
    return this.r.error(code, msg, offset);
  }

  private lastLo = -1;
  private lastHi = -1;
  private lastS64 = 0n;
  /** A signed 64-bit field; inodes mostly share a few mtimes, so the last value is reused. */
  readS64(at: number): bigint {
    const lo = this.r.buf.readUInt32LE(at);
    const hi = this.r.buf.readUInt32LE(at + 4);
    if (lo !== this.lastLo || hi !== this.lastHi) {
      this.lastLo = lo;
      this.lastHi = hi;
      this.lastS64 = BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
    }
    return this.lastS64;
  }

  /** Full xattr names by prefix index and stored suffix, so each distinct name is built once. */
  private readonly keys: Map<string, string>[] = XATTR_PREFIX_OF_INDEX.map((prefix) => {
    const m = new Map<string, string>();
    for (const k of KNOWN_KEYS) if (prefix && k.startsWith(prefix)) m.set(k.slice(prefix.length), k);
    return m;
  });
  internKey(index: number, suffix: string): string {
    const m = this.keys[index];
    let key = m.get(suffix);
    if (key === undefined) {
      key = XATTR_PREFIX_OF_INDEX[index] + cStr(suffix);
      m.set(suffix, key);
    }
    return key;
  }

  readInode(nid: number): RawInode {
    const r = this.r;
    if (!Number.isSafeInteger(nid) || nid < 0) throw this.err(ErrorCode.BadInode, `invalid nid ${nid}`);
    const off = this.metaStart + nid * SLOT_SIZE;
    if (off + INODE_COMPACT.SIZE > r.size) throw this.err(ErrorCode.OutOfBounds, `nid ${nid}: inode at ${off} is past the end of the image`, off);
    const format = r.u16(off);
    const extended = (format & INODE_FORMAT_EXTENDED) !== 0;
    const layout = (format >> DATALAYOUT_SHIFT) & DATALAYOUT_MASK;
    if (format >> 4 !== 0) throw this.err(ErrorCode.Unsupported, `nid ${nid}: unknown inode format bits 0x${format.toString(16)}`, off);
    // The whole inode is checked against the image once; its fields are then read directly.
    const buf = r.buf;
    let ino: RawInode;
    if (extended) {
      const I = INODE_EXTENDED.off;
      r.check(off, INODE_EXTENDED.SIZE, () => `nid ${nid}: extended inode`);
      const sizeHi = buf.readUInt32LE(off + I.size + 4);
      const size = sizeHi * 2 ** 32 + buf.readUInt32LE(off + I.size);
      if (size > MAX_FILE_SIZE) throw this.err(ErrorCode.BadInode, `nid ${nid}: size ${buf.readBigUInt64LE(off + I.size)} is implausible`, off);
      ino = {
        nid,
        off,
        mode: buf.readUInt16LE(off + I.mode),
        layout,
        size,
        u: buf.readUInt32LE(off + I.u),
        xattrIcount: buf.readUInt16LE(off + I.xattrIcount),
        isize: INODE_EXTENDED.SIZE,
        nlink: buf.readUInt32LE(off + I.nlink),
        uid: buf.readUInt32LE(off + I.uid),
        gid: buf.readUInt32LE(off + I.gid),
        mtimeSec: this.readS64(off + I.mtime),
        mtimeNsec: buf.readUInt32LE(off + I.mtimeNsec),
      };
    } else {
      const I = INODE_COMPACT.off;
      ino = {
        nid,
        off,
        mode: buf.readUInt16LE(off + I.mode),
        layout,
        size: buf.readUInt32LE(off + I.size),
        u: buf.readUInt32LE(off + I.u),
        xattrIcount: buf.readUInt16LE(off + I.xattrIcount),
        isize: INODE_COMPACT.SIZE,
        nlink: buf.readUInt16LE(off + I.nlink),
        uid: buf.readUInt16LE(off + I.uid),
        gid: buf.readUInt16LE(off + I.gid),
        mtimeSec: this.buildTimeSec,
        mtimeNsec: this.buildTimeNsec,
      };
    }
    if (!isValidModeType(ino.mode)) throw this.err(ErrorCode.BadInode, `nid ${nid}: invalid file type in mode 0${ino.mode.toString(8)}`, off);
    if (layout !== DataLayout.FlatPlain && layout !== DataLayout.FlatInline && layout !== DataLayout.ChunkBased) {
      throw this.err(ErrorCode.Unsupported, `nid ${nid}: unsupported data layout ${layout} (compressed?)`, off);
    }
    if (layout === DataLayout.ChunkBased && typeOf(ino.mode) !== S_IFREG) {
      throw this.err(ErrorCode.BadInode, `nid ${nid}: chunk-based layout on a non-regular file`, off);
    }
    return ino;
  }

  xattrAreaSize(ino: RawInode): number {
    return ino.xattrIcount === 0 ? 0 : XATTR_IBODY_HEADER.SIZE + (ino.xattrIcount - 1) * 4;
  }

  /** Offset and size of the inline tail, and the out-of-line block range. */
  dataRanges(ino: RawInode): { tailOff: number; tailSize: number; blocks: number } {
    const tailOff = ino.off + ino.isize + this.xattrAreaSize(ino);
    const nBlocks = Math.ceil(ino.size / BLOCK_SIZE);
    if (ino.layout === DataLayout.FlatInline) {
      const tailSize = ino.size % BLOCK_SIZE;
      if (tailSize === 0 && ino.size > 0) throw this.err(ErrorCode.BadInode, `nid ${ino.nid}: inline layout without a tail`, ino.off);
      this.r.check(tailOff, tailSize, () => `nid ${ino.nid}: inline data`);
      if (Math.floor(tailOff / BLOCK_SIZE) !== Math.floor((tailOff + Math.max(tailSize, 1) - 1) / BLOCK_SIZE)) {
        throw this.err(ErrorCode.BadInode, `nid ${ino.nid}: inline data crosses a block boundary`, tailOff);
      }
      return { tailOff, tailSize, blocks: nBlocks - 1 };
    }
    return { tailOff, tailSize: 0, blocks: nBlocks };
  }

  blockData(ino: RawInode, blocks: number): Buffer {
    const start = ino.u * BLOCK_SIZE;
    return this.r.bytes(start, blocks * BLOCK_SIZE, `nid ${ino.nid}: data blocks`);
  }

  // Scratch arrays for one inode's xattrs (filled and used by readXattrs, never across calls).
  private readonly xKeys: string[] = [];
  private readonly xVal: number[] = [];
  private readonly xLen: number[] = [];

  /**
   * Read the inode's xattrs (inline entries first, then shared ones, as composefs-info does)
   * straight into dump fields: redirect → payload, metacopy → digest, the escaped whiteout marks
   * → a 0:0 character device, `trusted.overlay.overlay.X` → `trusted.overlay.X`, other
   * `trusted.overlay.*` dropped. Directories keep their whiteouts markers here; readNode drops
   * them once it knows a child is a whiteout. Returns whether the inode is a whiteout.
   */
  readXattrs(ino: RawInode, inode: Inode): number {
    const size = this.xattrAreaSize(ino);
    if (size === 0) return 0;
    const r = this.r;
    const start = ino.off + ino.isize;
    r.check(start, size, () => `nid ${ino.nid}: xattr area`);
    const end = start + size;
    const shared = r.u8(start + XATTR_IBODY_HEADER.off.sharedCount);
    let p = start + XATTR_IBODY_HEADER.SIZE + shared * 4;
    if (p > end) throw this.err(ErrorCode.BadXattr, `nid ${ino.nid}: ${shared} shared xattr references do not fit the xattr area`, start);
    let n = 0;
    while (p + XATTR_ENTRY.SIZE < end) {
      p = this.readEntry(p, end, ino.nid, n++);
    }
    for (let i = 0; i < shared; i++) {
      const ref = r.u32(start + XATTR_IBODY_HEADER.SIZE + i * 4);
      this.readEntry(this.xattrStart + ref * 4, r.size, ino.nid, n++);
    }
    const keys = this.xKeys;
    const buf = r.buf;
    if (this.plain) {
      let budget = 0;
      for (let i = 0; i < n; i++) budget = this.addXattr(inode, ino, keys[i], readLatin1(buf, this.xVal[i], this.xVal[i] + this.xLen[i]), budget);
      return 0;
    }
    const type = typeOf(inode.mode);
    let wo = false;
    let uwo = false;
    let markers = false;
    for (let i = 0; i < n; i++) {
      const k = keys[i];
      if (k === XATTR_ESCAPED_WHITEOUT) wo = this.xLen[i] === 0;
      else if (k === XATTR_USER_WHITEOUT) uwo = this.xLen[i] === 0;
      else if (k === XATTR_ESCAPED_WHITEOUTS) markers = true;
    }
    // A whiteout written by mkcomposefs: an empty regular file with both markers, empty.
    const whiteout = wo && uwo && type === S_IFREG && inode.size === 0;
    let budget = 0;
    for (let i = 0; i < n; i++) {
      let key = keys[i];
      const v = this.xVal[i];
      const len = this.xLen[i];
      if (key === XATTR_REDIRECT) {
        if (type === S_IFREG) {
          let from = v;
          if (len > 1 && buf[v] === 0x2f) from++;
          inode.payload = cStr(readLatin1(buf, from, v + len));
        }
        continue;
      }
      if (key === XATTR_METACOPY) {
        if (type === S_IFREG && len === METACOPY_SIZE) inode.digest = buf.toString('hex', v + 4, v + len);
        continue;
      }
      if (whiteout && (key === XATTR_ESCAPED_WHITEOUT || key === XATTR_USER_WHITEOUT)) continue;
      if (key.startsWith(OVERLAY_PREFIX)) {
        if (!key.startsWith(OVERLAY_ESCAPED_PREFIX)) continue;
        key = OVERLAY_PREFIX + key.slice(OVERLAY_ESCAPED_PREFIX.length);
      }
      budget = this.addXattr(inode, ino, key, readLatin1(buf, v, v + len), budget);
    }
    if (whiteout) {
      inode.mode = S_IFCHR | (inode.mode & ~S_IFMT);
      inode.rdev = 0;
      inode.size = 0;
    }
    return (whiteout ? WHITEOUT : 0) | (markers && type === S_IFDIR ? MARKERS : 0);
  }

  addXattr(inode: Inode, ino: RawInode, key: string, value: string, budget: number): number {
    try {
      return setXattr(inode.xattrs, key, value, budget, 0xffff);
    } catch (e) {
      if (e instanceof RangeError) throw this.err(ErrorCode.BadXattr, `nid ${ino.nid}: ${e.message}`, ino.off);
      throw e;
    }
  }

  /** Read the xattr entry at `p` into scratch slot `i`; returns the next entry's offset. */
  readEntry(p: number, end: number, nid: number, i: number): number {
    const r = this.r;
    r.check(p, XATTR_ENTRY.SIZE, () => `nid ${nid}: xattr entry`);
    const E = XATTR_ENTRY.off;
    const nameLen = r.buf[p + E.nameLen];
    const index = r.buf[p + E.nameIndex];
    const valueSize = r.buf.readUInt16LE(p + E.valueSize);
    if (p + XATTR_ENTRY.SIZE + nameLen + valueSize > end) {
      throw this.err(ErrorCode.BadXattr, `nid ${nid}: xattr entry (${nameLen}-byte name, ${valueSize}-byte value) runs past its area`, p);
    }
    if (index & XATTR_LONG_PREFIX_BIT) throw this.err(ErrorCode.Unsupported, `nid ${nid}: long xattr name prefixes are not supported`, p);
    if (index >= XATTR_PREFIX_OF_INDEX.length) throw this.err(ErrorCode.BadXattr, `nid ${nid}: unknown xattr name index ${index}`, p);
    const nameAt = p + XATTR_ENTRY.SIZE;
    this.xKeys[i] = this.internKey(index, readLatin1(r.buf, nameAt, nameAt + nameLen));
    this.xVal[i] = nameAt + nameLen;
    this.xLen[i] = valueSize;
    return p + ((XATTR_ENTRY.SIZE + nameLen + valueSize + 3) & ~3);
  }

  /**
   * The entries of directory `ino` (blocks, then the inline tail), `.` and `..` left out, with
   * every offset and name checked. (A list, not a callback: the tree walks recurse through it,
   * and 2047 levels must fit the stack.)
   */
  readEntries(ino: RawInode): DirEntries {
    const out: DirEntries = { names: [], nids: [], types: [] };
    const { tailOff, tailSize, blocks } = this.dataRanges(ino);
    if (blocks > 0) {
      const start = ino.u * BLOCK_SIZE;
      this.r.check(start, blocks * BLOCK_SIZE, () => `nid ${ino.nid}: directory blocks`);
      for (let b = 0; b < blocks; b++) {
        let len = BLOCK_SIZE;
        if (ino.layout !== DataLayout.FlatInline && b + 1 === blocks && ino.size % BLOCK_SIZE !== 0) len = ino.size % BLOCK_SIZE;
        this.readDirBlock(ino, start + b * BLOCK_SIZE, len, out);
      }
    }
    if (tailSize > 0) this.readDirBlock(ino, tailOff, tailSize, out);
    return out;
  }

  /** The entries of one directory block (or inline tail) of `len` bytes at `base`. */
  private readDirBlock(ino: RawInode, base: number, len: number, out: DirEntries): void {
    const D = DIRENT.off;
    const buf = this.r.buf;
    this.r.check(base, len, () => `nid ${ino.nid}: directory block`);
    if (len < DIRENT.SIZE) throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: directory block of ${len} bytes`, base);
    const first = buf.readUInt16LE(base + D.nameoff);
    if (first < DIRENT.SIZE || first % DIRENT.SIZE !== 0 || first > len) {
      throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: bad first name offset ${first} in a ${len}-byte directory block`, base);
    }
    const n = first / DIRENT.SIZE;
    for (let i = 0; i < n; i++) {
      const at = base + i * DIRENT.SIZE;
      const nameoff = buf.readUInt16LE(at + D.nameoff);
      const next = i + 1 < n ? buf.readUInt16LE(at + DIRENT.SIZE + D.nameoff) : len;
      if (nameoff < first || next < nameoff || next > len) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: dirent ${i} has bad name offsets ${nameoff}..${next}`, at);
      }
      let name = readLatin1(buf, base + nameoff, base + next);
      if (i + 1 === n) name = cStr(name);
      if (name.length === 0 || name.length > MAX_NAME_LEN || name.includes('/') || name.includes('\0')) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: invalid entry name ${JSON.stringify(name)}`, ino.off);
      }
      if (name === '.' || name === '..') continue;
      const nidLo = buf.readUInt32LE(at + D.nid);
      const nidHi = buf.readUInt32LE(at + D.nid + 4);
      if (nidHi >= 0x200000) throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: entry ${name} has an out-of-range nid`, at);
      out.names.push(name);
      out.nids.push(nidHi * 0x100000000 + nidLo);
      out.types.push(buf[at + D.fileType]);
    }
  }

  /** The dirent's file type must be the inode's (a whiteout may say regular file). */
  checkFileType(dir: RawInode, name: string, fileType: number, mode: number, whiteout: boolean): void {
    const expected = FILE_TYPES.get(typeOf(mode));
    if (fileType !== expected && !(whiteout && fileType === FILE_TYPES.get(S_IFREG))) {
      throw this.err(ErrorCode.BadDirent, `nid ${dir.nid}: entry ${name} has file type ${fileType} but its inode is type ${expected}`, dir.off);
    }
  }

  /** Set by readNode: whether the inode it returned was seen before (a hardlink) / is a whiteout. */
  lastLink = false;
  lastWhiteout = false;

  /** Read an inode and (for directories) its subtree; null for a 0:0 char device. */
  readNode(nid: number, depth: number, filter: Set<string> | null): Inode | null {
    if (depth > MAX_DEPTH) throw this.err(ErrorCode.TooLarge, `directory tree deeper than ${MAX_DEPTH} levels`);
    const seen = nid < this.byNid.length ? this.byNid[nid] : undefined;
    if (seen) {
      if (typeOf(seen.mode) === S_IFDIR) throw this.err(ErrorCode.Cycle, `nid ${nid}: directory reached twice (hardlinked directory or cycle)`);
      this.lastLink = true;
      this.lastWhiteout = false;
      return seen;
    }
    const ino = this.readInode(nid);
    const type = typeOf(ino.mode);
    if (type === S_IFCHR && ino.u === 0 && !this.plain) return null;
    const inode = newInode(ino.mode);
    this.byNid[nid] = inode;
    this.nids?.set(inode, nid);
    const flags = this.fillInode(ino, inode);
    if (type === S_IFDIR) {
      const { names, nids, types } = this.readEntries(ino);
      for (let i = 0; i < names.length; i++) {
        const name = names[i];
        if (filter && !filter.has(name)) continue;
        const child = this.readNode(nids[i], depth + 1, null);
        if (child === null) continue; // a 0:0 character device: the mkcomposefs root whiteouts
        this.checkFileType(ino, name, types[i], child.mode, this.lastWhiteout);
        if (!addChild(inode, { name, inode: child, link: this.lastLink })) {
          throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: duplicate entry name ${JSON.stringify(name)}`, ino.off);
        }
      }
    }
    if (flags & MARKERS && inode.children!.some((d) => !d.link && typeOf(d.inode.mode) === S_IFCHR && d.inode.rdev === 0)) dropWhiteoutMarkers(inode);
    this.lastLink = false;
    this.lastWhiteout = (flags & WHITEOUT) !== 0;
    return inode;
  }

  /**
   * Everything of an inode but a directory's entries: fields, xattrs, symlink target, inline
   * content (or, for plain images, the data place). Returns readXattrs' flags.
   */
  fillInode(ino: RawInode, inode: Inode): number {
    const nid = ino.nid;
    const type = typeOf(ino.mode);
    inode.nlink = ino.nlink;
    inode.uid = ino.uid;
    inode.gid = ino.gid;
    inode.size = ino.size;
    inode.mtimeSec = ino.mtimeSec;
    inode.mtimeNsec = ino.mtimeNsec;
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = ino.u;
    const flags = this.readXattrs(ino, inode);

    if (type === S_IFLNK) {
      if (ino.size === 0 || ino.size >= PATH_MAX) throw this.err(ErrorCode.BadInode, `nid ${nid}: symlink target length ${ino.size}`, ino.off);
      if (ino.layout === DataLayout.FlatInline && ino.size >= BLOCK_SIZE) throw this.err(ErrorCode.BadInode, `nid ${nid}: inline symlink too long`, ino.off);
      const { tailOff, tailSize } = this.dataRanges(ino);
      let start = tailOff;
      if (tailSize === 0) {
        start = ino.u * BLOCK_SIZE;
        this.r.check(start, BLOCK_SIZE, () => `nid ${nid}: symlink block`);
      } else this.r.check(start, tailSize, () => `nid ${nid}: symlink`);
      const target = cStr(readLatin1(this.r.buf, start, start + ino.size));
      if (target.length === 0) throw this.err(ErrorCode.BadInode, `nid ${nid}: empty symlink target`, ino.off);
      inode.payload = target;
      inode.size = target.length;
    } else if (type === S_IFREG && ino.size > 0) {
      if (this.plain) {
        if (ino.layout === DataLayout.ChunkBased) throw this.err(ErrorCode.Unsupported, `nid ${nid}: chunk-based file in a plain image (a composefs image?)`, ino.off);
        const { tailOff, tailSize, blocks } = this.dataRanges(ino);
        const blkaddr = blocks > 0 ? ino.u : 0;
        if (blkaddr + blocks > this.blocks) throw this.err(ErrorCode.OutOfBounds, `nid ${nid}: data blocks ${blkaddr}+${blocks} past the image's ${this.blocks} blocks`, ino.off);
        this.data.set(inode, { blkaddr, nBlocks: blocks, tailOffset: tailOff, tailSize });
      } else if (ino.layout === DataLayout.ChunkBased) {
        if (ino.size > MAX_FILE_SIZE) throw this.err(ErrorCode.BadInode, `nid ${nid}: file size ${ino.size} too large`, ino.off);
      } else {
        if (ino.size > MAX_INLINE_CONTENT) throw this.err(ErrorCode.BadInode, `nid ${nid}: inline file of ${ino.size} bytes exceeds ${MAX_INLINE_CONTENT}`, ino.off);
        const { tailOff, tailSize, blocks } = this.dataRanges(ino);
        let content = '';
        if (blocks > 0) content = readLatin1(this.blockData(ino, blocks), 0, ino.size - tailSize);
        if (tailSize > 0) content += readLatin1(this.r.buf, tailOff, tailOff + tailSize);
        inode.content = content;
      }
    }
    return flags;
  }
}

/** A directory with whiteouts in it: its whiteouts markers are mkcomposefs's, not the input's. */
export function dropWhiteoutMarkers(dir: Inode): void {
  dir.xattrs = dir.xattrs.filter((x) => x.key !== XATTR_ESCAPED_WHITEOUTS_UNESCAPED && x.key !== XATTR_USER_WHITEOUTS);
}

/** Reassign hardlink ownership so that re-encoding the tree gives the image's inode order. */
function ownByImageOrder(root: Inode, nids: Map<Inode, number>): void {
  // Breadth-first over names; an inode is owned by the first name met when it is the next
  // inode in nid order among those not yet placed.
  const names: Dirent[] = [];
  const queue: Inode[] = [root];
  for (let i = 0; i < queue.length; i++) {
    for (const d of queue[i].children!) {
      names.push(d);
      if (!d.link && d.inode.children) queue.push(d.inode);
    }
  }
  const multi = new Map<Inode, Dirent[]>();
  for (const d of names) {
    const l = multi.get(d.inode);
    if (l) l.push(d);
    else multi.set(d.inode, [d]);
  }
  const order = [...nids.entries()].filter(([inode]) => multi.has(inode)).sort((a, b) => a[1] - b[1]);
  const placed = new Set<Inode>();
  let k = 0;
  const owner = new Map<Inode, Dirent>();
  for (const d of names) {
    if (placed.has(d.inode)) continue;
    while (k < order.length && placed.has(order[k][0])) k++;
    if (k < order.length && order[k][0] === d.inode) {
      owner.set(d.inode, d);
      placed.add(d.inode);
      k++;
    }
  }
  for (const [inode, ds] of multi) {
    if (ds.length < 2) continue;
    const own = owner.get(inode) ?? ds[0];
    for (const d of ds) d.link = d !== own;
  }
}

export function decodeImage(data: Uint8Array, opts: DecodeOptions = {}): DecodedImage {
  const { dec, rootNid } = openImage(data, opts);
  const r = dec.r;
  const plain = dec.plain;
  const filter = opts.filter ? new Set(opts.filter) : null;
  const root = dec.readNode(rootNid, 0, filter);
  if (!root || typeOf(root.mode) !== S_IFDIR) throw dec.err(ErrorCode.BadInode, `root nid ${rootNid} is not a directory`);
  if (dec.nids) ownByImageOrder(root, dec.nids);
  return {
    root,
    version: plain ? 0 : r.u32(CFS_HEADER.off.composefsVersion),
    flags: plain ? 0 : r.u32(CFS_HEADER.off.flags),
    buildTimeSec: dec.buildTimeSec,
    buildTimeNsec: dec.buildTimeNsec,
    inodeCount: r.u64(SUPERBLOCK_OFFSET + SUPERBLOCK.off.inos),
    blocks: dec.blocks,
    data: dec.data,
  };
}

/** Check the header and superblock; a decoder positioned on the image, and the root's nid. */
export function openImage(data: Uint8Array, opts: DecodeOptions): { dec: Decoder; rootNid: number } {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const plain = opts.plain === true;
  const dec = new Decoder(buf, opts.input, opts.owner === 'image', plain);
  const r = dec.r;
  if (buf.length > MAX_IMAGE_SIZE) throw dec.err(ErrorCode.TooLarge, `image of ${buf.length} bytes exceeds the ${MAX_IMAGE_SIZE}-byte limit`);
  if (buf.length < BLOCK_SIZE) throw dec.err(ErrorCode.OutOfBounds, `image too small (${buf.length} bytes; a composefs image is at least ${BLOCK_SIZE})`);
  const H = CFS_HEADER.off;
  if (!plain) {
    if (r.u32(H.magic) !== CFS_MAGIC) throw dec.err(ErrorCode.BadMagic, 'not a composefs image (bad composefs header magic)', 0);
    const hv = r.u32(H.version);
    if (hv !== CFS_HEADER_VERSION) throw dec.err(ErrorCode.Unsupported, `unsupported composefs header version ${hv}`, H.version);
  }
  const S = SUPERBLOCK.off;
  const sb = SUPERBLOCK_OFFSET;
  if (r.u32(sb + S.magic) !== EROFS_SUPER_MAGIC) throw dec.err(ErrorCode.BadMagic, 'bad EROFS superblock magic', sb);
  const blkszbits = r.u8(sb + S.blkszbits);
  if (blkszbits !== 12) throw dec.err(ErrorCode.Unsupported, `unsupported block size 2^${blkszbits}`, sb + S.blkszbits);
  const incompat = r.u32(sb + S.featureIncompat);
  if (incompat & ~KNOWN_INCOMPAT) throw dec.err(ErrorCode.Unsupported, `unsupported EROFS incompatible features 0x${incompat.toString(16)}`, sb + S.featureIncompat);
  dec.metaStart = r.u32(sb + S.metaBlkaddr) * BLOCK_SIZE;
  dec.xattrStart = r.u32(sb + S.xattrBlkaddr) * BLOCK_SIZE;
  if (dec.metaStart >= buf.length) throw dec.err(ErrorCode.OutOfBounds, `meta_blkaddr points past the end of the image`, sb + S.metaBlkaddr);
  if (dec.xattrStart >= buf.length) throw dec.err(ErrorCode.OutOfBounds, `xattr_blkaddr points past the end of the image`, sb + S.xattrBlkaddr);
  dec.buildTimeSec = BigInt.asIntN(64, r.u64(sb + S.buildTime));
  dec.buildTimeNsec = r.u32(sb + S.buildTimeNsec);
  dec.blocks = r.u32(sb + S.blocks);
  return { dec, rootNid: r.u16(sb + S.rootNid) };
}
