/** Hash helper process: fs-verity digests of files. Receives batches of paths, answers hex digests. */
import { type DigestOrError, digestsOf } from './digest.js';

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
  results: DigestOrError[];
}

process.on('message', (req: HashRequest) => {
  process.send!({ id: req.id, bytes: req.bytes, results: digestsOf(req.paths) } satisfies HashReply);
});
