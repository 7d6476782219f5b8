/** fs-verity digest of a file, streamed. Kept apart from the store so hashing workers load little. */
import * as fs from 'node:fs';
import type { FsVerityHasher } from '../format/fsverity.js';
import { newVerityHasher } from './sha256-native.js';
import { RawReader, errnoCode, errnoMessage } from './sys.js';

/**
 * Read buffer (per thread; allocating one per file costs more than hashing it). 64 KiB reads
 * were the fastest here: on big files one after another, 256 KiB reads took 40% more time
 * (most of it in the kernel), 32 and 128 KiB 5-15% more.
 */
let readBuf: Buffer | null = null;
let hasher: FsVerityHasher | null = null;
let raw: RawReader | null | undefined;

export function digestOfFile(file: string | Buffer): { digest: string; size: number } {
  const fd = fs.openSync(file, 'r');
  try {
    return digestOfFd(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A file's digest and size, or why it could not be read. */
export type DigestOrError = { digest: string; size: number } | { error: string; code?: string };

/**
 * Digests of files named by latin1 paths (one char per byte); an unreadable file gives its
 * error. `sizes` (as lstat gave them) spare the read that would only return end-of-file.
 */
export function digestsOf(latin1Paths: string[], sizes?: number[]): DigestOrError[] {
  if (raw === undefined) raw = process.env.CFS_NO_RAW_IO ? null : RawReader.create();
  const r = raw;
  return latin1Paths.map((p, i) => {
    if (r) return rawDigestOf(r, p, sizes?.[i]);
    try {
      return digestOfFile(Buffer.from(p, 'latin1'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return err.errno !== undefined && err.syscall ? failure(-err.errno, err.syscall) : { error: err.message, code: err.code };
    }
  });
}

function rawDigestOf(r: RawReader, latin1Path: string, expected?: number): DigestOrError {
  const fd = r.open(latin1Path);
  if (fd < 0) return failure(-fd, 'open');
  try {
    const d = hashReads((buf) => r.read(fd, buf), expected);
    return typeof d === 'number' ? failure(-d, 'read') : d;
  } finally {
    r.close(fd);
  }
}

/**
 * fs-verity digest and size of what `read` gives until it gives 0, or the -errno of a failed
 * read. A short read once `expected` bytes are in ends it too: for a regular file the next read
 * would return 0 (a file that grows meanwhile is caught no better by reading on).
 */
function hashReads(read: (buf: Buffer) => number, expected = Infinity): { digest: string; size: number } | number {
  const h = (hasher ??= newVerityHasher()).reset();
  const buf = (readBuf ??= Buffer.allocUnsafe(64 << 10));
  let size = 0;
  for (;;) {
    const n = read(buf);
    if (n < 0) return n;
    if (n === 0) break;
    h.update(buf, n);
    size += n;
    if (n < buf.length && size >= expected) break;
  }
  return { digest: h.digest().toString('hex'), size };
}

const failure = (e: number, syscall: string): DigestOrError => ({ error: `${errnoMessage(e)} (${syscall})`, code: errnoCode(e) });

/** fs-verity digest of what is left to read from `fd`. */
export function digestOfFd(fd: number): { digest: string; size: number } {
  // fs.readSync throws rather than return an errno
  return hashReads((buf) => fs.readSync(fd, buf, 0, buf.length, null)) as { digest: string; size: number };
}
