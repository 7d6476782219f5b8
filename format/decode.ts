/**
 * composefs image → tree, strict and bounded. Every offset, length, nid, block address, xattr
 * count and name length is checked against the image; directories are visited once (cycles and
 * directory hardlinks are errors); depth is capped. The result is what a dump line describes:
 * overlay xattrs are turned back into PAYLOAD/DIGEST/whiteouts as composefs-info does, except
 * where it is wrong (it over-reads redirects and takes an input `trusted.overlay.whiteout` for a
 * whiteout).
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
  /** Inodes in nid order (the image's breadth-first order), for 'image' ownership. */
  nids: Map<Inode, number>;
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
  check(off: number, len: number, what: string): void {
    if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > this.buf.length) {
      throw this.error(ErrorCode.OutOfBounds, `${what} (${len} bytes at ${off}) runs past the end of the image (${this.buf.length} bytes)`, Number.isSafeInteger(off) ? off : undefined);
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
  bytes(off: number, len: number, what: string): Buffer {
    this.check(off, len, what);
    return this.buf.subarray(off, off + len);
  }
}

interface RawInode {
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

const typeOf = (mode: number): number => mode & S_IFMT;

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return (z === -1 ? b : b.subarray(0, z)).toString('latin1');
}

class Decoder {
  readonly r: Reader;
  metaStart = 0;
  xattrStart = 0;
  buildTimeSec = 0n;
  buildTimeNsec = 0;
  /** nid → inode, for hardlinks; directories are recorded to reject cycles. */
  readonly byNid = new Map<number, Inode>();
  readonly nids = new Map<Inode, number>();

  constructor(buf: Buffer, input: string | undefined) {
    this.r = new Reader(buf, input);
  }

  err(code: ErrorCode, msg: string, offset?: number): CfsError {
    return this.r.error(code, msg, offset);
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
    let ino: RawInode;
    if (extended) {
      const I = INODE_EXTENDED.off;
      r.check(off, INODE_EXTENDED.SIZE, `nid ${nid}: extended inode`);
      const size = r.u64(off + I.size);
      if (size > BigInt(MAX_FILE_SIZE)) throw this.err(ErrorCode.BadInode, `nid ${nid}: size ${size} is implausible`, off);
      ino = {
        nid,
        off,
        mode: r.u16(off + I.mode),
        layout,
        size: Number(size),
        u: r.u32(off + I.u),
        xattrIcount: r.u16(off + I.xattrIcount),
        isize: INODE_EXTENDED.SIZE,
        nlink: r.u32(off + I.nlink),
        uid: r.u32(off + I.uid),
        gid: r.u32(off + I.gid),
        mtimeSec: BigInt.asIntN(64, r.u64(off + I.mtime)),
        mtimeNsec: r.u32(off + I.mtimeNsec),
      };
    } else {
      const I = INODE_COMPACT.off;
      ino = {
        nid,
        off,
        mode: r.u16(off + I.mode),
        layout,
        size: r.u32(off + I.size),
        u: r.u32(off + I.u),
        xattrIcount: r.u16(off + I.xattrIcount),
        isize: INODE_COMPACT.SIZE,
        nlink: r.u16(off + I.nlink),
        uid: r.u16(off + I.uid),
        gid: r.u16(off + I.gid),
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
      this.r.check(tailOff, tailSize, `nid ${ino.nid}: inline data`);
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

  /** The inode's xattrs as stored: inline entries first, then shared ones. */
  readXattrs(ino: RawInode): Xattr[] {
    const r = this.r;
    const size = this.xattrAreaSize(ino);
    const list: Xattr[] = [];
    if (size === 0) return list;
    const start = ino.off + ino.isize;
    r.check(start, size, `nid ${ino.nid}: xattr area`);
    const end = start + size;
    const shared = r.u8(start + XATTR_IBODY_HEADER.off.sharedCount);
    let p = start + XATTR_IBODY_HEADER.SIZE + shared * 4;
    if (p > end) throw this.err(ErrorCode.BadXattr, `nid ${ino.nid}: ${shared} shared xattr references do not fit the xattr area`, start);
    while (p + XATTR_ENTRY.SIZE < end) {
      const e = this.readEntry(p, end, ino.nid);
      list.push({ key: e.key, value: e.value });
      p += e.size;
    }
    for (let i = 0; i < shared; i++) {
      const ref = r.u32(start + XATTR_IBODY_HEADER.SIZE + i * 4);
      const at = this.xattrStart + ref * 4;
      const e = this.readEntry(at, r.size, ino.nid);
      list.push({ key: e.key, value: e.value });
    }
    return list;
  }

  readEntry(p: number, end: number, nid: number): { key: string; value: Buffer; size: number } {
    const r = this.r;
    r.check(p, XATTR_ENTRY.SIZE, `nid ${nid}: xattr entry`);
    const E = XATTR_ENTRY.off;
    const nameLen = r.u8(p + E.nameLen);
    const index = r.u8(p + E.nameIndex);
    const valueSize = r.u16(p + E.valueSize);
    const size = (XATTR_ENTRY.SIZE + nameLen + valueSize + 3) & ~3;
    if (p + XATTR_ENTRY.SIZE + nameLen + valueSize > end) {
      throw this.err(ErrorCode.BadXattr, `nid ${nid}: xattr entry (${nameLen}-byte name, ${valueSize}-byte value) runs past its area`, p);
    }
    if (index & XATTR_LONG_PREFIX_BIT) throw this.err(ErrorCode.Unsupported, `nid ${nid}: long xattr name prefixes are not supported`, p);
    if (index >= XATTR_PREFIX_OF_INDEX.length) throw this.err(ErrorCode.BadXattr, `nid ${nid}: unknown xattr name index ${index}`, p);
    const suffix = r.bytes(p + XATTR_ENTRY.SIZE, nameLen, 'xattr name');
    const key = XATTR_PREFIX_OF_INDEX[index] + cString(suffix);
    const value = Buffer.from(r.bytes(p + XATTR_ENTRY.SIZE + nameLen, valueSize, 'xattr value'));
    return { key, value, size };
  }

  readDirBlock(dir: Inode, ino: RawInode, block: Buffer, depth: number, filter: Set<string> | null): void {
    const D = DIRENT.off;
    if (block.length < DIRENT.SIZE) throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: directory block of ${block.length} bytes`, ino.off);
    const first = block.readUInt16LE(D.nameoff);
    if (first < DIRENT.SIZE || first % DIRENT.SIZE !== 0 || first > block.length) {
      throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: bad first name offset ${first} in a ${block.length}-byte directory block`, ino.off);
    }
    const n = first / DIRENT.SIZE;
    for (let i = 0; i < n; i++) {
      const at = i * DIRENT.SIZE;
      const nameoff = block.readUInt16LE(at + D.nameoff);
      const next = i + 1 < n ? block.readUInt16LE(at + DIRENT.SIZE + D.nameoff) : block.length;
      if (nameoff < first || next < nameoff || next > block.length) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: dirent ${i} has bad name offsets ${nameoff}..${next}`, ino.off);
      }
      let nameBytes = block.subarray(nameoff, next);
      if (i + 1 === n) {
        const z = nameBytes.indexOf(0);
        if (z !== -1) nameBytes = nameBytes.subarray(0, z);
      }
      const name = nameBytes.toString('latin1');
      if (name.length === 0 || name.length > MAX_NAME_LEN || name.includes('/') || name.includes('\0')) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: invalid entry name ${JSON.stringify(name)}`, ino.off);
      }
      if (name === '.' || name === '..') continue;
      if (filter && !filter.has(name)) continue;
      const nid64 = block.readBigUInt64LE(at + D.nid);
      if (nid64 > BigInt(Number.MAX_SAFE_INTEGER)) throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: entry ${name} has nid ${nid64} out of range`, ino.off);
      const childNid = Number(nid64);
      const fileType = block[at + D.fileType];
      const child = this.readNode(childNid, depth + 1, null);
      if (child === null) continue; // a 0:0 character device: the mkcomposefs root whiteouts
      const expected = FILE_TYPES.get(typeOf(child.inode.mode));
      if (fileType !== expected && !(child.whiteout && fileType === FILE_TYPES.get(S_IFREG))) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: entry ${name} has file type ${fileType} but its inode is type ${expected}`, ino.off);
      }
      if (!addChild(dir, { name, inode: child.inode, link: child.link })) {
        throw this.err(ErrorCode.BadDirent, `nid ${ino.nid}: duplicate entry name ${JSON.stringify(name)}`, ino.off);
      }
    }
  }

  /** Read an inode and (for directories) its subtree; null for a 0:0 char device. */
  readNode(nid: number, depth: number, filter: Set<string> | null): { inode: Inode; link: boolean; whiteout: boolean } | null {
    if (depth > MAX_DEPTH) throw this.err(ErrorCode.TooLarge, `directory tree deeper than ${MAX_DEPTH} levels`);
    const seen = this.byNid.get(nid);
    if (seen) {
      if (typeOf(seen.mode) === S_IFDIR) throw this.err(ErrorCode.Cycle, `nid ${nid}: directory reached twice (hardlinked directory or cycle)`);
      return { inode: seen, link: true, whiteout: false };
    }
    const ino = this.readInode(nid);
    const type = typeOf(ino.mode);
    if (type === S_IFCHR && ino.u === 0) return null;
    const inode = newInode(ino.mode, {
      nlink: ino.nlink,
      uid: ino.uid,
      gid: ino.gid,
      size: ino.size,
      mtimeSec: ino.mtimeSec,
      mtimeNsec: ino.mtimeNsec,
    });
    if (type === S_IFCHR || type === S_IFBLK) inode.rdev = ino.u;
    this.byNid.set(nid, inode);
    this.nids.set(inode, nid);
    const raw = this.readXattrs(ino);

    if (type === S_IFDIR) {
      const { tailOff, tailSize, blocks } = this.dataRanges(ino);
      if (blocks > 0) {
        const data = this.blockData(ino, blocks);
        for (let b = 0; b < blocks; b++) {
          let len = BLOCK_SIZE;
          if (ino.layout !== DataLayout.FlatInline && b + 1 === blocks && ino.size % BLOCK_SIZE !== 0) len = ino.size % BLOCK_SIZE;
          this.readDirBlock(inode, ino, data.subarray(b * BLOCK_SIZE, b * BLOCK_SIZE + len), depth, filter);
        }
      }
      if (tailSize > 0) this.readDirBlock(inode, ino, this.r.buf.subarray(tailOff, tailOff + tailSize), depth, filter);
    } else if (type === S_IFLNK) {
      if (ino.size === 0 || ino.size >= PATH_MAX) throw this.err(ErrorCode.BadInode, `nid ${nid}: symlink target length ${ino.size}`, ino.off);
      if (ino.layout === DataLayout.FlatInline && ino.size >= BLOCK_SIZE) throw this.err(ErrorCode.BadInode, `nid ${nid}: inline symlink too long`, ino.off);
      const { tailOff, tailSize } = this.dataRanges(ino);
      const target = tailSize > 0 ? this.r.bytes(tailOff, tailSize, 'symlink') : this.blockData(ino, 1).subarray(0, ino.size);
      inode.payload = cString(target);
      if (inode.payload.length === 0) throw this.err(ErrorCode.BadInode, `nid ${nid}: empty symlink target`, ino.off);
      inode.size = inode.payload.length;
    } else if (type === S_IFREG && ino.size > 0) {
      if (ino.layout === DataLayout.ChunkBased) {
        if (ino.size > MAX_FILE_SIZE) throw this.err(ErrorCode.BadInode, `nid ${nid}: file size ${ino.size} too large`, ino.off);
      } else {
        if (ino.size > MAX_INLINE_CONTENT) throw this.err(ErrorCode.BadInode, `nid ${nid}: inline file of ${ino.size} bytes exceeds ${MAX_INLINE_CONTENT}`, ino.off);
        const { tailOff, tailSize, blocks } = this.dataRanges(ino);
        const content = Buffer.alloc(ino.size);
        if (blocks > 0) this.blockData(ino, blocks).copy(content, 0, 0, ino.size - tailSize);
        if (tailSize > 0) this.r.buf.copy(content, ino.size - tailSize, tailOff, tailOff + tailSize);
        inode.content = content;
      }
    }

    let whiteout: boolean;
    try {
      whiteout = applyOverlayXattrs(inode, raw);
    } catch (e) {
      if (e instanceof RangeError) throw this.err(ErrorCode.BadXattr, `nid ${nid}: ${e.message}`, ino.off);
      throw e;
    }
    return { inode, link: false, whiteout };
  }
}

/**
 * Map the image's xattrs back to dump fields: redirect → payload, metacopy → digest, escaped
 * whiteout marks → a 0:0 char device, `trusted.overlay.overlay.X` → `trusted.overlay.X`, other
 * `trusted.overlay.*` dropped. Returns true for a whiteout.
 */
function applyOverlayXattrs(inode: Inode, raw: Xattr[]): boolean {
  const type = typeOf(inode.mode);
  const has = (k: string): Xattr | undefined => raw.find((x) => x.key === k);
  const wo = has(XATTR_ESCAPED_WHITEOUT);
  const uwo = has(XATTR_USER_WHITEOUT);
  // A whiteout written by mkcomposefs: an empty regular file with both markers, empty.
  const whiteout = type === S_IFREG && inode.size === 0 && !!wo && !!uwo && wo.value.length === 0 && uwo.value.length === 0;
  const dirMarks =
    type === S_IFDIR &&
    !!inode.children?.some((d) => !d.link && typeOf(d.inode.mode) === S_IFCHR && d.inode.rdev === 0) &&
    raw.some((x) => x.key === XATTR_ESCAPED_WHITEOUTS);
  let budget = 0;
  for (const x of raw) {
    const k = x.key;
    if (k === XATTR_REDIRECT) {
      if (type === S_IFREG) {
        let v = x.value;
        if (v.length > 1 && v[0] === 0x2f) v = v.subarray(1);
        inode.payload = cString(v);
      }
      continue;
    }
    if (k === XATTR_METACOPY) {
      if (type === S_IFREG && x.value.length === METACOPY_SIZE) inode.digest = Buffer.from(x.value.subarray(4));
      continue;
    }
    if (whiteout && (k === XATTR_ESCAPED_WHITEOUT || k === XATTR_USER_WHITEOUT)) continue;
    if (dirMarks && (k === XATTR_ESCAPED_WHITEOUTS || k === XATTR_USER_WHITEOUTS)) continue;
    let key = k;
    if (k.startsWith(OVERLAY_PREFIX)) {
      if (!k.startsWith(OVERLAY_ESCAPED_PREFIX)) continue;
      key = OVERLAY_PREFIX + k.slice(OVERLAY_ESCAPED_PREFIX.length);
    }
    budget = setXattr(inode.xattrs, key, x.value, budget, 0xffff);
  }
  if (whiteout) {
    inode.mode = S_IFCHR | (inode.mode & ~S_IFMT);
    inode.rdev = 0;
    inode.size = 0;
  }
  return whiteout;
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
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const dec = new Decoder(buf, opts.input);
  const r = dec.r;
  if (buf.length > MAX_IMAGE_SIZE) throw dec.err(ErrorCode.TooLarge, `image of ${buf.length} bytes exceeds the ${MAX_IMAGE_SIZE}-byte limit`);
  if (buf.length < BLOCK_SIZE) throw dec.err(ErrorCode.OutOfBounds, `image too small (${buf.length} bytes; a composefs image is at least ${BLOCK_SIZE})`);
  const H = CFS_HEADER.off;
  if (r.u32(H.magic) !== CFS_MAGIC) throw dec.err(ErrorCode.BadMagic, 'not a composefs image (bad composefs header magic)', 0);
  const hv = r.u32(H.version);
  if (hv !== CFS_HEADER_VERSION) throw dec.err(ErrorCode.Unsupported, `unsupported composefs header version ${hv}`, H.version);
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
  const rootNid = r.u16(sb + S.rootNid);
  const filter = opts.filter ? new Set(opts.filter) : null;
  const root = dec.readNode(rootNid, 0, filter);
  if (!root || typeOf(root.inode.mode) !== S_IFDIR) throw dec.err(ErrorCode.BadInode, `root nid ${rootNid} is not a directory`);
  if (opts.owner === 'image') ownByImageOrder(root.inode, dec.nids);
  return {
    root: root.inode,
    version: r.u32(H.composefsVersion),
    flags: r.u32(H.flags),
    buildTimeSec: dec.buildTimeSec,
    buildTimeNsec: dec.buildTimeNsec,
    inodeCount: r.u64(sb + S.inos),
    nids: dec.nids,
  };
}
