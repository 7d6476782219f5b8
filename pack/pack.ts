/**
 * cfs-pack: a tree (a directory, or a composefs image with its objects) into one self-contained
 * EROFS image whose regular files carry their data. The format core lays out the metadata
 * (encodePacked); here the file contents are streamed into their blocks and inline tails, and the
 * whole image appears under its name only once complete (temp file + rename).
 *
 * Identical contents are stored once: files of the same size (with at least one full block) are
 * hashed (fs-verity SHA-256, on worker threads) and equal digests share blocks. Image input
 * already knows its digests (or object paths).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BLOCK_SIZE,
  CfsError,
  ErrorCode,
  type Inode,
  type PackedData,
  S_IFCHR,
  S_IFMT,
  S_IFREG,
  XATTR_OPAQUE,
  XATTR_USER_OPAQUE,
  decodeImage,
  encodePacked,
} from '../format/index.js';
import { writeAtomicAsync } from '../cas/atomic.js';
import { isStoreRoot } from '../cas/store.js';
import { scanDirectory, type ScanOptions } from '../writer/from-dir.js';
import { HashPool, defaultThreads } from '../cas/hash-pool.js';

/** A tree to pack and where its regular files' bytes are: inline content or this file. */
export interface PackSource {
  root: Inode;
  input: string;
  entries: number;
  fileOf: Map<Inode, Buffer>;
  /** Known content keys (image input: digests or object paths); else same-size files are hashed. */
  keyOf?: (inode: Inode) => string | null;
}

export interface PackOptions {
  threads?: number;
  /** Called now and then with a progress line. */
  progress?: (line: () => string) => void;
}

export interface PackResult {
  entries: number;
  inodes: number;
  /** Bytes of file data written (each distinct content once). */
  dataBytes: number;
  dedupFiles: number;
  dedupBytes: number;
  imageBytes: number;
}

const COPY_CHUNK = 1 << 20;
/** Let signal handlers run after this many bytes copied. */
const YIELD_BYTES = 64 << 20;

const isRegular = (inode: Inode): boolean => (inode.mode & S_IFMT) === S_IFREG;

/** Every distinct inode of the tree (hardlinked names once), depth first. */
function* inodesOf(root: Inode): Generator<Inode> {
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    yield n;
    if (n.children) for (let i = n.children.length - 1; i >= 0; i--) if (!n.children[i].link) stack.push(n.children[i].inode);
  }
}

/** Read a directory into a PackSource (hardlinks kept as such). */
export function sourceFromDirectory(dir: string, opts: Omit<ScanOptions, 'hardlinks' | 'onExternal'>): PackSource {
  const scan = scanDirectory(dir, { ...opts, hardlinks: true });
  const fileOf = new Map<Inode, Buffer>();
  for (const f of scan.external) fileOf.set(f.inode, f.path);
  return { root: scan.root, input: dir, entries: scan.entries, fileOf };
}

/** A composefs image's tree, its backing files found in the object directories `bases`. */
export function sourceFromImage(image: string, data: Buffer, bases: string[], opts: { useEpoch?: boolean } = {}): PackSource {
  const { root, version } = decodeImage(data, { input: image });
  const dirs = bases.map((b) => (isStoreRoot(b) ? path.join(b, 'objects') : b));
  const fileOf = new Map<Inode, Buffer>();
  const missing: string[] = [];
  let entries = 1;
  for (const n of inodesOf(root)) {
    entries += n.children?.length ?? 0;
    if (opts.useEpoch) {
      n.mtimeSec = 0n;
      n.mtimeNsec = 0;
    }
    if (version >= 1 && n.children?.some((d) => isWhiteout(d.inode))) dropOpaqueMarks(n);
    if (!isRegular(n) || n.size === 0 || n.content !== null) continue;
    const rel = (n.payload ?? '').replace(/^\/+/, '');
    // a payload names a file below a base directory, never one outside it
    if (rel.split('/').includes('..')) throw new CfsError(ErrorCode.InvalidTree, `backing file path ${JSON.stringify(rel)} leaves the base directory`, { input: image });
    const found = rel ? dirs.map((d) => path.join(d, rel)).find((p) => fs.existsSync(p)) : undefined;
    if (found) fileOf.set(n, Buffer.from(found));
    else missing.push(rel || '(no payload)');
  }
  if (missing.length) {
    const where = dirs.length ? `in ${dirs.join(', ')}` : '(give --store or --base)';
    throw new CfsError(ErrorCode.Io, `${missing.length} backing file(s) not found ${where}, e.g. ${missing.slice(0, 3).join(', ')}`, { input: image });
  }
  const keyOf = (n: Inode): string | null => n.digest ?? (n.payload ? `path:${n.payload}` : null);
  return { root, input: image, entries, fileOf, keyOf };
}

const isWhiteout = (n: Inode): boolean => (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;

/** The `opaque=x` pair a version-1 composefs image adds to directories with whiteouts. */
function dropOpaqueMarks(dir: Inode): void {
  const marks = dir.xattrs.filter((x) => (x.key === XATTR_OPAQUE || x.key === XATTR_USER_OPAQUE) && x.value === 'x');
  if (marks.length === 2) dir.xattrs = dir.xattrs.filter((x) => !marks.includes(x));
}

/** Digests of files whose size another file shares (only those can be duplicates). */
async function dedupKeys(src: PackSource, opts: PackOptions): Promise<Map<Inode, string>> {
  const bySize = new Map<number, Inode[]>();
  for (const [inode] of src.fileOf) {
    if (inode.size <= BLOCK_SIZE / 2) continue; // all of it inline: nothing to share
    const l = bySize.get(inode.size);
    if (l) l.push(inode);
    else bySize.set(inode.size, [inode]);
  }
  const candidates = [...bySize.values()].filter((l) => l.length > 1).flat();
  const keys = new Map<Inode, string>();
  if (candidates.length === 0) return keys;
  const failed: string[] = [];
  let done = 0;
  const pool = new HashPool(Math.min(opts.threads ?? defaultThreads(), candidates.length), (i, r) => {
    const inode = candidates[i];
    if (r.digest === undefined) failed.push(`${src.fileOf.get(inode)!.toString('latin1')}: ${r.code ?? ''} ${r.error}`);
    else keys.set(inode, r.digest);
    done++;
    opts.progress?.(() => `hashing same-size files: ${done}/${candidates.length}`);
  });
  try {
    for (const inode of candidates) pool.submit(src.fileOf.get(inode)!, inode.size);
    await pool.drain();
  } finally {
    await pool.close();
  }
  if (failed.length) throw new CfsError(ErrorCode.Io, `cannot read ${failed.length} file(s): ${failed.slice(0, 3).join('; ')}`, { input: src.input });
  return keys;
}

/** Copy `len` bytes from `inFd` at `inPos` to `outFd` at `outPos`; returns the bytes read (< len at EOF). */
export function copyRange(inFd: number, inPos: number, outFd: number, outPos: number, len: number, buf: Buffer): number {
  let done = 0;
  while (done < len) {
    const n = fs.readSync(inFd, buf, 0, Math.min(buf.length, len - done), inPos + done);
    if (n === 0) break;
    let w = 0;
    while (w < n) w += fs.writeSync(outFd, buf, w, n - w, outPos + done + w);
    done += n;
  }
  return done;
}

/** Write one content into its blocks (from `fd`) and its tail bytes into `meta`. */
function writeContent(d: PackedData, src: PackSource, out: number, meta: Buffer, buf: Buffer): void {
  const head = d.size - d.tailSize;
  const placeTail = (tail: Buffer): void => {
    for (const off of d.tailOffsets) tail.copy(meta, off);
  };
  if (d.inode.content !== null) {
    const bytes = Buffer.from(d.inode.content, 'latin1');
    if (head > 0) fs.writeSync(out, bytes, 0, head, d.blkaddr * BLOCK_SIZE);
    placeTail(bytes.subarray(head));
    return;
  }
  const file = src.fileOf.get(d.inode)!;
  const fd = fs.openSync(file, 'r');
  try {
    const changed = (): never => {
      throw new CfsError(ErrorCode.Io, `changed while packing (expected ${d.size} bytes)`, { input: file.toString('latin1') });
    };
    if (copyRange(fd, 0, out, d.blkaddr * BLOCK_SIZE, head, buf) !== head) changed();
    const tail = Buffer.alloc(d.tailSize + 1);
    if (fs.readSync(fd, tail, 0, tail.length, head) !== d.tailSize) changed();
    placeTail(tail.subarray(0, d.tailSize));
  } finally {
    fs.closeSync(fd);
  }
}

/** Pack `src` into the image file `output`. */
export async function pack(src: PackSource, output: string, opts: PackOptions = {}): Promise<PackResult> {
  const keys = src.keyOf ? null : await dedupKeys(src, opts);
  const keyOf = src.keyOf ?? ((n: Inode): string | null => keys!.get(n) ?? null);
  const img = encodePacked(src.root, { input: src.input, dataKey: keyOf });
  const total = img.data.reduce((s, d) => s + d.size, 0);
  let written = 0;
  let sinceYield = 0;
  await writeAtomicAsync(path.resolve(output), async (out) => {
    const buf = Buffer.allocUnsafe(COPY_CHUNK);
    for (const d of img.data) {
      writeContent(d, src, out, img.meta, buf);
      written += d.size;
      sinceYield += d.size;
      if (sinceYield >= YIELD_BYTES) {
        sinceYield = 0;
        opts.progress?.(() => `writing: ${Math.floor((100 * written) / total)}% of ${(total / 2 ** 20).toFixed(1)} MiB`);
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    fs.writeSync(out, img.meta, 0, img.meta.length, 0);
    fs.ftruncateSync(out, img.totalBlocks * BLOCK_SIZE);
  });
  return {
    entries: src.entries,
    inodes: img.inodes,
    dataBytes: total,
    dedupFiles: img.dedupFiles,
    dedupBytes: img.dedupBytes,
    imageBytes: img.totalBlocks * BLOCK_SIZE,
  };
}
