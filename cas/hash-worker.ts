/** Worker thread: fs-verity digests of files. Receives batches of paths, answers hex digests. */
import { parentPort } from 'node:worker_threads';
import { digestOfFile } from './digest.js';

export interface HashRequest {
  id: number;
  paths: Uint8Array[];
  /** total size of the files, echoed back for load balancing */
  bytes: number;
}
export interface HashReply {
  id: number;
  bytes: number;
  results: ({ digest: string; size: number } | { error: string; code?: string })[];
}

parentPort?.on('message', (req: HashRequest) => {
  const results = req.paths.map((p) => {
    try {
      return digestOfFile(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { error: err.message, code: err.code };
    }
  });
  parentPort!.postMessage({ id: req.id, bytes: req.bytes, results } satisfies HashReply);
});
