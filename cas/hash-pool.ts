/**
 * fs-verity digests of many files in helper processes (one per CPU by default) and on the
 * calling thread. The first 16 MiB submitted stay here, to be hashed in `drain()`; after that,
 * helpers start, and every later batch goes to one at once (to the one with the fewest bytes
 * outstanding), so hashing overlaps the caller's scan, which does not let the event loop run.
 * A small tree is hashed before a helper would be up, and a big one keeps every core busy.
 * Processes, not worker threads: the native hasher (koffi) is not safe to load in worker
 * threads (koffi issue 190; seen here too).
 */
import { type ChildProcess, fork } from 'node:child_process';
import * as os from 'node:os';
import type { HashReply, HashRequest } from './hash-worker.js';
import { digestOfFile } from './digest.js';

export interface HashResult {
  digest?: string;
  size?: number;
  error?: string;
  code?: string;
}

const BATCH_FILES = 16;
const BATCH_BYTES = 8 << 20;
/** The first batches up to this size are hashed by the caller in drain(), while helpers work. */
const LOCAL_BYTES = 16 << 20;

interface Lane {
  worker: ChildProcess;
  /** bytes sent and not answered yet */
  bytes: number;
  files: number;
}

export class HashPool {
  private readonly lanes: Lane[] = [];
  /** Batches kept for drain() (paths as latin1 strings: a Buffer would be cloned with its whole 8 KiB pool slab). */
  private readonly local: HashRequest[] = [];
  private localBytes = 0;
  private batch: string[] = [];
  private batchBytes = 0;
  private batchStart = 0;
  private submitted = 0;
  /** files submitted and not answered yet */
  private outstanding = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private closing = false;

  /** `threads` 0 hashes everything on the calling thread inside drain(). */
  constructor(
    private readonly threads: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {}

  private startHelpers(): void {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 0; t < this.threads; t++) {
      const lane: Lane = { worker: fork(url, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] }), bytes: 0, files: 0 };
      lane.worker.on('message', (reply: HashReply) => {
        reply.results.forEach((r, k) => this.onDone(reply.id + k, r));
        this.outstanding -= reply.results.length;
        lane.bytes -= reply.bytes;
        lane.files -= reply.results.length;
        this.wake?.();
      });
      lane.worker.on('error', (e) => {
        this.failure = e;
        this.wake?.();
      });
      lane.worker.on('exit', (code, signal) => {
        if (this.closing || lane.files === 0) return;
        this.failure ??= new Error(`hash helper exited (${signal ?? `status ${code}`}) with files outstanding`);
        this.wake?.();
      });
      this.lanes.push(lane);
    }
  }

  /** Queue one file of `size` bytes; its index is the order of submission. */
  submit(path: Buffer, size: number): number {
    this.outstanding++;
    if (this.batch.length === 0) this.batchStart = this.submitted; // batches hold consecutive indexes
    this.batch.push(path.toString('latin1'));
    this.batchBytes += size;
    if (this.batch.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) this.seal();
    return this.submitted++;
  }

  /** The current batch is kept for drain() while that share lasts, else sent to a helper. */
  private seal(): void {
    if (this.batch.length === 0) return;
    const req: HashRequest = { id: this.batchStart, paths: this.batch, bytes: this.batchBytes };
    this.batch = [];
    this.batchBytes = 0;
    if (this.threads === 0 || this.localBytes < LOCAL_BYTES) {
      this.local.push(req);
      this.localBytes += req.bytes;
      return;
    }
    if (this.lanes.length === 0) this.startHelpers();
    const lane = this.lanes.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    lane.bytes += req.bytes;
    lane.files += req.paths.length;
    lane.worker.send(req);
  }

  /** Wait for every submitted file, hashing the kept batches here meanwhile. */
  async drain(): Promise<void> {
    this.seal();
    while (this.outstanding > 0) {
      if (this.failure) throw this.failure;
      const req = this.local.pop();
      if (req) {
        this.hashHere(req);
        if (this.lanes.length > 0) await new Promise<void>((resolve) => setImmediate(resolve)); // let helpers' answers in
        continue;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    if (this.failure) throw this.failure;
  }

  private hashHere(req: HashRequest): void {
    req.paths.forEach((p, k) => {
      try {
        this.onDone(req.id + k, digestOfFile(Buffer.from(p, 'latin1')));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        this.onDone(req.id + k, { error: err.message, code: err.code });
      }
    });
    this.outstanding -= req.paths.length;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.lanes.splice(0).map((l) => {
        if (l.worker.exitCode !== null || l.worker.signalCode !== null) return Promise.resolve();
        const exited = new Promise<void>((resolve) => l.worker.once('exit', () => resolve()));
        l.worker.kill();
        return exited;
      }),
    );
  }
}

export const defaultThreads = (): number => os.availableParallelism();
