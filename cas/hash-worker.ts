/** Hash helper process: fs-verity digests of files. Receives batches of paths, answers hex digests. */
import { digestOfFile } from './digest.js';

export interface HashRequest {
  id: number;
  /** Paths as latin1 strings: a Buffer would be cloned with its whole 8 KiB pool slab. */
  paths: string[];
  /** total size of the files, echoed back for load balancing */
  bytes: number;
}
export interface HashReply {
  id: number;
  bytes: number;
  results: ({ digest: string; size: number } | { error: string; code?: string })[];
}

process.on('message', (req: HashRequest) => {
  const results = req.paths.map((p) => {
    try {
      return digestOfFile(Buffer.from(p, 'latin1'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { error: err.message, code: err.code };
    }
  });
  process.send!({ id: req.id, bytes: req.bytes, results } satisfies HashReply);
});
