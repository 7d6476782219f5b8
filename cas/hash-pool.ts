/**
 * fs-verity digests of many files, by `workers` hashers: the caller (in `drain()`) and
 * `workers - 1` helper processes. Submitted files are batched into a queue; each helper is kept
 * a few batches ahead (more are sent as it answers), and the caller takes batches from the same
 * queue once it drains. A caller that scans while it submits (cfs-writer) must let its event loop
 * run every few milliseconds so the helpers' answers come in and they get more work.
 * The first 16 MiB never wait for a helper to start: a small tree is hashed before one would be up.
 * Processes, not worker threads: the native hasher (koffi) is not safe to load in worker
 * threads (koffi issue 190; seen here too).
 */
import { type ChildProcess, fork } from 'node:child_process';
import * as os from 'node:os';
import type { HashReply, HashRequest } from './hash-worker.js';
import { digestsOf } from './digest.js';

export interface HashResult {
  digest?: string;
  size?: number;
  error?: string;
  code?: string;
}

const BATCH_FILES = 16;
const BATCH_BYTES = 8 << 20;
/** Helpers start once this much is queued; less is hashed by the caller alone. */
const LOCAL_BYTES = 16 << 20;
/** Work sent ahead to one helper: enough to keep it busy between two turns of the caller's event loop. */
const AHEAD_BYTES = 32 << 20;
const AHEAD_BATCHES = 64;

interface Lane {
  worker: ChildProcess;
  /** bytes and batches sent and not answered yet */
  bytes: number;
  batches: number;
}

export class HashPool {
  private readonly lanes: Lane[] = [];
  /** Sealed batches no one has taken yet (paths as latin1 strings: a Buffer would be cloned with its whole 8 KiB pool slab). */
  private readonly queue: HashRequest[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private batch: string[] = [];
  private batchBytes = 0;
  private batchStart = 0;
  private submitted = 0;
  /** files submitted and not answered yet */
  private outstanding = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private closing = false;

  /** `workers` hashers in all, the caller included: 0 or 1 hashes everything in drain(). */
  constructor(
    private readonly workers: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {}

  private startHelpers(): void {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 1; t < this.workers; t++) {
      const lane: Lane = { worker: fork(url, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] }), bytes: 0, batches: 0 };
      lane.worker.on('message', (reply: HashReply) => {
        reply.results.forEach((r, k) => this.onDone(reply.id + k, r));
        this.outstanding -= reply.results.length;
        lane.bytes -= reply.bytes;
        lane.batches--;
        this.feed();
        this.wake?.();
      });
      lane.worker.on('error', (e) => {
        this.failure = e;
        this.wake?.();
      });
      lane.worker.on('exit', (code, signal) => {
        if (this.closing || lane.batches === 0) return;
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

  private seal(): void {
    if (this.batch.length === 0) return;
    this.queue.push({ id: this.batchStart, paths: this.batch, bytes: this.batchBytes });
    this.queuedBytes += this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    if (this.lanes.length === 0 && this.workers > 1 && this.queuedBytes > LOCAL_BYTES) this.startHelpers();
    this.feed();
  }

  /** Send queued batches to helpers that are not far enough ahead, least loaded first. */
  private feed(): void {
    while (this.queueHead < this.queue.length && this.lanes.length > 0) {
      const lane = this.lanes.reduce((a, b) => (b.bytes < a.bytes ? b : a));
      if (lane.bytes >= AHEAD_BYTES || lane.batches >= AHEAD_BATCHES) return;
      const req = this.take();
      lane.bytes += req.bytes;
      lane.batches++;
      lane.worker.send(req);
    }
  }

  private take(): HashRequest {
    const req = this.queue[this.queueHead];
    this.queue[this.queueHead++] = undefined as unknown as HashRequest;
    if (this.queueHead === this.queue.length) this.queue.length = this.queueHead = 0;
    this.queuedBytes -= req.bytes;
    return req;
  }

  /** Wait for every submitted file, hashing queued batches here meanwhile. */
  async drain(): Promise<void> {
    this.seal();
    while (this.outstanding > 0) {
      if (this.failure) throw this.failure;
      if (this.queueHead < this.queue.length) {
        this.hashHere(this.take());
        if (this.lanes.length > 0) await new Promise<void>((resolve) => setImmediate(resolve)); // helpers' answers in, more work out
        continue;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    if (this.failure) throw this.failure;
  }

  private hashHere(req: HashRequest): void {
    digestsOf(req.paths).forEach((r, k) => this.onDone(req.id + k, r));
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

/** Hashers by default: one per CPU (the caller is one of them). */
export const defaultThreads = (): number => os.availableParallelism();
