/** Worker thread: fs-verity digests of files. Receives batches of paths, answers hex digests. */
import * as fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { FsVerityHasher } from '../format/fsverity.js';

const buf = Buffer.allocUnsafe(1 << 20);

export function digestFile(path: Buffer | string): { digest: string; size: number } {
  const fd = fs.openSync(path, 'r');
  try {
    const h = new FsVerityHasher();
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

export interface HashRequest {
  id: number;
  paths: Uint8Array[];
}
export interface HashReply {
  id: number;
  results: ({ digest: string; size: number } | { error: string; code?: string })[];
}

parentPort?.on('message', (req: HashRequest) => {
  const results = req.paths.map((p) => {
    try {
      return digestFile(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { error: err.message, code: err.code };
    }
  });
  parentPort!.postMessage({ id: req.id, results } satisfies HashReply);
});
