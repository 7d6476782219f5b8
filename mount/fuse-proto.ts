/**
 * The subset of the kernel FUSE protocol (include/uapi/linux/fuse.h, version 7.31) a read-only
 * file system needs: opcodes, INIT flags and the byte layout of the structs we read and write,
 * with the kernel's field names. All integers are little endian (host order on x86-64/aarch64).
 */

export const FUSE_KERNEL_VERSION = 7;
/** The minor version we speak; the kernel adapts down to it. */
export const FUSE_KERNEL_MINOR = 31;
export const FUSE_ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  READLINK: 5,
  OPEN: 14,
  READ: 15,
  STATFS: 17,
  RELEASE: 18,
  GETXATTR: 22,
  LISTXATTR: 23,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  READDIRPLUS: 44,
} as const;

/** INIT flags we ask for (granted only where the kernel offers them). */
export const Init = {
  ASYNC_READ: 1 << 0,
  DO_READDIRPLUS: 1 << 13,
  PARALLEL_DIROPS: 1 << 18,
  POSIX_ACL: 1 << 20,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
} as const;

/** fuse_open_out.open_flags */
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_CACHE_DIR = 1 << 3;

/** struct fuse_in_header, 40 bytes. */
export const IN_HEADER = { SIZE: 40, len: 0, opcode: 4, unique: 8, nodeid: 16, uid: 24, gid: 28, pid: 32 } as const;
/** struct fuse_out_header, 16 bytes. */
export const OUT_HEADER = { SIZE: 16, len: 0, error: 4, unique: 8 } as const;
/** struct fuse_init_in (first 16 bytes are enough at 7.31). */
export const INIT_IN = { major: 0, minor: 4, maxReadahead: 8, flags: 12 } as const;
/** struct fuse_init_out, 64 bytes. */
export const INIT_OUT = {
  SIZE: 64,
  major: 0,
  minor: 4,
  maxReadahead: 8,
  flags: 12,
  maxBackground: 16, // u16
  congestionThreshold: 18, // u16
  maxWrite: 20,
  timeGran: 24,
  maxPages: 28, // u16
} as const;
/** struct fuse_attr, 88 bytes. */
export const ATTR = {
  SIZE: 88,
  ino: 0,
  size: 8,
  blocks: 16,
  atime: 24,
  mtime: 32,
  ctime: 40,
  atimensec: 48,
  mtimensec: 52,
  ctimensec: 56,
  mode: 60,
  nlink: 64,
  uid: 68,
  gid: 72,
  rdev: 76,
  blksize: 80,
  flags: 84,
} as const;
/** struct fuse_entry_out, 128 bytes: the attr follows the validity times. */
export const ENTRY_OUT = { SIZE: 40 + ATTR.SIZE, nodeid: 0, generation: 8, entryValid: 16, attrValid: 24, entryValidNsec: 32, attrValidNsec: 36, attr: 40 } as const;
/** struct fuse_attr_out, 104 bytes. */
export const ATTR_OUT = { SIZE: 16 + ATTR.SIZE, attrValid: 0, attrValidNsec: 8, attr: 16 } as const;
/** struct fuse_open_in (flags only) and fuse_open_out, 16 bytes. */
export const OPEN_IN = { flags: 0 } as const;
export const OPEN_OUT = { SIZE: 16, fh: 0, openFlags: 8 } as const;
/** struct fuse_read_in (READ, READDIR, READDIRPLUS). */
export const READ_IN = { fh: 0, offset: 8, size: 16 } as const;
/** struct fuse_release_in. */
export const RELEASE_IN = { fh: 0 } as const;
/** struct fuse_getxattr_in (then the name for GETXATTR) and fuse_getxattr_out. */
export const GETXATTR_IN = { SIZE: 8, size: 0 } as const;
export const GETXATTR_OUT = { SIZE: 8, size: 0 } as const;
/** struct fuse_kstatfs, 80 bytes. */
export const KSTATFS = { SIZE: 80, blocks: 0, bfree: 8, bavail: 16, files: 24, ffree: 32, bsize: 40, namelen: 44, frsize: 48 } as const;
/** struct fuse_dirent: ino, off, namelen, type, then the name padded to 8 bytes. */
export const DIRENT = { SIZE: 24, ino: 0, off: 8, namelen: 16, type: 20 } as const;
export const direntSize = (nameLen: number): number => (DIRENT.SIZE + nameLen + 7) & ~7;

export const Errno = { ENOENT: 2, EIO: 5, EBADF: 9, ENOTDIR: 20, ERANGE: 34, ENOSYS: 38, EROFS: 30, ENODATA: 61, EPROTO: 71 } as const;
