/**
 * Extended attributes of a path without following symlinks (llistxattr/lgetxattr through koffi),
 * with byte-exact paths, names and values: file names need not be UTF-8.
 */
import koffi from 'koffi';
import { cPath } from './sys.js';

const libc = koffi.load('libc.so.6');
const llistxattr = libc.func('long llistxattr(const void *path, _Out_ void *list, size_t size)');
const lgetxattr = libc.func('long lgetxattr(const void *path, const void *name, _Out_ void *value, size_t size)');
const lsetxattr = libc.func('int lsetxattr(const void *path, const void *name, const void *value, size_t size, int flags)');

const ENODATA = 61;
const ENOTSUP = 95;
const ERANGE = 34;
const MAX = 65536;

export class XattrError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

// Scratch buffers, reused: a 64 KiB allocation per file would cost more than the syscalls.
const listBuf = Buffer.allocUnsafe(4096);
const value = Buffer.allocUnsafe(MAX);

/** All xattrs of `path` as latin1 (name, value) strings, in listing order. */
export function readXattrs(path: Buffer, filter?: (name: string) => boolean): [string, string][] {
  return readXattrsZ(cPath(path), filter);
}

/** readXattrs of a path given NUL-terminated. */
export function readXattrsZ(p: Buffer, filter?: (name: string) => boolean): [string, string][] {
  let buf = listBuf;
  let n = llistxattr(p, buf, buf.length) as number;
  if (n < 0 && koffi.errno() === ERANGE) {
    const size = llistxattr(p, null, 0) as number;
    buf = Buffer.allocUnsafe(Math.max(size, 1));
    n = llistxattr(p, buf, buf.length) as number;
  }
  if (n < 0) {
    const errno = koffi.errno();
    if (errno === ENOTSUP) return [];
    throw new XattrError(errno, `listing xattrs failed (errno ${errno})`);
  }
  const out: [string, string][] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    if (buf[i] !== 0) continue;
    const nameBytes = buf.subarray(start, i + 1);
    const name = buf.toString('latin1', start, i);
    start = i + 1;
    if (filter && !filter(name)) continue;
    const len = lgetxattr(p, nameBytes, value, value.length) as number;
    if (len < 0) {
      const errno = koffi.errno();
      if (errno === ENODATA) continue; // removed meanwhile
      throw new XattrError(errno, `reading xattr ${name} failed (errno ${errno})`);
    }
    out.push([name, value.toString('latin1', 0, len)]);
  }
  return out;
}

/** Set one xattr (latin1 name and value) on `path` without following a symlink. */
export function writeXattr(path: Buffer, name: string, value: string): void {
  const v = Buffer.from(value, 'latin1');
  if (lsetxattr(cPath(path), Buffer.from(name + '\0', 'latin1'), v, v.length, 0) !== 0) {
    const errno = koffi.errno();
    throw new XattrError(errno, `setting xattr ${name} failed (errno ${errno})`);
  }
}
