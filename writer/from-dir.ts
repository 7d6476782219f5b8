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
import { readXattrsZ } from '../cas/xattrs.js';
import { type LstatResult, cPath, lstatx } from '../cas/sys.js';

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
  /** Called for each external file as it is found (its index in `external`). */
  onExternal?: (file: ExternalFile, index: number) => void;
}

/** A regular file whose content lives outside the image. */
export interface ExternalFile {
  inode: Inode;
  /** Absolute or DIR-relative path as given, in bytes. */
  path: Buffer;
  /** Path relative to the scanned directory, latin1. */
  rel: string;
  /** lstat of the source file, for the digest cache. */
  stat: { dev: bigint; ino: bigint; mtimeNs: bigint; ctimeNs: bigint };
}

export interface ScanResult {
  root: Inode;
  /** Regular files larger than INLINE_MAX, in depth-first name order. */
  external: ExternalFile[];
  entries: number;
  /** Entries skipped with ignoreErrors. */
  skipped: number;
  externalBytes: number;
}

const NSEC = 1_000_000_000n;

function describeErrno(e: NodeJS.ErrnoException): string {
  return `${e.code ?? 'error'}: ${e.message.replace(/^\w+: /, '').replace(/, \w+ '.*'$/, '')}`;
}

/** Scan `dir` (bytes or string path). Throws CfsError naming the failing path. */
export function scanDirectory(dir: string | Buffer, opts: ScanOptions = {}): ScanResult {
  const top = typeof dir === 'string' ? Buffer.from(dir) : dir;
  const res: ScanResult = { root: null as unknown as Inode, external: [], entries: 0, skipped: 0, externalBytes: 0 };
  const byDevIno = new Map<string, Inode>();
  let rootDev = -1n;

  const fail = (path: Buffer, what: string, e: unknown): never => {
    const msg = e instanceof Error && (e as NodeJS.ErrnoException).code ? describeErrno(e as NodeJS.ErrnoException) : String((e as Error)?.message ?? e);
    throw new CfsError(ErrorCode.Io, `${what}: ${msg}`, { input: path.toString('latin1') });
  };

  /** Load one entry (`pathZ`: its path and a NUL); null when it is skipped. */
  const load = (pathZ: Buffer, rel: string): Inode | null => {
    const path = pathZ.subarray(0, pathZ.length - 1);
    let st: LstatResult;
    try {
      st = lstatx(pathZ);
    } catch (e) {
      if (opts.ignoreErrors && rel !== '') {
        res.skipped++;
        return null;
      }
      return fail(path, 'cannot stat', e);
    }
    const mode = st.mode;
    const type = mode & S_IFMT;
    if (opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) return null;
    if (opts.hardlinks && type !== S_IFDIR && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const seen = byDevIno.get(key);
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
      inode.mtimeSec = BigInt(st.mtimeSec);
      inode.mtimeNsec = st.mtimeNsec;
    }
    try {
      if (type === S_IFLNK) {
        const target = fs.readlinkSync(path, { encoding: 'buffer' });
        if (target.length === 0 || target.length >= PATH_MAX) throw new Error(`symlink target of ${target.length} bytes`);
        inode.payload = target.toString('latin1');
        inode.size = target.length;
      } else if (type === S_IFREG && inode.size > 0 && inode.size <= INLINE_MAX) {
        const data = fs.readFileSync(path);
        inode.content = data.toString('latin1');
        inode.size = data.length;
      }
      if (!opts.skipXattrs) {
        let budget = 0;
        const filter = opts.userXattrs ? (name: string): boolean => name.startsWith('user.') : undefined;
        for (const [key, value] of readXattrsZ(pathZ, filter)) budget = setXattr(inode.xattrs, key, value, budget);
      }
    } catch (e) {
      if (opts.ignoreErrors && rel !== '') {
        res.skipped++;
        return null;
      }
      return fail(path, 'cannot read', e);
    }
    if (opts.hardlinks && type !== S_IFDIR && st.nlink > 1) byDevIno.set(`${st.dev}:${st.ino}`, inode);
    if (type === S_IFREG && inode.size > INLINE_MAX) {
      const stat = { dev: st.dev, ino: st.ino, mtimeNs: BigInt(st.mtimeSec) * NSEC + BigInt(st.mtimeNsec), ctimeNs: BigInt(st.ctimeSec) * NSEC + BigInt(st.ctimeNsec) };
      const file = { inode, path, rel, stat };
      res.external.push(file);
      res.externalBytes += inode.size;
      opts.onExternal?.(file, res.external.length - 1);
    }
    res.entries++;
    if (opts.onProgress && res.entries % 512 === 0) opts.onProgress(res.entries);
    if (type === S_IFDIR) {
      if (rel === '') rootDev = st.dev;
      else if (st.dev !== rootDev && !opts.crossFilesystems) return inode; // a mount point: keep it empty
      readChildren(inode, path, rel);
    }
    return inode;
  };

  const readChildren = (dir: Inode, path: Buffer, rel: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(path, { encoding: 'latin1' });
    } catch (e) {
      if (opts.ignoreErrors && rel !== '') {
        res.skipped++;
        return;
      }
      return fail(path, 'cannot read directory', e);
    }
    const sorted = names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const dirPath = path.toString('latin1');
    const children: Dirent[] = [];
    for (const name of sorted) {
      if (name.length > MAX_NAME_LEN) fail(path, 'cannot add entry', new Error(`name longer than ${MAX_NAME_LEN} bytes`));
      const child = load(Buffer.from(`${dirPath}/${name}\0`, 'latin1'), rel === '' ? name : `${rel}/${name}`);
      if (!child) continue;
      // with --hardlinks, the first name met (depth first) owns the inode, later names link to it
      let link = false;
      if (opts.hardlinks && (child.mode & S_IFMT) !== S_IFDIR) {
        link = owned.has(child);
        owned.add(child);
      }
      children.push({ name, inode: child, link });
    }
    dir.children = children;
  };

  const owned = new Set<Inode>();

  const root = load(cPath(top), '');
  if (!root || (root.mode & S_IFMT) !== S_IFDIR) {
    throw new CfsError(ErrorCode.Usage, 'not a directory', { input: top.toString('latin1') });
  }
  res.root = root;
  return res;
}
