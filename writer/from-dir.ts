/**
 * Directory input: read a tree from the file system into the format's tree model, the way
 * mkcomposefs does (lstat, readlink, xattrs without following symlinks, no hardlink detection
 * unless asked), then fill in file contents (≤ 64 bytes inline) or fs-verity digests.
 */
import * as fs from 'node:fs';
import {
  CfsError,
  ErrorCode,
  MAX_NAME_LEN,
  PATH_MAX,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  type Dirent,
  type Inode,
  newInode,
} from '../format/index.js';
import { setXattr } from '../format/dumpfile.js';
import { writeLatin1 } from '../format/bytes.js';
import { readXattrsZ } from '../cas/xattrs.js';
import { type LstatResult, cPath, lstatx, readDirNames } from '../cas/sys.js';

/** Files up to this size are stored in the image itself (mkcomposefs's recommended maximum). */
export const INLINE_MAX = 64;

export interface ScanOptions {
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  /** Names with the same dev+ino share one image inode. */
  hardlinks?: boolean;
  /** Descend into other file systems mounted inside the tree. */
  crossFilesystems?: boolean;
  /** Skip unreadable entries (counted) instead of failing. */
  ignoreErrors?: boolean;
  /** Called every few hundred entries. */
  onProgress?: (entries: number) => void;
  /**
   * Called for each external file as it is found (`index`: how many came before). The scan
   * then keeps no list of them: the caller keeps what it needs (on a big tree they weigh more
   * than the tree).
   */
  onExternal?: (file: ExternalFile, index: number) => void;
  /** Note each external file's FileStamp (for a digest cache). */
  stamps?: boolean;
}

/** What tells a later scan that a file is unchanged: st_dev, st_ino, mtime and ctime. */
export interface FileStamp {
  dev: bigint;
  ino: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** A regular file whose content lives outside the image. Paths are built when asked for. */
export class ExternalFile {
  constructor(
    readonly inode: Inode,
    /** Its directory's path as given and relative to the scanned one (latin1). */
    private readonly dirPath: string,
    private readonly dirRel: string,
    readonly name: string,
    /** With ScanOptions.stamps, else null. */
    readonly stat: FileStamp | null,
  ) {}

  /** Absolute or DIR-relative path as given, bytes as a latin1 string. */
  get pathLatin1(): string {
    return `${this.dirPath}/${this.name}`;
  }

  /** Absolute or DIR-relative path as given, in bytes. */
  get path(): Buffer {
    return Buffer.from(this.pathLatin1, 'latin1');
  }

  /** Path relative to the scanned directory, latin1. */
  get rel(): string {
    return joinRel(this.dirRel, this.name);
  }
}

/** `name` inside the directory at `rel` relative to the scanned one ('' = that one). */
const joinRel = (rel: string, name: string): string => (rel === '' ? name : `${rel}/${name}`);

export interface ScanResult {
  root: Inode;
  /** Regular files larger than INLINE_MAX, in depth-first name order (none kept with onExternal). */
  external: ExternalFile[];
  /** How many external files were found. */
  files: number;
  entries: number;
  /** Entries skipped with ignoreErrors. */
  skipped: number;
  externalBytes: number;
}

const NSEC = 1_000_000_000n;

function describeErrno(e: NodeJS.ErrnoException): string {
  return `${e.code ?? 'error'}: ${e.message.replace(/^\w+: /, '').replace(/, \w+ '.*'$/, '')}`;
}

/** One directory being read: its sorted names, the next one to load, the entries so far. */
interface Frame {
  dir: Inode;
  path: string;
  rel: string;
  names: string[];
  next: number;
  children: Dirent[];
}

/**
 * A depth-first scan that can stop between entries: `run(deadline)` loads entries until the
 * tree is done (true) or `performance.now()` passes the deadline (false), so an async caller
 * can let its event loop run (helpers' messages in and out) without changing the result.
 */
class Scanner {
  readonly res: ScanResult = { root: null as unknown as Inode, external: [], files: 0, entries: 0, skipped: 0, externalBytes: 0 };
  private readonly byDevIno = new Map<string, Inode>();
  /** with hardlinks: inodes that already have their owning name */
  private readonly owned = new Set<Inode>();
  private readonly stack: Frame[] = [];
  private rootDev = -1n;
  private readonly filter: ((name: string) => boolean) | undefined;
  private readonly top: Buffer;
  private scratch = Buffer.allocUnsafe(4096);
  private lastSec = NaN;
  private lastSecBig = 0n;

  constructor(
    dir: string | Buffer,
    private readonly opts: ScanOptions,
  ) {
    this.top = typeof dir === 'string' ? Buffer.from(dir) : dir;
    this.filter = opts.userXattrs ? (name: string): boolean => name.startsWith('user.') : undefined;
  }

  private fail(path: Buffer | string, what: string, e: unknown): never {
    const msg = e instanceof Error && (e as NodeJS.ErrnoException).code ? describeErrno(e as NodeJS.ErrnoException) : String((e as Error)?.message ?? e);
    throw new CfsError(ErrorCode.Io, `${what}: ${msg}`, { input: typeof path === 'string' ? path : path.toString('latin1') });
  }

  run(deadline = Infinity): boolean {
    const { opts, stack } = this;
    if (this.res.root === null) {
      const top = cPath(this.top);
      const root = this.load(top, top.length, null, '');
      if (!root || (root.mode & S_IFMT) !== S_IFDIR) throw new CfsError(ErrorCode.Usage, 'not a directory', { input: this.top.toString('latin1') });
      this.res.root = root;
    }
    let n = 0;
    while (stack.length > 0) {
      const f = stack[stack.length - 1];
      if (f.next === f.names.length) {
        f.dir.children = f.children;
        stack.pop();
        continue;
      }
      if ((++n & 63) === 0 && performance.now() > deadline) return false;
      const name = f.names[f.next++];
      if (name.length > MAX_NAME_LEN) this.fail(f.path, 'cannot add entry', new Error(`name longer than ${MAX_NAME_LEN} bytes`));
      // a directory child pushes its own frame; its entries are loaded before the next sibling
      const lenZ = f.path.length + name.length + 2;
      const child = this.load(this.childPathZ(f.path, name, lenZ), lenZ, f, name);
      if (!child) continue;
      // with --hardlinks, the first name met (depth first) owns the inode, later names link to it
      let link = false;
      if (opts.hardlinks && (child.mode & S_IFMT) !== S_IFDIR) {
        link = this.owned.has(child);
        this.owned.add(child);
      }
      f.children.push({ name, inode: child, link });
    }
    return true;
  }

  /** `${dir}/${name}` and a NUL (`len` bytes) at the start of a buffer reused for every entry. */
  private childPathZ(dir: string, name: string, len: number): Buffer {
    if (len > this.scratch.length) this.scratch = Buffer.allocUnsafe(len * 2);
    const b = this.scratch;
    writeLatin1(b, dir, 0);
    b[dir.length] = 0x2f;
    writeLatin1(b, name, dir.length + 1);
    b[len - 1] = 0;
    return b;
  }

  /**
   * Load entry `name` of `parent` (null: the root); `pathZ` holds its path and a NUL in its first
   * `lenZ` bytes, until the next call. Returns null when the entry is skipped.
   */
  private load(pathZ: Buffer, lenZ: number, parent: Frame | null, name: string): Inode | null {
    const { opts, res } = this;
    const path = (): Buffer => pathZ.subarray(0, lenZ - 1);
    const isRoot = parent === null;
    let st: LstatResult;
    try {
      st = lstatx(pathZ);
    } catch (e) {
      if (opts.ignoreErrors && !isRoot) {
        res.skipped++;
        return null;
      }
      return this.fail(path(), 'cannot stat', e);
    }
    const mode = st.mode;
    const type = mode & S_IFMT;
    if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) return null;
    if (opts.hardlinks && type !== S_IFDIR && st.nlink > 1) {
      const seen = this.byDevIno.get(`${st.dev}:${st.ino}`);
      if (seen) {
        seen.nlink++;
        res.entries++;
        return seen;
      }
    }
    const inode = newInode(mode);
    inode.uid = st.uid;
    inode.gid = st.gid;
    inode.rdev = st.rdev;
    inode.size = st.size;
    if (!opts.useEpoch) {
      // entries of one package or copy share their mtime: one BigInt for a run of them
      if (st.mtimeSec !== this.lastSec) this.lastSecBig = BigInt((this.lastSec = st.mtimeSec));
      inode.mtimeSec = this.lastSecBig;
      inode.mtimeNsec = st.mtimeNsec;
    }
    try {
      if (type === S_IFLNK) {
        const target = fs.readlinkSync(path(), { encoding: 'buffer' });
        if (target.length === 0 || target.length >= PATH_MAX) throw new Error(`symlink target of ${target.length} bytes`);
        inode.payload = target.toString('latin1');
        inode.size = target.length;
      } else if (type === S_IFREG && inode.size > 0 && inode.size <= INLINE_MAX) {
        const data = fs.readFileSync(path());
        inode.content = data.toString('latin1');
        inode.size = data.length;
      }
      if (!opts.skipXattrs) {
        let budget = 0;
        for (const [key, value] of readXattrsZ(pathZ, this.filter)) budget = setXattr(inode.xattrs, key, value, budget);
      }
    } catch (e) {
      if (opts.ignoreErrors && !isRoot) {
        res.skipped++;
        return null;
      }
      return this.fail(path(), 'cannot read', e);
    }
    if (opts.hardlinks && type !== S_IFDIR && st.nlink > 1) this.byDevIno.set(`${st.dev}:${st.ino}`, inode);
    if (type === S_IFREG && inode.size > INLINE_MAX) {
      const stat = opts.stamps
        ? { dev: st.dev, ino: st.ino, mtimeNs: BigInt(st.mtimeSec) * NSEC + BigInt(st.mtimeNsec), ctimeNs: BigInt(st.ctimeSec) * NSEC + BigInt(st.ctimeNsec) }
        : null;
      const file = new ExternalFile(inode, parent!.path, parent!.rel, name, stat);
      res.externalBytes += inode.size;
      if (opts.onExternal) opts.onExternal(file, res.files);
      else res.external.push(file);
      res.files++;
    }
    res.entries++;
    if (opts.onProgress && res.entries % 512 === 0) opts.onProgress(res.entries);
    if (type === S_IFDIR) {
      if (isRoot) this.rootDev = st.dev;
      else if (st.dev !== this.rootDev && !opts.crossFilesystems) return inode; // a mount point: keep it empty
      this.openDir(inode, pathZ, lenZ, isRoot ? '' : joinRel(parent.rel, name));
    }
    return inode;
  }

  /** Read a directory's names; its entries are loaded from the stack. */
  private openDir(dir: Inode, pathZ: Buffer, lenZ: number, rel: string): void {
    const path = pathZ.subarray(0, lenZ - 1);
    let names: string[];
    try {
      names = readDirNames(pathZ.subarray(0, lenZ)) ?? fs.readdirSync(path, { encoding: 'latin1' });
    } catch (e) {
      if (this.opts.ignoreErrors && rel !== '') {
        this.res.skipped++;
        return;
      }
      return this.fail(path, 'cannot read directory', e);
    }
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.stack.push({ dir, path: path.toString('latin1'), rel, names, next: 0, children: [] });
  }
}

/** Scan `dir` (bytes or string path). Throws CfsError naming the failing path. */
export function scanDirectory(dir: string | Buffer, opts: ScanOptions = {}): ScanResult {
  const s = new Scanner(dir, opts);
  s.run();
  return s.res;
}

/**
 * scanDirectory, letting the event loop run every `sliceMs` (so helper processes keep getting
 * the work that onExternal hands them: a pipe holds only 64 KiB of it).
 */
export async function scanDirectoryAsync(dir: string | Buffer, opts: ScanOptions = {}, sliceMs = 5): Promise<ScanResult> {
  const s = new Scanner(dir, opts);
  while (!s.run(performance.now() + sliceMs)) await new Promise<void>((resolve) => setImmediate(resolve));
  return s.res;
}
