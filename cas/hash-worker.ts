/**
 * Hash helper process: fs-verity digests of files. Receives batches of paths, answers hex
 * digests, one batch per turn of its event loop so that messages are read as they come: a
 * `reclaim` request gets back, unhashed, every batch still waiting here.
 */
import { type DigestOrError, digestsOf } from './digest.js';

export interface HashRequest {
  /** the request's number, echoed back */
  id: number;
  /** Paths as latin1 strings: a Buffer would be cloned with its whole 8 KiB pool slab. */
  paths: string[];
  /** their sizes, as submitted */
  sizes: number[];
}
export interface ReclaimRequest {
  reclaim: true;
}
/** `ready` first, once loaded; then answers and given-back batches. */
export type HashReply = { ready: true } | { id: number; results: DigestOrError[] } | { reclaimed: number[] };

const waiting: HashRequest[] = [];
let scheduled = false;

function work(): void {
  scheduled = false;
  const req = waiting.shift();
  if (!req) return;
  process.send!({ id: req.id, results: digestsOf(req.paths, req.sizes) } satisfies HashReply);
  schedule();
}

function schedule(): void {
  if (scheduled || waiting.length === 0) return;
  scheduled = true;
  setImmediate(work);
}

process.on('message', (req: HashRequest | ReclaimRequest) => {
  if ('reclaim' in req) {
    process.send!({ reclaimed: waiting.splice(0).map((r) => r.id) } satisfies HashReply);
    return;
  }
  waiting.push(req);
  schedule();
});

// loaded (the native hasher included): work sent now is started at once
process.send!({ ready: true } satisfies HashReply);
