/**
 * The in-memory tree shared by every tool: what a composefs-dump line describes.
 * Names, paths, payloads and xattr keys are byte strings held as latin1 JS strings (one char per
 * byte), so `<` on them is byte-wise strcmp order. Integer fields hold what mkcomposefs holds:
 * mode, nlink, uid, gid and rdev are u32; mtime seconds are s64.
 */
import { S_IFDIR, S_IFMT } from './layout.js';

export interface Xattr {
  key: string;
  /** Value bytes as a latin1 string. */
  value: string;
}

export interface Inode {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  /** st_size; ≤ 2^53 for regular files (larger ones cannot be written). */
  size: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** Backing path (regular files) or symlink target; null = unset. */
  payload: string | null;
  /** Inline file content (bytes as a latin1 string); null = none. */
  content: string | null;
  /** fs-verity SHA-256 digest of the content, 64 lower-case hex characters; null = unknown. */
  digest: string | null;
  /** In insertion order; keys are unique. */
  xattrs: Xattr[];
  /** Directories only: entries sorted by name (byte order). */
  children: Dirent[] | null;
}

export interface Dirent {
  name: string;
  inode: Inode;
  /** A hardlink name: the inode is owned (placed in the image) by another Dirent. */
  link: boolean;
}

/** "ab/cdef…": where a digest store keeps the object of `hexDigest` (the payload mkcomposefs gives it). */
export function objectRelPath(hexDigest: string): string {
  return `${hexDigest.slice(0, 2)}/${hexDigest.slice(2)}`;
}

export function newInode(mode: number, fields?: Partial<Inode>): Inode {
  const inode: Inode = {
    mode,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    size: 0,
    mtimeSec: 0n,
    mtimeNsec: 0,
    payload: null,
    content: null,
    digest: null,
    xattrs: [],
    children: (mode & S_IFMT) === S_IFDIR ? [] : null,
  };
  return fields ? Object.assign(inode, fields) : inode;
}

export const isDir = (inode: Inode): boolean => (inode.mode & S_IFMT) === S_IFDIR;
export const fileType = (inode: Inode): number => inode.mode & S_IFMT;

/** Binary search for a child by name; returns its index or -(insertion point) - 1. */
export function findChild(children: Dirent[], name: string): number {
  let lo = 0;
  let hi = children.length;
  if (hi > 0) {
    const last = children[hi - 1].name;
    if (name === last) return hi - 1;
    if (name > last) return -hi - 1;
  }
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const n = children[mid].name;
    if (n === name) return mid;
    if (n < name) lo = mid + 1;
    else hi = mid;
  }
  return -lo - 1;
}

/** Insert keeping byte order; returns false if the name exists. */
export function addChild(dir: Inode, dirent: Dirent): boolean {
  const children = dir.children!;
  const i = findChild(children, dirent.name);
  if (i >= 0) return false;
  const at = -i - 1;
  if (at === children.length) children.push(dirent);
  else children.splice(at, 0, dirent);
  return true;
}

