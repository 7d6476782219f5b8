/**
 * The few Linux calls Node lacks, through koffi: flock(2), syncfs(2), the fs-verity ioctls,
 * for extracting trees mknod(2) and utimensat(2) (Node's utimes rounds nanoseconds), and glibc's
 * malloc_trim(3); and open/read/close for hashing many small files (RawReader).
 * If libc cannot be loaded the callers fall back (no lock → warn, no syncfs → fsync per file);
 * mknod and utimensat throw.
 */
import * as os from 'node:os';
import * as util from 'node:util';
import koffi from 'koffi';
import { makedev32 } from '../format/layout.js';

type KoffiFn<A extends unknown[]> = ((...a: A) => number) & { async: (...a: [...A, (err: unknown, res: number) => void]) => void };

interface Libc {
  flock: (fd: number, op: number) => number;
  syncfs: KoffiFn<[number]>;
  ioctl: (fd: number, req: number, arg: Buffer) => number;
  mknod: (path: Buffer, mode: number, dev: bigint) => number;
  utimensat: (dirfd: number, path: Buffer, times: Buffer, flags: number) => number;
  statx: (dirfd: number, path: Buffer, flags: number, mask: number, buf: Buffer) => number;
  mallocTrim: (pad: number) => number;
  open: (path: number, flags: number) => number;
  read: (fd: number, buf: number, n: number) => number;
  close: (fd: number) => number;
  /** null where glibc lacks it (before 2.30) */
  getdents64: ((fd: number, buf: number, n: number) => number) | null;
}

let libc: Libc | null | undefined;

function optional<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}
function load(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const lib = koffi.load('libc.so.6');
    libc = {
      flock: lib.func('int flock(int fd, int op)'),
      syncfs: lib.func('int syncfs(int fd)') as KoffiFn<[number]>,
      // ioctl is variadic; one pointer argument has the same ABI as a fixed one on Linux.
      ioctl: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
      mknod: lib.func('int mknod(const void *path, uint32_t mode, uint64_t dev)'),
      utimensat: lib.func('int utimensat(int dirfd, const void *path, const void *times, int flags)'),
      statx: lib.func('int statx(int dirfd, const void *path, int flags, unsigned int mask, _Out_ void *buf)'),
      mallocTrim: lib.func('int malloc_trim(size_t pad)'),
      // open is variadic; without O_CREAT it reads no third argument.
      open: lib.func('int open(uintptr_t path, int flags)'),
      read: lib.func('long read(int fd, uintptr_t buf, size_t n)'),
      close: lib.func('int close(int fd)'),
      getdents64: optional(() => lib.func('long getdents64(int fd, uintptr_t buf, size_t n)')),
    };
  } catch {
    libc = null;
  }
  return libc;
}

const errno = (): number => koffi.errno();
const EINTR = 4;

/** `call()` again while it fails with EINTR: its result, or -errno. */
function retried(call: () => number): number {
  for (;;) {
    const r = call();
    if (r >= 0) return r;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

const REMEMBER = 8;
const REMEMBER_MAX = 64 << 10;
const seen: (Uint8Array | null)[] = new Array<Uint8Array | null>(REMEMBER).fill(null);
const seenAt: number[] = new Array<number>(REMEMBER).fill(0);
let nextSeen = 0;

/**
 * A buffer's address for a C call, the last few remembered: hashing goes through the same few
 * small buffers file after file (path, read buffer, hash context, partial block, tree levels,
 * descriptor), and koffi.address costs as much as a third of a block's hash call. Remembered
 * buffers stay referenced, so they cannot move; big ones (an image hashed whole) are not
 * remembered, so as not to keep them alive.
 */
export function addressOf(b: Uint8Array): number {
  for (let i = 0; i < REMEMBER; i++) if (seen[i] === b) return seenAt[i];
  const a = Number(koffi.address(b));
  if (b.buffer.byteLength > REMEMBER_MAX) return a;
  seen[nextSeen] = b;
  seenAt[nextSeen] = a;
  nextSeen = (nextSeen + 1) % REMEMBER;
  return a;
}

const EWOULDBLOCK = 11;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
const LOCK_NB = 4;
export const LOCK_UN = 8;

/** flock(fd, op); false if libc is unavailable or (nonBlocking) the lock is held elsewhere. */
export function flock(fd: number, op: number, nonBlocking = false): boolean {
  const c = load();
  if (!c) return false;
  for (;;) {
    if (c.flock(fd, op | (nonBlocking ? LOCK_NB : 0)) === 0) return true;
    const e = errno();
    if (e === EINTR) continue;
    if (e === EWOULDBLOCK) return false;
    throw Object.assign(new Error(`flock failed (errno ${e})`), { code: 'EFLOCK', syscall: 'flock' });
  }
}

/** syncfs on a koffi worker thread, to start writeback early; resolves false when unavailable. */
export function syncfsAsync(fd: number): Promise<boolean> {
  const c = load();
  if (!c) return Promise.resolve(false);
  return new Promise((resolve) => c.syncfs.async(fd, (err, res) => resolve(!err && res === 0)));
}

/**
 * Give the heap's free pages back to the system (glibc's libc.so.6; false where it cannot be
 * loaded). After a full collection, the buffers it freed stay in malloc's arenas otherwise:
 * about 25 MB on /usr.
 */
export function mallocTrim(): boolean {
  const c = load();
  c?.mallocTrim(0);
  return c !== null;
}

/** Flush the whole file system holding fd; false when unavailable. */
export function syncfs(fd: number): boolean {
  const c = load();
  return !!c && c.syncfs(fd) === 0;
}

// <linux/fsverity.h>
const FS_IOC_ENABLE_VERITY = 0x40806685; // _IOW('f', 133, struct fsverity_enable_arg /* 128 bytes */)
const FS_IOC_MEASURE_VERITY = 0xc0046686; // _IOWR('f', 134, struct fsverity_digest /* 4 + n */)
const FS_VERITY_HASH_ALG_SHA256 = 1;
const UNSUPPORTED = new Set([95 /* EOPNOTSUPP */, 25 /* ENOTTY */, 22 /* EINVAL */, 38 /* ENOSYS */]);
const ENODATA = 61;
const EEXIST = 17;

export type VerityResult = 'enabled' | 'unsupported' | { errno: number };

/** Enable fs-verity (SHA-256, 4 KiB blocks, no salt) on a file opened read-only. */
export function enableVerity(fd: number): VerityResult {
  const c = load();
  if (!c) return 'unsupported';
  const arg = Buffer.alloc(128);
  arg.writeUInt32LE(1, 0); // version
  arg.writeUInt32LE(FS_VERITY_HASH_ALG_SHA256, 4); // hash_algorithm
  arg.writeUInt32LE(4096, 8); // block_size
  if (c.ioctl(fd, FS_IOC_ENABLE_VERITY, arg) === 0) return 'enabled';
  const e = errno();
  if (e === EEXIST) return 'enabled';
  return UNSUPPORTED.has(e) ? 'unsupported' : { errno: e };
}

/** The kernel's fs-verity digest of a file (hex), null if verity is off, 'unsupported'. */
export function measureVerity(fd: number): string | null | 'unsupported' {
  const c = load();
  if (!c) return 'unsupported';
  const arg = Buffer.alloc(4 + 64);
  arg.writeUInt16LE(64, 2); // digest_size: room available
  if (c.ioctl(fd, FS_IOC_MEASURE_VERITY, arg) === 0) {
    if (arg.readUInt16LE(0) !== FS_VERITY_HASH_ALG_SHA256) return null;
    return arg.subarray(4, 4 + arg.readUInt16LE(2)).toString('hex');
  }
  const e = errno();
  if (e === ENODATA) return null;
  return 'unsupported';
}

/** `path` with the NUL a C call needs. */
export const cPath = (path: Buffer): Buffer => Buffer.concat([path, Buffer.from([0])]);

/** errno's name (ENOENT), as Node's errors give it in `code`. */
export const errnoCode = (e: number): string => Object.entries(os.constants.errno).find(([, v]) => v === e)?.[0] ?? `errno ${e}`;

/** errno's description (no such file or directory). */
export const errnoMessage = (e: number): string => util.getSystemErrorMap().get(-e)?.[1] ?? `errno ${e}`;

/** An Error shaped like Node's own (code, errno, syscall, path), so CLIs report it the same way. */
function sysError(syscall: string, e: number, path: Buffer): NodeJS.ErrnoException {
  const code = errnoCode(e);
  const p = path.toString('latin1');
  return Object.assign(new Error(`${code}: ${errnoMessage(e)}, ${syscall} '${p}'`), { code, errno: -e, syscall, path: p });
}

function required(syscall: string): Libc {
  const c = load();
  if (!c) throw Object.assign(new Error(`${syscall} is unavailable (libc not loaded)`), { code: 'ENOSYS', syscall });
  return c;
}

/** mknod(2): a device, fifo or socket node; `dev` in glibc's dev_t encoding. */
export function mknod(path: Buffer, mode: number, dev: number): void {
  if (required('mknod').mknod(cPath(path), mode, BigInt(dev)) !== 0) throw sysError('mknod', errno(), path);
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;

/** Set atime and mtime of `path` (not following a symlink) to the same second and nanosecond. */
export function setTimes(path: Buffer, sec: bigint, nsec: number): void {
  const times = Buffer.alloc(32); // struct timespec[2]: atime, mtime
  for (const at of [0, 16]) {
    times.writeBigInt64LE(sec, at);
    times.writeBigInt64LE(BigInt(nsec), at + 8);
  }
  if (required('utimensat').utimensat(AT_FDCWD, cPath(path), times, AT_SYMLINK_NOFOLLOW) !== 0) throw sysError('utimensat', errno(), path);
}

/** What the directory scan needs of lstat. */
export interface LstatResult {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** st_rdev in glibc's dev_t encoding, truncated to 32 bits as mkcomposefs stores it. */
  rdev: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  /** st_dev in glibc's encoding, and st_ino: exact. */
  dev: bigint;
  ino: bigint;
}

const STATX_BASIC_STATS = 0x7ff;
const statxBuf = Buffer.alloc(256);

/** glibc's makedev(major, minor) as a 64-bit value. */
const makedev = (major: number, minor: number): bigint =>
  (BigInt(major & 0xfffff000) << 32n) | (BigInt(major & 0xfff) << 8n) | (BigInt(minor & 0xffffff00) << 12n) | BigInt(minor & 0xff);

/** makedev of the last call again (a scan meets one or a few devices): no BigInt arithmetic per entry. */
let lastDev: [major: number, minor: number, dev: bigint] = [-1, -1, 0n];
function devOf(major: number, minor: number): bigint {
  if (major !== lastDev[0] || minor !== lastDev[1]) lastDev = [major, minor, makedev(major, minor)];
  return lastDev[2];
}

/**
 * lo + hi * 2^32, as the small integer `lo` when `hi` is 0 (almost always): a double here would
 * make V8 store every size and time of a scanned tree as a boxed number.
 */
const join64 = (lo: number, hi: number): number => (hi === 0 ? lo : lo + hi * 2 ** 32);

/**
 * lstat of a NUL-terminated path through statx(2), into plain numbers: Node's BigIntStats
 * allocates 14 BigInts and 4 Dates per call, which shows on trees of 100k+ entries.
 */
export function lstatx(pathZ: Buffer): LstatResult {
  if (required('statx').statx(AT_FDCWD, pathZ, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, statxBuf) !== 0) {
    throw sysError('lstat', errno(), pathZ.subarray(0, pathZ.length - 1));
  }
  const b = statxBuf;
  return {
    mode: b.readUInt16LE(28),
    nlink: b.readUInt32LE(16),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    rdev: makedev32(b.readUInt32LE(128), b.readUInt32LE(132)),
    size: join64(b.readUInt32LE(40), b.readUInt32LE(44)),
    mtimeSec: join64(b.readUInt32LE(112), b.readInt32LE(116)),
    mtimeNsec: b.readUInt32LE(120),
    ctimeSec: join64(b.readUInt32LE(96), b.readInt32LE(100)),
    ctimeNsec: b.readUInt32LE(104),
    dev: devOf(b.readUInt32LE(136), b.readUInt32LE(140)),
    ino: b.readBigUInt64LE(32),
  };
}

const O_CLOEXEC = 0o2000000;

/**
 * open(2) read-only, read(2), close(2) called directly: Node's fs calls cost about 3 µs more
 * per file, which shows on 100k small files. Failures return -errno, as the kernel does.
 */
export class RawReader {
  private pathBuf = Buffer.alloc(4096);

  private constructor(private readonly c: Libc) {}

  /** null where libc cannot be loaded. */
  static create(): RawReader | null {
    const c = load();
    return c ? new RawReader(c) : null;
  }

  /** Open a path given as a latin1 string of its bytes; an fd, or -errno. */
  open(latin1Path: string): number {
    if (latin1Path.length >= this.pathBuf.length) this.pathBuf = Buffer.alloc(latin1Path.length + 1);
    this.pathBuf[this.pathBuf.write(latin1Path, 0, 'latin1')] = 0;
    const path = addressOf(this.pathBuf);
    return retried(() => this.c.open(path, O_CLOEXEC));
  }

  /** Read up to `buf.length` bytes into `buf`; bytes read, or -errno. */
  read(fd: number, buf: Buffer): number {
    const at = addressOf(buf);
    return retried(() => this.c.read(fd, at, buf.length));
  }

  close(fd: number): void {
    this.c.close(fd);
  }
}

const O_DIRECTORY = 0o200000;
const DENTS_SIZE = 64 << 10;
let dents: Buffer | null = null;

/**
 * The names in a directory (without `.` and `..`, as latin1 strings of their bytes, in no
 * order), read with getdents64(2): Node's readdir has libuv sort them and allocate each name
 * first (on /usr's 20k directories, about 0.37 s of the scan instead of 0.46). Null where libc
 * or getdents64 is missing (read them with fs.readdirSync then); failures throw as Node's do.
 */
export function readDirNames(pathZ: Buffer): string[] | null {
  const c = load();
  if (!c?.getdents64) return null;
  const getdents64 = c.getdents64;
  const buf = (dents ??= Buffer.alloc(DENTS_SIZE));
  const at = addressOf(buf);
  const path = (): Buffer => pathZ.subarray(0, pathZ.length - 1);
  const pathAt = Number(koffi.address(pathZ)); // a new view each call: not one to remember
  const fd = retried(() => c.open(pathAt, O_DIRECTORY | O_CLOEXEC));
  if (fd < 0) throw sysError('scandir', -fd, path());
  const names: string[] = [];
  try {
    for (;;) {
      const n = retried(() => getdents64(fd, at, DENTS_SIZE));
      if (n === 0) break;
      if (n < 0) throw sysError('scandir', -n, path());
      // struct linux_dirent64: ino u64, off s64, reclen u16, type u8, NUL-terminated name
      for (let off = 0; off < n; ) {
        const reclen = buf.readUInt16LE(off + 16);
        const start = off + 19;
        const end = buf.indexOf(0, start);
        const len = end - start;
        if (!(len === 1 && buf[start] === 0x2e) && !(len === 2 && buf[start] === 0x2e && buf[start + 1] === 0x2e)) {
          names.push(buf.toString('latin1', start, end));
        }
        off += reclen;
      }
    }
  } finally {
    c.close(fd);
  }
  return names;
}
