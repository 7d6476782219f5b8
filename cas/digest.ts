/** fs-verity digest of a file, streamed. Kept apart from the store so hashing workers load little. */
import * as fs from 'node:fs';
import type { FsVerityHasher } from '../format/fsverity.js';
import { newVerityHasher } from './sha256-native.js';

/**
 * Read buffer (per thread; allocating one per file costs more than hashing it). 64 KiB reads
 * were the fastest here: on big files one after another, 256 KiB reads took 40% more time
 * (most of it in the kernel), 32 and 128 KiB 5-15% more.
 */
let readBuf: Buffer | null = null;
let hasher: FsVerityHasher | null = null;

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

/** Digests of files named by latin1 paths (one char per byte); an unreadable file gives its error. */
export function digestsOf(latin1Paths: string[]): DigestOrError[] {
  return latin1Paths.map((p) => {
    try {
      return digestOfFile(Buffer.from(p, 'latin1'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { error: err.message, code: err.code };
    }
  });
}

/** fs-verity digest of what is left to read from `fd`. */
export function digestOfFd(fd: number): { digest: string; size: number } {
  const h = (hasher ??= newVerityHasher()).reset();
  const buf = (readBuf ??= Buffer.allocUnsafe(64 << 10));
  let size = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    h.update(buf.subarray(0, n));
    size += n;
  }
  return { digest: h.digest().toString('hex'), size };
}
