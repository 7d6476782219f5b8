/**
 * The content-addressed store: STORE/objects/XX/REST named by fs-verity SHA-256 digest (the
 * layout mkcomposefs --digest-store and composefs-rs use), STORE/images/HEX, STORE/refs/NAME.
 * Every write is a temp file in the destination directory, fsync, rename: a crash never leaves a
 * partial object under its final name, and two writers of the same object both succeed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CfsError, ErrorCode, FsVerityHasher, S_IFMT, S_IFREG, decodeImage, fsverityDigest } from '../format/index.js';

export const STORE_MARKER = 'composefs-ts-store.json';
const MARKER = { format: 'composefs-ts store', version: 1, blockSize: 4096, hash: 'fs-verity-sha256' };

/** "ab/cdef…": the first byte of the digest, '/', the other 31 bytes, lower-case hex. */
export function objectRelPath(hexDigest: string): string {
  return `${hexDigest.slice(0, 2)}/${hexDigest.slice(2)}`;
}

const HEX64 = /^[0-9a-f]{64}$/;
export function checkDigest(hex: string): string {
  const d = hex.toLowerCase();
  if (!HEX64.test(d)) throw new CfsError(ErrorCode.Usage, `not a SHA-256 digest: ${JSON.stringify(hex)}`);
  return d;
}

export function isStoreRoot(dir: string): boolean {
  return fs.existsSync(path.join(dir, STORE_MARKER));
}

/** --store > $CFS_STORE > $XDG_DATA_HOME/composefs-ts/store > ~/.local/share/composefs-ts/store */
export function defaultStorePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CFS_STORE) return env.CFS_STORE;
  const data = env.XDG_DATA_HOME || path.join(env.HOME || os.homedir(), '.local', 'share');
  return path.join(data, 'composefs-ts', 'store');
}

let tmpCounter = 0;
const tmpName = (dir: string): string => path.join(dir, `.tmp-${process.pid}-${Date.now().toString(36)}-${tmpCounter++}`);

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Write `data` to `dest` durably and atomically (temp file in the same directory). */
export function writeAtomic(dest: string, data: Uint8Array | ((fd: number) => void), mode = 0o644): void {
  const dir = path.dirname(dest);
  const tmp = tmpName(dir);
  let fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  try {
    if (typeof data === 'function') data(fd);
    else {
      let off = 0;
      while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    }
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, dest);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Put one file's content at OBJDIR/xx/rest unless it is there (mkcomposefs --digest-store
 * semantics: existing objects are not touched). Copies with reflink where the file system can,
 * else copy_file_range/read-write. Returns whether it was added.
 */
export function putObjectFile(objectsDir: string, hexDigest: string, srcPath: string | Buffer): { added: boolean; size: number } {
  const rel = objectRelPath(checkDigest(hexDigest));
  const dest = path.join(objectsDir, rel);
  try {
    const st = fs.lstatSync(dest);
    return { added: false, size: st.size };
  } catch {
    /* not there yet */
  }
  const dir = path.dirname(dest);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = tmpName(dir);
  try {
    fs.copyFileSync(srcPath, tmp, fs.constants.COPYFILE_FICLONE);
    const fd = fs.openSync(tmp, 'r+');
    let size: number;
    try {
      fs.fchmodSync(fd, 0o644);
      fs.fsyncSync(fd);
      size = fs.fstatSync(fd).size;
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, dest);
    return { added: true, size };
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** fs-verity digest of a file, streamed. */
export function digestOfFile(file: string | Buffer): { digest: string; size: number } {
  const fd = fs.openSync(file, 'r');
  try {
    const h = new FsVerityHasher();
    const buf = Buffer.allocUnsafe(1 << 20);
    let size = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { digest: h.digest().toString('hex'), size };
  } finally {
    fs.closeSync(fd);
  }
}

/** The objects (payloads of regular files) an image refers to. */
export function imageObjects(image: Uint8Array, input?: string): string[] {
  const { root } = decodeImage(image, { input });
  const out = new Set<string>();
  const stack = [root];
  while (stack.length) {
    for (const d of stack.pop()!.children!) {
      if (d.link) continue;
      const n = d.inode;
      if ((n.mode & S_IFMT) === S_IFREG && n.payload) out.add(n.payload.replace(/^\/+/, ''));
      if (n.children) stack.push(n);
    }
  }
  return [...out].sort();
}

const REF_NAME = /^[A-Za-z0-9._@+-][A-Za-z0-9._@+:-]{0,254}$/;
export function checkRefName(name: string): string {
  if (!REF_NAME.test(name) || name === '.' || name === '..') {
    throw new CfsError(ErrorCode.Usage, `invalid ref name ${JSON.stringify(name)} (letters, digits and . _ - + @ :)`);
  }
  return name;
}

export class Store {
  readonly objectsDir: string;
  readonly imagesDir: string;
  readonly refsDir: string;

  private constructor(readonly root: string) {
    this.objectsDir = path.join(root, 'objects');
    this.imagesDir = path.join(root, 'images');
    this.refsDir = path.join(root, 'refs');
  }

  static open(root: string, opts: { create?: boolean } = {}): Store {
    const abs = path.resolve(root);
    if (!isStoreRoot(abs)) {
      if (!opts.create) throw new CfsError(ErrorCode.Io, 'not a cfs-cas store (run cfs-cas init)', { input: abs });
      if (fs.existsSync(abs) && fs.readdirSync(abs).length > 0) {
        throw new CfsError(ErrorCode.Io, 'directory is not empty and not a cfs-cas store', { input: abs });
      }
      fs.mkdirSync(abs, { recursive: true });
      for (const d of ['objects', 'images', 'refs']) fs.mkdirSync(path.join(abs, d), { recursive: true, mode: 0o755 });
      writeAtomic(path.join(abs, STORE_MARKER), Buffer.from(JSON.stringify(MARKER, null, 2) + '\n'));
      fsyncDir(abs);
    } else {
      const marker = JSON.parse(fs.readFileSync(path.join(abs, STORE_MARKER), 'utf8')) as typeof MARKER;
      if (marker.version !== MARKER.version || marker.blockSize !== MARKER.blockSize || marker.hash !== MARKER.hash) {
        throw new CfsError(ErrorCode.Unsupported, `unsupported store format ${JSON.stringify(marker)}`, { input: abs });
      }
    }
    return new Store(abs);
  }

  objectPath(hexDigest: string): string {
    return path.join(this.objectsDir, objectRelPath(checkDigest(hexDigest)));
  }

  has(hexDigest: string): boolean {
    return fs.existsSync(this.objectPath(hexDigest));
  }

  putFile(srcPath: string | Buffer, opts: { digest?: string; verity?: boolean } = {}): { digest: string; size: number; added: boolean } {
    const digest = opts.digest ? checkDigest(opts.digest) : digestOfFile(srcPath).digest;
    const r = putObjectFile(this.objectsDir, digest, srcPath);
    return { digest, size: r.size, added: r.added };
  }

  putBuffer(data: Uint8Array): { digest: string; size: number; added: boolean } {
    const digest = fsverityDigest(data).toString('hex');
    const dest = this.objectPath(digest);
    if (fs.existsSync(dest)) return { digest, size: data.length, added: false };
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
    writeAtomic(dest, data);
    return { digest, size: data.length, added: true };
  }

  /** Store an image under images/HEX (its fs-verity digest) and point refs/NAME at it. */
  addImage(image: Uint8Array, opts: { name?: string } = {}): { digest: string; added: boolean; missing: string[] } {
    const objects = imageObjects(image, opts.name);
    const digest = fsverityDigest(image).toString('hex');
    const dest = path.join(this.imagesDir, digest);
    const added = !fs.existsSync(dest);
    if (added) writeAtomic(dest, image);
    if (opts.name !== undefined) {
      const ref = path.join(this.refsDir, checkRefName(opts.name));
      const link = tmpName(this.refsDir);
      fs.symlinkSync(path.join('..', 'images', digest), link);
      fs.renameSync(link, ref);
      fsyncDir(this.refsDir);
    }
    const missing = objects.filter((o) => !fs.existsSync(path.join(this.objectsDir, o)));
    return { digest, added, missing };
  }

  close(): void {
    /* nothing held open yet */
  }
}
