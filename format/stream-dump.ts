/**
 * `composefs-info dump` text of an image, printed while the image is walked (no tree kept), and
 * split in two parts at a place in the walk so that two threads can print one half each.
 *
 * Anything the walk does not take on exactly (entries out of byte order, a hardlink whose owner
 * it did not note, a directory's whiteout markers next to hardlinks, any error) is left to
 * decodeImage + printDump, which also report the errors. The two parts are exact when no inode
 * is reached from both; `dumpPart` returns which inodes each part placed, for the caller to check.
 */
import { CfsError } from './errors.js';
import { dumpLine, printDump } from './dumpfile.js';
import { BLOCK_SIZE, DIRENT, DataLayout, FILE_TYPES, MAX_DEPTH, S_IFCHR, S_IFDIR, S_IFREG } from './layout.js';
import { type Inode, newInode } from './tree.js';
import { type Decoder, type RawInode, MARKERS, WHITEOUT, decodeImage, dropWhiteoutMarkers, openImage, typeOf } from './decode.js';

/** The walk met something only the tree decoder handles (or reports) exactly. */
class Bail extends Error {}

export function dumpImage(data: Uint8Array, opts: { input?: string } = {}): Buffer[] {
  try {
    return new Walk(data, opts.input).whole();
  } catch (e) {
    if (!(e instanceof Bail) && !(e instanceof CfsError)) throw e;
  }
  return treeDump(data, opts.input);
}

/** The dump through the tree decoder: exact in every case, and the one that reports errors. */
export function treeDump(data: Uint8Array, input?: string): Buffer[] {
  const chunks: Buffer[] = [];
  printDump(decodeImage(data, { input }).root, (c) => chunks.push(Buffer.from(c, 'latin1')));
  return chunks;
}

/**
 * A place in the depth-first walk: from the root down, the index (among a directory's entries
 * without `.` and `..`) of the subdirectory the place is in; the last index is the first entry
 * of the second part.
 */
export type DumpCut = number[];

/**
 * Where to cut the dump so that the first part has about `share` of the entries, counted from
 * directory entry headers alone; null when the image is too odd to tell (it is dumped whole).
 */
export function dumpCut(data: Uint8Array, input: string | undefined, share: number): DumpCut | null {
  try {
    const { dec, rootNid } = openImage(data, { input });
    const sizes = subtreeSizes(dec, rootNid);
    if (!sizes) return null;
    let target = Math.floor((sizes.get(rootNid) ?? 0) * share);
    const cut: DumpCut = [];
    let ino = dec.readInode(rootNid);
    for (;;) {
      const { nids, types } = dec.readEntries(ino);
      let j = 0;
      for (; j < nids.length; j++) {
        const w = 1 + (types[j] === FT_DIR ? (sizes.get(nids[j]) ?? 0) : 0);
        if (w > target) break;
        target -= w;
      }
      cut.push(j);
      // inside this subdirectory: its line and part of what is below it go first
      if (j === nids.length || types[j] !== FT_DIR || target < 2 || cut.length >= MAX_DEPTH) return cut;
      target--;
      ino = dec.readInode(nids[j]);
      if (typeOf(ino.mode) !== S_IFDIR) return null;
    }
  } catch (e) {
    if (e instanceof CfsError) return null;
    throw e;
  }
}

/**
 * One part of the dump: 'head' everything before the cut, 'tail' the rest. `placed` marks each
 * nid the part printed as an inode of its own (not as a hardlink to an earlier name); the parts
 * join into the whole dump exactly when no nid is marked by both. null for anything the whole
 * dump would take to the tree decoder (then dump it whole).
 */
export function dumpPart(data: Uint8Array, input: string | undefined, cut: DumpCut, part: 'head' | 'tail'): { chunks: Buffer[]; placed: Uint8Array } | null {
  try {
    const w = new Walk(data, input);
    const chunks = part === 'head' ? w.head(cut) : w.tail(cut);
    return { chunks, placed: w.seen };
  } catch (e) {
    if (e instanceof Bail || e instanceof CfsError) return null;
    throw e;
  }
}

/** Whether the two parts' `placed` marks meet (then the parts are not the whole dump). */
export function partsOverlap(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== 0 && b[i] !== 0) return true;
  return false;
}

const FT_DIR = FILE_TYPES.get(S_IFDIR)!;

/**
 * Entries below each directory (by nid, the directory's own line not counted), read from
 * dirent headers only; null when a directory is reached twice or anything does not parse.
 */
function subtreeSizes(dec: Decoder, rootNid: number): Map<number, number> | null {
  const buf = dec.r.buf;
  const own = new Map<number, number>();
  const order: number[] = []; // directories in preorder
  const parent: number[] = [];
  // (nid, index of the parent in `order`) pairs, flat: an image can list millions of entries
  const stack: number[] = [rootNid, -1];
  while (stack.length) {
    const up = stack.pop()!;
    const nid = stack.pop()!;
    if (own.has(nid) || order.length > dec.nidCount) return null;
    const ino = dec.readInode(nid);
    if (typeOf(ino.mode) !== S_IFDIR) return null;
    const me = order.length;
    order.push(nid);
    parent.push(up);
    let count = 0;
    const block = (base: number, len: number): void => {
      dec.r.check(base, len, 'directory block');
      const first = len >= DIRENT.SIZE ? buf.readUInt16LE(base + DIRENT.off.nameoff) : 0;
      if (first < DIRENT.SIZE || first % DIRENT.SIZE !== 0 || first > len) throw new Bail();
      const n = first / DIRENT.SIZE;
      for (let i = 0; i < n; i++) {
        const at = base + i * DIRENT.SIZE;
        if (buf[at + DIRENT.off.fileType] === FT_DIR) {
          const nameAt = base + buf.readUInt16LE(at + DIRENT.off.nameoff);
          const end = i + 1 < n ? base + buf.readUInt16LE(at + DIRENT.SIZE + DIRENT.off.nameoff) : base + len;
          // `.` and `..` (a last name may be followed by NULs)
          const c1 = nameAt + 1 < end ? buf[nameAt + 1] : 0;
          const c2 = nameAt + 2 < end ? buf[nameAt + 2] : 0;
          if (nameAt < end && buf[nameAt] === 0x2e && (c1 === 0 || (c1 === 0x2e && c2 === 0))) continue;
          stack.push(buf.readUInt32LE(at + DIRENT.off.nid + 4) * 2 ** 32 + buf.readUInt32LE(at + DIRENT.off.nid), me);
        }
        count++;
      }
    };
    try {
      const { tailOff, tailSize, blocks } = dec.dataRanges(ino);
      for (let b = 0; b < blocks; b++) {
        let len = BLOCK_SIZE;
        if (ino.layout !== DataLayout.FlatInline && b + 1 === blocks && ino.size % BLOCK_SIZE !== 0) len = ino.size % BLOCK_SIZE;
        block(ino.u * BLOCK_SIZE + b * BLOCK_SIZE, len);
      }
      if (tailSize > 0) block(tailOff, tailSize);
    } catch (e) {
      if (e instanceof Bail || e instanceof CfsError) return null;
      throw e;
    }
    own.set(nid, count);
  }
  // children come after their parents in preorder: add each subtree into its parent's
  const sizes = new Float64Array(order.length);
  for (let i = order.length - 1; i >= 0; i--) {
    sizes[i] += own.get(order[i])!;
    if (parent[i] >= 0) sizes[parent[i]] += sizes[i];
  }
  return new Map(order.map((nid, i) => [nid, sizes[i]]));
}

/** One walk over an image, printing dump lines into 64 KiB chunks. */
class Walk {
  private readonly dec: Decoder;
  private readonly rootNid: number;
  /** Per nid: 1 = placed, 2 = a directory placed. */
  readonly seen: Uint8Array;
  private readonly owners = new Map<number, string>();
  private readonly inode = newInode(0);
  private readonly probe = newInode(0);
  // text is kept as bytes: strings of it would stay alive, as many small ones, until the end
  private readonly chunks: Buffer[] = [];
  private pending = '';

  constructor(data: Uint8Array, input: string | undefined) {
    const { dec, rootNid } = openImage(data, { input });
    this.dec = dec;
    this.rootNid = rootNid;
    this.seen = new Uint8Array(dec.nidCount);
  }

  whole(): Buffer[] {
    const root = this.root(true);
    this.walk(root, this.dec.readEntries(root), 0, '', 0, Infinity);
    return this.finish();
  }

  head(cut: DumpCut): Buffer[] {
    let dir = this.root(true);
    let path = '';
    for (let k = 0; ; k++) {
      const entries = this.dec.readEntries(dir);
      this.walk(dir, entries, k, path, 0, cut[k]);
      if (k + 1 === cut.length) break;
      // the subdirectory the cut is in: its line here, the rest of it in the tail
      const [child, p] = this.enterCutDir(dir, entries, cut[k], k, path);
      this.seen[child.nid] = 2;
      this.emitDir(child, this.fill(child, this.inode), p);
      dir = child;
      path = p;
    }
    return this.finish();
  }

  tail(cut: DumpCut): Buffer[] {
    const dirs: [RawInode, ReturnType<Decoder['readEntries']>, string][] = [];
    let dir = this.root(false);
    let path = '';
    for (let k = 0; k < cut.length; k++) {
      const entries = this.dec.readEntries(dir);
      dirs.push([dir, entries, path]);
      if (k + 1 < cut.length) [dir, path] = this.enterCutDir(dir, entries, cut[k], k, path);
    }
    for (let k = cut.length - 1; k >= 0; k--) {
      const [d, entries, p] = dirs[k];
      this.walk(d, entries, k, p, k + 1 === cut.length ? cut[k] : cut[k] + 1, Infinity);
    }
    return this.finish();
  }

  private root(print: boolean): RawInode {
    const root = this.dec.readInode(this.rootNid);
    if (typeOf(root.mode) !== S_IFDIR || this.rootNid >= this.seen.length) throw new Bail();
    if (print) {
      this.seen[this.rootNid] = 2;
      this.emitDir(root, this.fill(root, this.inode), '/');
    }
    return root;
  }

  /** The directory entry `i` of `dir` names (placed by the head), and its path. */
  private enterCutDir(dir: RawInode, entries: ReturnType<Decoder['readEntries']>, i: number, depth: number, path: string): [RawInode, string] {
    if (depth + 1 >= MAX_DEPTH || i >= entries.nids.length) throw new Bail();
    const nid = entries.nids[i];
    if (nid >= this.seen.length || this.seen[nid]) throw new Bail();
    const child = this.dec.readInode(nid);
    if (typeOf(child.mode) !== S_IFDIR) throw new Bail();
    this.dec.checkFileType(dir, entries.names[i], entries.types[i], child.mode, false);
    if (i > 0 && !(entries.names[i - 1] < entries.names[i])) throw new Bail();
    return [child, `${path}/${entries.names[i]}`];
  }

  private fill(ino: RawInode, into: Inode): number {
    into.mode = ino.mode;
    into.rdev = 0;
    into.payload = null;
    into.content = null;
    into.digest = null;
    into.xattrs = [];
    return this.dec.fillInode(ino, into);
  }

  private emit(path: string, linkPath: string | null): void {
    this.pending += dumpLine(path, this.inode, linkPath);
    if (this.pending.length > 65536) {
      this.chunks.push(Buffer.from(this.pending, 'latin1'));
      this.pending = '';
    }
  }

  private finish(): Buffer[] {
    if (this.pending) this.chunks.push(Buffer.from(this.pending, 'latin1'));
    this.pending = '';
    return this.chunks;
  }

  /** A directory's line: its whiteout markers go when one of its entries is a whiteout. */
  private emitDir(ino: RawInode, flags: number, path: string): void {
    if (flags & MARKERS) {
      let whiteouts = false;
      for (const nid of this.dec.readEntries(ino).nids) {
        if (nid >= this.seen.length || this.seen[nid]) throw new Bail();
        const c = this.dec.readInode(nid);
        if (c.nlink > 1 && typeOf(c.mode) !== S_IFDIR) throw new Bail();
        if (!whiteouts && typeOf(c.mode) === S_IFREG && c.size === 0 && this.fill(c, this.probe) & WHITEOUT) whiteouts = true;
      }
      if (whiteouts) dropWhiteoutMarkers(this.inode);
    }
    this.emit(path, null);
  }

  /** Entries [from, to) of a directory, each subdirectory walked whole. */
  private walk(dirIno: RawInode, entries: ReturnType<Decoder['readEntries']>, depth: number, path: string, from: number, to: number): void {
    if (depth >= MAX_DEPTH) throw new Bail();
    const { names, nids, types } = entries;
    const seen = this.seen;
    const end = Math.min(to, names.length);
    for (let i = from; i < end; i++) {
      const name = names[i];
      const nid = nids[i];
      if (i > 0 && !(names[i - 1] < name)) throw new Bail();
      const p = `${path}/${name}`;
      if (nid >= seen.length) throw new Bail();
      if (seen[nid]) {
        const owner = this.owners.get(nid);
        if (seen[nid] === 2 || owner === undefined) throw new Bail();
        this.fill(this.dec.readInode(nid), this.inode);
        this.dec.checkFileType(dirIno, name, types[i], this.inode.mode, false);
        this.emit(p, owner);
        continue;
      }
      const ino = this.dec.readInode(nid);
      const type = typeOf(ino.mode);
      if (type === S_IFCHR && ino.u === 0) continue; // the root whiteouts mkcomposefs adds
      seen[nid] = type === S_IFDIR ? 2 : 1;
      const flags = this.fill(ino, this.inode);
      this.dec.checkFileType(dirIno, name, types[i], this.inode.mode, (flags & WHITEOUT) !== 0);
      if (type === S_IFDIR) {
        this.emitDir(ino, flags, p);
        this.walk(ino, this.dec.readEntries(ino), depth + 1, p, 0, Infinity);
      } else {
        if (ino.nlink > 1) this.owners.set(nid, p);
        this.emit(p, null);
      }
    }
  }
}
