/**
 * Getting a /dev/fuse connection without root: fusermount3 (setuid, Debian's fuse3) mounts and
 * hands the device fd back over a socketpair (SCM_RIGHTS), which Node cannot receive by itself,
 * so socketpair(2) and recvmsg(2) go through koffi. Also: finding FUSE mounts in mountinfo,
 * unmounting them, and open/close of object files outside Node's fd bookkeeping (which warns
 * when one worker thread closes what another opened).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import koffi from 'koffi';
import { CfsError, ErrorCode } from '../format/index.js';

interface Libc {
  socketpair: (domain: number, type: number, proto: number, sv: number[]) => number;
  recvmsg: (fd: number, msg: Buffer, flags: number) => number;
  close: (fd: number) => number;
  open: (path: Buffer, flags: number) => number;
}
let libc: Libc | undefined;
function load(): Libc {
  if (!libc) {
    const lib = koffi.load('libc.so.6');
    libc = {
      socketpair: lib.func('int socketpair(int, int, int, _Out_ int *sv)'),
      recvmsg: lib.func('long recvmsg(int, void *msg, int)'),
      close: lib.func('int close(int)'),
      open: lib.func('int open(const void *path, int flags)'),
    };
  }
  return libc;
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

/** Receive one fd sent with SCM_RIGHTS on `sock` (x86-64/aarch64 struct msghdr layout). */
function receiveFd(c: Libc, sock: number): number | null {
  const data = Buffer.alloc(8);
  const control = Buffer.alloc(64);
  const iov = Buffer.alloc(16); // struct iovec { base, len }
  iov.writeBigUInt64LE(BigInt(koffi.address(data) as number | bigint), 0);
  iov.writeBigUInt64LE(1n, 8);
  const msg = Buffer.alloc(56); // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags
  msg.writeBigUInt64LE(BigInt(koffi.address(iov) as number | bigint), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(BigInt(koffi.address(control) as number | bigint), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  if (c.recvmsg(sock, msg, 0) < 0) return null;
  // struct cmsghdr { size_t len; int level; int type; } then the fd
  if (msg.readBigUInt64LE(40) < 20n || control.readInt32LE(8) !== SOL_SOCKET || control.readInt32LE(12) !== SCM_RIGHTS) return null;
  return control.readInt32LE(16);
}

/**
 * Mount a FUSE file system at `target` through fusermount3; returns the /dev/fuse fd to serve.
 * `options` are mount options fusermount3 accepts (ro, default_permissions, fsname=, subtype=).
 */
export function fuseMount(target: string, options: string[]): number {
  const c = load();
  const sv = [-1, -1];
  if (c.socketpair(AF_UNIX, SOCK_STREAM, 0, sv) !== 0) throw new CfsError(ErrorCode.Io, `socketpair failed (errno ${koffi.errno()})`, { input: target });
  try {
    const r = spawnSync('fusermount3', ['-o', options.join(','), '--', target], {
      stdio: ['ignore', 'ignore', 'pipe', sv[0]],
      env: { ...process.env, _FUSE_COMMFD: '3' },
      encoding: 'utf8',
    });
    if (r.error) throw new CfsError(ErrorCode.Io, `cannot run fusermount3 (apt install fuse3): ${r.error.message}`, { input: target });
    if (r.status !== 0) throw new CfsError(ErrorCode.Io, `fusermount3 failed: ${r.stderr.trim().replace(/^fusermount3: /, '')}`, { input: target });
    const fd = receiveFd(c, sv[1]);
    if (fd === null) throw new CfsError(ErrorCode.Io, 'fusermount3 did not pass back the /dev/fuse descriptor', { input: target });
    return fd;
  } finally {
    c.close(sv[0]);
    c.close(sv[1]);
  }
}

/** open(2) of a path given as bytes; returns the fd or -errno. */
export function rawOpen(path: Buffer, flags: number): number {
  const fd = load().open(Buffer.concat([path, Buffer.from([0])]), flags);
  return fd >= 0 ? fd : -koffi.errno();
}

export const rawClose = (fd: number): void => void load().close(fd);

/** Unmount a FUSE mount (ours or fuse-overlayfs); returns an error text or null. */
export function fuseUnmount(target: string, lazy = false): string | null {
  const r = spawnSync('fusermount3', ['-u', ...(lazy ? ['-z'] : []), '--', target], { encoding: 'utf8' });
  return r.status === 0 ? null : (r.stderr || r.error?.message || 'fusermount3 -u failed').trim();
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescapeMountinfo = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The file system type mounted at `target` (the topmost mount), or null if nothing is. */
export function mountedType(target: string): string | null {
  const want = Buffer.from(target).toString('latin1');
  let type: string | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'latin1').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || unescapeMountinfo(f[4]) !== want) continue;
    type = f[sep + 1];
  }
  return type;
}
