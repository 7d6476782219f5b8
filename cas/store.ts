/**
 * The content-addressed store: STORE/objects/XX/REST named by fs-verity SHA-256 digest (the
 * layout mkcomposefs --digest-store and composefs-rs use), STORE/images/HEX, STORE/refs/NAME.
 * Every write is a temp file in the destination directory, fsync, rename: a crash never leaves a
 * partial object under its final name, and two writers of the same object both succeed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CfsError, ErrorCode, S_IFMT, S_IFREG, decodeImage, objectRelPath } from '../format/index.js';
import { Index } from './index.js';
import { LOCK_EX, LOCK_SH, enableVerity, flock, syncfs, syncfsAsync } from './sys.js';
import { verityDigest } from './sha256-native.js';
import { ObjectNames } from './object-names.js';

export const STORE_MARKER = 'composefs-ts-store.json';
/** hash: the fs-verity digest with SHA-256 over blockSize blocks, no salt (what composefs uses). */
const MARKER = { format: 'composefs-ts store', version: 1, blockSize: 4096, hash: 'sha256' };
/** Marker hash names accepted on open ('fs-verity-sha256' was written by early builds). */
const MARKER_HASHES = new Set(['sha256', 'fs-verity-sha256']);

/** Objects live at objects/<objectRelPath(digest)>. */
export { objectRelPath };

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

import { fsyncDir, tmpName, writeAtomic } from './atomic.js';
export { fsyncDir, tmpName, writeAtomic };

/** Staged bytes between background writeback kicks (ObjectStager). */
const WRITEBACK_BATCH = 16 << 20;

/** What committing staged objects added and found already there. */
export interface StagedTotals {
  newObjects: number;
  newBytes: number;
  dedupObjects: number;
  dedupBytes: number;
}

/** syncfs(2) of the file system holding `dir`; false where it is unavailable. */
export function syncfsPath(dir: string): boolean {
  const fd = fs.openSync(dir, 'r');
  try {
    return syncfs(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Put one file's content at OBJDIR/xx/rest unless it is there (mkcomposefs --digest-store
 * semantics: existing objects are not touched). Copies with reflink where the file system can,
 * else copy_file_range/read-write. Returns whether it was added.
 */
function putObjectFile(objectsDir: string, hexDigest: string, srcPath: string | Buffer): { added: boolean; size: number } {
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
    fsyncDir(dir);
    return { added: true, size };
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

import { digestOfFile } from './digest.js';
export { digestOfFile };

/** What an image needs from the store: its objects (payloads of regular files) and their total st_size. */
export function imageNeeds(image: Uint8Array, input?: string): { objects: string[]; logical: number } {
  const { root } = decodeImage(image, { input });
  const out = new Set<string>();
  let logical = 0;
  const stack = [root];
  while (stack.length) {
    for (const d of stack.pop()!.children!) {
      if (d.link) continue;
      const n = d.inode;
      if ((n.mode & S_IFMT) === S_IFREG && n.payload) {
        const rel = n.payload.replace(/^\/+/, '');
        if (!OBJECT_REL.test(rel)) continue; // not a store object (e.g. a plain path)
        out.add(rel.replace('/', ''));
        logical += n.size;
      }
      if (n.children) stack.push(n);
    }
  }
  return { objects: [...out].sort(), logical };
}

/** The objects (as XX/REST paths) an image refers to. */
export function imageObjects(image: Uint8Array, input?: string): string[] {
  return imageNeeds(image, input).objects.map(objectRelPath);
}

const OBJECT_REL = /^[0-9a-f]{2}\/[0-9a-f]{62}$/;

const REF_NAME = /^[A-Za-z0-9._@+-][A-Za-z0-9._@+:-]{0,254}$/;
export function checkRefName(name: string): string {
  if (!REF_NAME.test(name) || name === '.' || name === '..') {
    throw new CfsError(ErrorCode.Usage, `invalid ref name ${JSON.stringify(name)} (letters, digits and . _ - + @ :)`);
  }
  return name;
}

/** Which objects exist under objects/ and what else lies there (temp files, stray names). */
export function* walkObjects(objectsDir: string): Generator<{ digest: string; path: string } | { litter: string }> {
  let tops: string[];
  try {
    tops = fs.readdirSync(objectsDir).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const top of tops) {
    const dir = path.join(objectsDir, top);
    if (!/^[0-9a-f]{2}$/.test(top) || !fs.lstatSync(dir).isDirectory()) {
      yield { litter: dir };
      continue;
    }
    for (const rest of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, rest);
      if (/^[0-9a-f]{62}$/.test(rest)) yield { digest: top + rest, path: p };
      else yield { litter: p };
    }
  }
}

export interface PutResult {
  digest: string;
  size: number;
  added: boolean;
  /** With opts.verity: whether fs-verity is now on, or the file system can't do it. */
  verity?: 'enabled' | 'unsupported';
}

export class Store {
  readonly objectsDir: string;
  readonly imagesDir: string;
  readonly refsDir: string;
  readonly tmpDir: string;
  private idx: Index | null = null;
  private lockFd = -1;
  private lockMode = 0;
  /** Whether flock worked: then gc (exclusive) cannot run while this store is open. */
  private locked = false;

  private constructor(readonly root: string) {
    this.objectsDir = path.join(root, 'objects');
    this.imagesDir = path.join(root, 'images');
    this.refsDir = path.join(root, 'refs');
    this.tmpDir = path.join(root, 'tmp');
  }

  static open(root: string, opts: { create?: boolean } = {}): Store {
    const abs = path.resolve(root);
    if (!isStoreRoot(abs)) {
      if (!opts.create) throw new CfsError(ErrorCode.Io, 'not a cfs-cas store (run cfs-cas init)', { input: abs });
      if (fs.existsSync(abs) && fs.readdirSync(abs).length > 0) {
        throw new CfsError(ErrorCode.Io, 'directory is not empty and not a cfs-cas store', { input: abs });
      }
      fs.mkdirSync(abs, { recursive: true });
      for (const d of ['objects', 'images', 'refs', 'tmp']) fs.mkdirSync(path.join(abs, d), { recursive: true, mode: 0o755 });
      writeAtomic(path.join(abs, STORE_MARKER), Buffer.from(JSON.stringify(MARKER, null, 2) + '\n'));
      fsyncDir(abs);
    } else {
      let marker: typeof MARKER;
      try {
        marker = JSON.parse(fs.readFileSync(path.join(abs, STORE_MARKER), 'utf8')) as typeof MARKER;
      } catch (e) {
        throw new CfsError(ErrorCode.Io, `unreadable store marker ${STORE_MARKER}: ${(e as Error).message}`, { input: abs });
      }
      if (marker.version !== MARKER.version || marker.blockSize !== MARKER.blockSize || !MARKER_HASHES.has(marker.hash)) {
        throw new CfsError(ErrorCode.Unsupported, `unsupported store format ${JSON.stringify(marker)}`, { input: abs });
      }
    }
    return new Store(abs);
  }

  /** The SQLite index, opened on first use and rebuilt from the tree if it is missing. */
  get index(): Index {
    if (!this.idx) {
      const file = path.join(this.root, INDEX_FILE);
      const fresh = !fs.existsSync(file);
      this.idx = new Index(file);
      if (fresh) this.reindex();
    }
    return this.idx;
  }

  /**
   * Writers hold the store lock shared, gc holds it exclusive, so gc never runs between a
   * writer finding an object present and registering the image that needs it. Held until close().
   */
  lock(mode: 'shared' | 'exclusive'): void {
    const want = mode === 'shared' ? LOCK_SH : LOCK_EX;
    if (this.lockMode === want || (this.lockMode === LOCK_EX && want === LOCK_SH)) return;
    if (this.lockFd < 0) this.lockFd = fs.openSync(path.join(this.root, LOCK_FILE), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    this.locked = flock(this.lockFd, want);
    if (!this.locked) noLockWarning();
    this.lockMode = want;
  }

  objectPath(hexDigest: string): string {
    return path.join(this.objectsDir, objectRelPath(checkDigest(hexDigest)));
  }

  has(hexDigest: string): boolean {
    return fs.existsSync(this.objectPath(hexDigest));
  }

  putFile(srcPath: string | Buffer, opts: { digest?: string; verity?: boolean } = {}): PutResult {
    this.lock('shared');
    const digest = opts.digest ? checkDigest(opts.digest) : digestOfFile(srcPath).digest;
    const r = putObjectFile(this.objectsDir, digest, srcPath);
    return this.recordObject(digest, r.size, r.added, opts.verity);
  }

  putBuffer(data: Uint8Array, opts: { verity?: boolean } = {}): PutResult {
    this.lock('shared');
    const digest = verityDigest(data).toString('hex');
    const dest = this.objectPath(digest);
    let added = false;
    if (!fs.existsSync(dest)) {
      fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
      writeAtomic(dest, data);
      fsyncDir(path.dirname(dest));
      added = true;
    }
    return this.recordObject(digest, data.length, added, opts.verity);
  }

  /**
   * Commit a set of staged files (digest → temp file under `stageDir`) as objects, durably (see
   * commitStagedFiles), indexing each.
   */
  commitStagedAll(stageDir: string, staged: Map<string, { file: string; size: number }>): StagedTotals {
    this.lock('shared');
    return commitStagedFiles(this.objectsDir, stageDir, staged, (digest, size, added) => this.recordObject(digest, size, added));
  }

  /**
   * Put many files whose digests are known as durably as putFile, with a sync of the file
   * system instead of an fsync per file (see ObjectStager). `imageFollows`: an image needing
   * every object added is registered before this store is closed. Then objects already here
   * need no fresh mtime for gc's grace period, where the lock works: gc cannot run meanwhile.
   * `writeback: false` for callers that commit synchronously (see ObjectStager).
   */
  stager(opts: { imageFollows?: boolean; writeback?: boolean } = {}): ObjectStager {
    this.lock('shared');
    return new ObjectStager(this, !(opts.imageFollows && this.locked), opts.writeback ?? true);
  }

  /** Note that an existing object is wanted again (fresh mtime, indexed). */
  reuseObject(digest: string, size: number): PutResult {
    this.lock('shared');
    return this.recordObject(digest, size, false);
  }

  /** If object `digest` exists, give it a fresh mtime, index it and return true. */
  tryReuse(digest: string, size: number): boolean {
    this.lock('shared');
    const now = new Date();
    try {
      fs.utimesSync(this.objectPath(digest), now, now);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (!this.has(digest)) return false; // EPERM etc.: only existence matters here
    }
    this.index.putObject(digest, size);
    return true;
  }

  /** Index an object the caller has seen in objects/ (no fresh mtime: see stager). */
  noteReused(digest: string, size: number): void {
    this.index.putObject(digest, size);
  }

  private recordObject(digest: string, size: number, added: boolean, verity?: boolean): PutResult {
    // A reused object gets a fresh mtime so gc's grace period covers it until its image is registered.
    if (!added) touch(this.objectPath(digest));
    this.index.putObject(digest, size);
    const r: PutResult = { digest, size, added };
    if (verity) r.verity = enableVerityOn(this.objectPath(digest));
    return r;
  }

  /** A new private directory for staging files on the store's file system. */
  makeStagingDir(): string {
    this.lock('shared'); // gc (exclusive) treats staging directories as litter
    fs.mkdirSync(this.tmpDir, { recursive: true, mode: 0o755 });
    return fs.mkdtempSync(path.join(this.tmpDir, `stage-${process.pid}-`));
  }

  /** Store an image under images/HEX (its fs-verity digest) and point refs/NAME at it. */
  addImage(
    image: Uint8Array,
    opts: {
      name?: string;
      input?: string;
      /** What the caller built the image from; skips decoding it again. */
      needs?: { objects: string[]; logical: number };
      /** The caller has just put or found every needed object under this lock: none is missing. */
      present?: boolean;
    } = {},
  ): { digest: string; added: boolean; missing: string[] } {
    if (opts.name !== undefined) checkRefName(opts.name);
    const needs = opts.needs ?? imageNeeds(image, opts.input ?? opts.name);
    this.lock('shared');
    const digest = verityDigest(image).toString('hex');
    const dest = path.join(this.imagesDir, digest);
    const added = !fs.existsSync(dest);
    if (added) {
      fs.mkdirSync(this.imagesDir, { recursive: true });
      writeAtomic(dest, image);
      fsyncDir(this.imagesDir);
    } else touch(dest);
    this.index.putImage({ digest, size: image.length, logical: needs.logical, objects: needs.objects });
    if (opts.name !== undefined) this.setRef(opts.name, digest);
    const missing = opts.present ? [] : needs.objects.filter((o) => !this.has(o)).map(objectRelPath);
    return { digest, added, missing };
  }

  setRef(name: string, imageDigest: string): void {
    this.lock('shared');
    const ref = path.join(this.refsDir, checkRefName(name));
    fs.mkdirSync(this.refsDir, { recursive: true });
    const link = tmpName(this.refsDir);
    fs.symlinkSync(path.join('..', 'images', checkDigest(imageDigest)), link);
    fs.renameSync(link, ref);
    fsyncDir(this.refsDir);
    this.index.putRef(name, imageDigest);
  }

  /** refs/NAME → image digest; null when the ref is missing, 'dangling' on a bad link. */
  readRef(name: string): string | null {
    let target: string;
    try {
      target = fs.readlinkSync(path.join(this.refsDir, checkRefName(name)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if ((e as NodeJS.ErrnoException).code === 'EINVAL') throw new CfsError(ErrorCode.Io, `ref ${name} is not a symlink`, { input: this.refsDir });
      throw e;
    }
    const m = /^\.\.\/images\/([0-9a-f]{64})$/.exec(target);
    if (!m) throw new CfsError(ErrorCode.Io, `ref ${name} points outside images/: ${target}`, { input: this.refsDir });
    return m[1];
  }

  refNames(): string[] {
    try {
      return fs.readdirSync(this.refsDir).filter((n) => !n.startsWith('.')).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  imageDigests(): string[] {
    try {
      return fs.readdirSync(this.imagesDir).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  removeRef(name: string): boolean {
    this.lock('shared');
    const ref = path.join(this.refsDir, checkRefName(name));
    try {
      fs.unlinkSync(ref);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    fsyncDir(this.refsDir);
    this.index.dropRef(name);
    return true;
  }

  /** Rebuild the index from the tree (object names are trusted; fsck checks contents). */
  reindex(): void {
    const idx = this.idx ?? (this.idx = new Index(path.join(this.root, INDEX_FILE)));
    idx.replaceAll(() => {
      for (const o of walkObjects(this.objectsDir)) {
        if (!('digest' in o)) continue;
        const st = fs.statSync(o.path);
        idx.putObject(o.digest, st.size, Math.floor(st.mtimeMs));
      }
      for (const d of this.imageDigests()) {
        const file = path.join(this.imagesDir, d);
        const st = fs.statSync(file);
        let needs: { objects: string[]; logical: number };
        try {
          needs = imageNeeds(fs.readFileSync(file), file);
        } catch {
          needs = { objects: [], logical: 0 }; // fsck reports it
        }
        idx.putImage({ digest: d, size: st.size, ...needs }, Math.floor(st.mtimeMs));
      }
      for (const name of this.refNames()) {
        try {
          const img = this.readRef(name);
          if (img) idx.putRef(name, img);
        } catch {
          /* fsck reports it */
        }
      }
    });
  }

  close(): void {
    this.idx?.close();
    this.idx = null;
    if (this.lockFd >= 0) fs.closeSync(this.lockFd); // releases the flock
    this.lockFd = -1;
    this.lockMode = 0;
    this.locked = false;
  }
}

const INDEX_FILE = 'index.sqlite';
const LOCK_FILE = 'lock';

let warnedNoLock = false;
function noLockWarning(): void {
  if (warnedNoLock) return;
  warnedNoLock = true;
  process.emitWarning('flock(2) is unavailable: gc is not locked out while writers run (grace period only)');
}

function touch(file: string): void {
  const now = new Date();
  try {
    fs.utimesSync(file, now, now);
  } catch {
    /* not ours to touch (read-only or another owner): the lock still protects it */
  }
}

function enableVerityOn(file: string): 'enabled' | 'unsupported' {
  const fd = fs.openSync(file, 'r');
  try {
    const r = enableVerity(fd);
    if (typeof r === 'object') throw new CfsError(ErrorCode.Io, `enabling fs-verity failed (errno ${r.errno})`, { input: file });
    return r;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Staged files (digest → temp file under `stageDir`, on the same file system) into
 * objectsDir/XX/REST, durably: their data is synced before they become visible and the links
 * are synced after, so an image registered next never needs an object a crash could lose. One
 * syncfs each time where the kernel has it, else an fsync per file or directory. Linked, not
 * renamed: an object another writer put meanwhile stays as it is (counted as deduplicated).
 */
export function commitStagedFiles(
  objectsDir: string,
  stageDir: string,
  staged: Map<string, { file: string; size: number }>,
  onEach?: (digest: string, size: number, added: boolean) => void,
): StagedTotals {
  const t: StagedTotals = { newObjects: 0, newBytes: 0, dedupObjects: 0, dedupBytes: 0 };
  if (staged.size === 0) return t;
  if (!syncfsPath(stageDir)) for (const s of staged.values()) fsyncDir(s.file);
  const dirs = new Set<string>();
  for (const [digest, s] of staged) {
    const dest = path.join(objectsDir, objectRelPath(digest));
    let added = false;
    if (!fs.existsSync(dest)) {
      fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
      try {
        fs.linkSync(s.file, dest);
        added = true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    fs.rmSync(s.file, { force: true });
    if (added) {
      t.newObjects++;
      t.newBytes += s.size;
      dirs.add(path.dirname(dest));
    } else {
      t.dedupObjects++;
      t.dedupBytes += s.size;
    }
    onEach?.(digest, s.size, added);
  }
  if (dirs.size > 0 && !syncfsPath(objectsDir)) for (const d of dirs) fsyncDir(d);
  return t;
}

/** Where an ObjectStager puts objects: a cfs-cas Store, or a plain objects directory (PlainObjects). */
export interface StagingTarget {
  readonly objectsDir: string;
  /** A new staging directory on the objects' file system. */
  makeStagingDir(): string;
  /** Whether object `digest` is there, given a fresh mtime. */
  tryReuse(digest: string, size: number): boolean;
  /** Object `digest` was seen in objectsDir and is wanted again. */
  noteReused(digest: string, size: number): void;
  commitStagedAll(stageDir: string, staged: Map<string, { file: string; size: number }>): StagedTotals;
}

/** A plain directory of objects/XX/REST as mkcomposefs --digest-store fills it: no index, no lock. */
export class PlainObjects implements StagingTarget {
  constructor(readonly objectsDir: string) {}
  makeStagingDir(): string {
    fs.mkdirSync(this.objectsDir, { recursive: true, mode: 0o755 });
    return fs.mkdtempSync(path.join(this.objectsDir, '.tmp-stage-'));
  }
  tryReuse(digest: string): boolean {
    return fs.existsSync(path.join(this.objectsDir, objectRelPath(digest)));
  }
  noteReused(): void {}
  commitStagedAll(stageDir: string, staged: Map<string, { file: string; size: number }>): StagedTotals {
    return commitStagedFiles(this.objectsDir, stageDir, staged);
  }
}

/** Objects looked up in one objects/XX directory before it is listed instead. */
const LIST_AFTER = 16;

function listNames(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/**
 * Files whose digests are known, copied (reflinked where possible) into a staging directory as
 * they come, or written there by the caller (newFile, addWritten), and flushed in the
 * background meanwhile; commit() syncs them and links them into place (commitStagedFiles). A
 * file whose size is not `size` any more changed after it was hashed: that is an error.
 * close() drops whatever was not committed. Objects already there get a fresh mtime if
 * `touch`; if not, each objects/XX directory that many files go to is listed once instead of
 * a stat per object. Without `earlyWriteback` nothing is flushed before commit, and
 * commitSync/closeSync serve callers that cannot wait.
 */
export class ObjectStager {
  readonly totals: StagedTotals = { newObjects: 0, newBytes: 0, dedupObjects: 0, dedupBytes: 0 };
  private readonly dir: string;
  private readonly dirFd: number;
  private readonly staged = new Map<string, { file: string; size: number }>();
  private writeback: Promise<unknown> | null = null;
  private unsynced = 0;
  private seq = 0;
  private closed = false;

  /** objects/XX → its names once listed, else how many objects were looked up there. */
  private readonly listed = new Map<string, ObjectNames | number>();

  constructor(
    private readonly store: StagingTarget,
    private readonly touch: boolean,
    private readonly earlyWriteback = true,
  ) {
    this.dir = store.makeStagingDir();
    this.dirFd = fs.openSync(this.dir, 'r');
  }

  /** Copy file `f.path`, whose digest is known, in (unless the object is there or staged). */
  add(f: { path: string | Buffer; digest: string; size: number }): void {
    const digest = checkDigest(f.digest);
    if (this.has(digest, f.size)) return;
    const file = this.newFile();
    fs.copyFileSync(f.path, file, fs.constants.COPYFILE_FICLONE);
    fs.chmodSync(file, 0o644);
    const size = fs.statSync(file).size;
    if (size !== f.size) throw new CfsError(ErrorCode.Io, `changed while being stored (${f.size} bytes when hashed, ${size} now)`, { input: String(f.path) });
    this.addWritten(digest, file, size);
  }

  /** Whether object `digest` is staged or there already (then counted as deduplicated). */
  has(digest: string, size: number): boolean {
    if (!this.staged.has(digest) && !this.reuse(digest, size)) return false;
    this.totals.dedupObjects++;
    this.totals.dedupBytes += size;
    return true;
  }

  /** A new name in the staging directory, for a file the caller writes and then adds. */
  newFile(): string {
    return path.join(this.dir, String(this.seq++));
  }

  /** Stage `file` (a newFile the caller wrote: `size` bytes with digest `digest`). */
  addWritten(digest: string, file: string, size: number): void {
    this.staged.set(digest, { file, size });
    this.totals.newObjects++;
    this.totals.newBytes += size;
    this.unsynced += size;
    if (this.earlyWriteback && this.unsynced >= WRITEBACK_BATCH && !this.writeback) {
      // start flushing while more is staged, so the final sync has less to do
      this.unsynced = 0;
      this.writeback = syncfsAsync(this.dirFd).finally(() => (this.writeback = null));
    }
  }

  private reuse(digest: string, size: number): boolean {
    if (this.touch) return this.store.tryReuse(digest, size);
    const xx = digest.slice(0, 2);
    let names = this.listed.get(xx) ?? 0;
    if (typeof names === 'number') {
      if (names < LIST_AFTER) {
        this.listed.set(xx, names + 1);
        return this.store.tryReuse(digest, size);
      }
      names = new ObjectNames(listNames(path.join(this.store.objectsDir, xx)));
      this.listed.set(xx, names);
    }
    if (!names.has(digest)) return false;
    this.store.noteReused(digest, size);
    return true;
  }

  /** Make everything added durable and visible; objects another writer put meanwhile count as deduplicated. */
  async commit(): Promise<StagedTotals> {
    await this.writeback;
    return this.commitSync();
  }

  /** commit() for a stager made without `earlyWriteback`. */
  commitSync(): StagedTotals {
    this.assertNoWriteback();
    const c = this.store.commitStagedAll(this.dir, this.staged);
    this.staged.clear();
    this.listed.clear();
    const t = this.totals;
    t.dedupObjects += t.newObjects - c.newObjects;
    t.dedupBytes += t.newBytes - c.newBytes;
    t.newObjects = c.newObjects;
    t.newBytes = c.newBytes;
    return t;
  }

  async close(): Promise<void> {
    await this.writeback;
    this.closeSync();
  }

  /** close() for a stager made without `earlyWriteback`. */
  closeSync(): void {
    this.assertNoWriteback();
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.dirFd);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private assertNoWriteback(): void {
    if (this.writeback) throw new Error('ObjectStager: a background flush is running; use commit() and close()');
  }
}
