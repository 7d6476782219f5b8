/**
 * cfs-pack --unpack: an image back into a directory, exactly: names, modes, owners, mtimes (to
 * the nanosecond), xattrs, hardlinks, devices. The image is a packed one (file data read from its
 * blocks; only its metadata part is held in memory), a plain EROFS image of up to 2 GiB, or a
 * composefs image whose backing files are in the object directories given. The tree is built in a
 * temp directory beside DIR and renamed to DIR once complete.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BLOCK_SIZE,
  CFS_MAGIC,
  CfsError,
  type DataPlace,
  EROFS_SUPER_MAGIC,
  ErrorCode,
  type Inode,
  MAX_IMAGE_SIZE,
  PACK_HEADER,
  PACK_MAGIC,
  PACK_VERSION,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SUPERBLOCK,
  SUPERBLOCK_OFFSET,
  decodeImage,
} from '../format/index.js';
import { removeOnSignal, tmpName } from '../cas/atomic.js';
import { mknod, setTimes } from '../cas/sys.js';
import { writeXattr } from '../cas/xattrs.js';
import { copyRange, sourceFromImage } from './pack.js';

export interface UnpackOptions {
  /** Object directories (or cfs-cas store roots) for a composefs image. */
  bases?: string[];
  progress?: (line: () => string) => void;
}

export interface UnpackResult {
  kind: 'packed' | 'erofs' | 'composefs';
  entries: number;
  bytes: number;
}

const SLASH = Buffer.from('/');
const COPY_CHUNK = 1 << 20;

/** Where each regular file's bytes come from. */
interface Contents {
  /** Packed / plain EROFS: places in the image. */
  places?: Map<Inode, DataPlace>;
  meta?: Buffer;
  imageFd?: number;
  /** composefs: backing files. */
  fileOf?: Map<Inode, Buffer>;
}

function readAt(fd: number, len: number, pos: number, image: string): Buffer {
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new CfsError(ErrorCode.OutOfBounds, `image ends at ${pos + got}, ${len - got} bytes short`, { input: image });
    got += n;
  }
  return buf;
}

/** Decode the image, reading no more of it than its metadata where that is known. */
function openImage(image: string, fd: number, bases: string[]): { kind: UnpackResult['kind']; root: Inode; contents: Contents } {
  const size = fs.fstatSync(fd).size;
  const fail = (code: ErrorCode, msg: string): never => {
    throw new CfsError(code, msg, { input: image });
  };
  if (size < BLOCK_SIZE) fail(ErrorCode.OutOfBounds, `image too small (${size} bytes)`);
  const head = readAt(fd, BLOCK_SIZE, 0, image);
  const whole = (): Buffer => (size > MAX_IMAGE_SIZE ? fail(ErrorCode.TooLarge, `image of ${size} bytes exceeds the ${MAX_IMAGE_SIZE}-byte limit`) : readAt(fd, size, 0, image));
  if (head.readUInt32LE(0) === CFS_MAGIC) {
    const src = sourceFromImage(image, whole(), bases);
    return { kind: 'composefs', root: src.root, contents: { fileOf: src.fileOf } };
  }
  if (head.readUInt32LE(SUPERBLOCK_OFFSET + SUPERBLOCK.off.magic) !== EROFS_SUPER_MAGIC) fail(ErrorCode.BadMagic, 'not a cfs-pack, composefs or EROFS image');
  let kind: UnpackResult['kind'] = 'erofs';
  let meta: Buffer;
  if (head.readUInt32LE(PACK_HEADER.off.magic) === PACK_MAGIC) {
    const version = head.readUInt32LE(PACK_HEADER.off.version);
    if (version !== PACK_VERSION) fail(ErrorCode.Unsupported, `unsupported cfs-pack header version ${version}`);
    const metaBytes = head.readUInt32LE(PACK_HEADER.off.metaBlocks) * BLOCK_SIZE;
    if (metaBytes > Math.min(size, MAX_IMAGE_SIZE)) fail(ErrorCode.OutOfBounds, `metadata of ${metaBytes} bytes does not fit the image (${size} bytes)`);
    meta = readAt(fd, metaBytes, 0, image);
    kind = 'packed';
  } else meta = whole();
  const dec = decodeImage(meta, { input: image, plain: true });
  if (dec.blocks * BLOCK_SIZE > size) fail(ErrorCode.OutOfBounds, `image is ${size} bytes, its superblock says ${dec.blocks} blocks`);
  return { kind, root: dec.root, contents: { places: dec.data, meta, imageFd: fd } };
}

/** Unpack `image` into the directory `dest` (absent, or empty). */
export function unpack(image: string, dest: string, opts: UnpackOptions = {}): UnpackResult {
  const target = path.resolve(dest);
  const st = fs.statSync(target, { throwIfNoEntry: false });
  if (st && !(st.isDirectory() && fs.readdirSync(target).length === 0)) {
    throw new CfsError(ErrorCode.Usage, 'exists and is not an empty directory', { input: dest });
  }
  const fd = fs.openSync(image, 'r');
  try {
    const { kind, root, contents } = openImage(image, fd, opts.bases ?? []);
    const tmp = tmpName(path.dirname(target));
    fs.mkdirSync(tmp, { mode: 0o700 });
    const dispose = removeOnSignal(tmp);
    try {
      const r = new Extractor(image, contents, opts.progress).run(root, Buffer.from(tmp));
      fs.renameSync(tmp, target);
      return { kind, ...r };
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    } finally {
      dispose();
    }
  } finally {
    fs.closeSync(fd);
  }
}

class Extractor {
  private readonly asRoot = process.getuid?.() === 0;
  private readonly buf = Buffer.allocUnsafe(COPY_CHUNK);
  /** The first path of each inode, for hardlinks. */
  private readonly paths = new Map<Inode, Buffer>();
  private readonly links: [Inode, Buffer][] = [];
  /** Directories in post-order: their metadata goes on last, children first. */
  private readonly dirs: [Inode, Buffer][] = [];
  private entries = 1; // the root
  private bytes = 0;

  constructor(
    private readonly image: string,
    private readonly contents: Contents,
    private readonly progress?: (line: () => string) => void,
  ) {}

  run(root: Inode, at: Buffer): { entries: number; bytes: number } {
    this.dir(root, at);
    for (const [inode, p] of this.links) fs.linkSync(this.paths.get(inode)!, p);
    for (const [inode, p] of this.dirs) this.attributes(inode, p);
    return { entries: this.entries, bytes: this.bytes };
  }

  private dir(dir: Inode, at: Buffer): void {
    for (const d of dir.children!) {
      const p = Buffer.concat([at, SLASH, Buffer.from(d.name, 'latin1')]);
      this.entries++;
      if (d.link) this.links.push([d.inode, p]);
      else this.node(d.inode, p);
    }
    this.dirs.push([dir, at]);
    this.progress?.(() => `unpacking: ${this.entries} entries, ${(this.bytes / 2 ** 20).toFixed(1)} MiB`);
  }

  private node(inode: Inode, p: Buffer): void {
    const type = inode.mode & S_IFMT;
    this.paths.set(inode, p);
    if (type === S_IFDIR) {
      fs.mkdirSync(p, { mode: 0o700 });
      this.dir(inode, p);
      return;
    }
    if (type === S_IFREG) this.file(inode, p);
    else if (type === S_IFLNK) fs.symlinkSync(Buffer.from(inode.payload!, 'latin1'), p);
    else mknod(p, inode.mode, inode.rdev);
    this.attributes(inode, p);
  }

  private file(inode: Inode, p: Buffer): void {
    const c = this.contents;
    const backing = c.fileOf?.get(inode);
    if (backing) {
      fs.copyFileSync(backing, p, fs.constants.COPYFILE_EXCL);
      const size = fs.statSync(p).size;
      if (size !== inode.size) throw new CfsError(ErrorCode.Io, `backing file has ${size} bytes, the image says ${inode.size}`, { input: backing.toString('latin1') });
      this.bytes += size;
      return;
    }
    const out = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    try {
      const place = c.places?.get(inode);
      if (place) {
        const head = inode.size - place.tailSize;
        if (copyRange(c.imageFd!, place.blkaddr * BLOCK_SIZE, out, 0, head, this.buf) !== head) {
          throw new CfsError(ErrorCode.OutOfBounds, `file data at block ${place.blkaddr} runs past the end`, { input: this.image });
        }
        fs.writeSync(out, c.meta!, place.tailOffset, place.tailSize, head);
      } else if (inode.content) {
        fs.writeSync(out, Buffer.from(inode.content, 'latin1'));
      }
      this.bytes += inode.size;
    } finally {
      fs.closeSync(out);
    }
  }

  /** Owner, then mode (chown clears set-id bits), then xattrs (chown drops capabilities), then times. */
  private attributes(inode: Inode, p: Buffer): void {
    const symlink = (inode.mode & S_IFMT) === S_IFLNK;
    if (this.asRoot) fs.lchownSync(p, inode.uid, inode.gid);
    if (!symlink) fs.chmodSync(p, inode.mode & 0o7777);
    for (const x of inode.xattrs) {
      try {
        writeXattr(p, x.key, x.value);
      } catch (e) {
        throw new CfsError(ErrorCode.Io, `cannot set xattr ${x.key}: ${(e as Error).message}`, { input: p.toString('latin1') });
      }
    }
    setTimes(p, inode.mtimeSec, inode.mtimeNsec);
  }
}
