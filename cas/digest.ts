/** fs-verity digest of a file, streamed. Kept apart from the store so hashing workers load little. */
import * as fs from 'node:fs';
import { FsVerityHasher } from '../format/fsverity.js';

/** Read buffer (per thread; allocating 1 MiB per file costs more than hashing it). */
let readBuf: Buffer | null = null;

export function digestOfFile(file: string | Buffer): { digest: string; size: number } {
  const fd = fs.openSync(file, 'r');
  try {
    const h = new FsVerityHasher();
    const buf = (readBuf ??= Buffer.allocUnsafe(1 << 20));
    let size = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { digest: h.digest().toString('hex'), size };
  } finally {
    fs.closeSync(fd);
  }
}
