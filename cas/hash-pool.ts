/**
 * fs-verity digests of many files in helper processes (one per CPU by default) and, once the
 * caller awaits `drain()`, on the calling thread too. The helpers start with the pool, so they
 * boot while the caller scans the tree; files are queued in batches, and each ready helper
 * keeps two batches in hand, taking the next as it answers one. In drain() the caller hashes
 * queued batches itself between answers, so a small tree is hashed before a helper is even up,
 * and a big one by every core. Processes, not worker threads: the native hasher (koffi) is not
 * safe to load in worker threads (koffi issue 190; seen here too).
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
/** Batches a helper holds at once: one being hashed, one waiting, so it never idles. */
const IN_HAND = 2;

interface Lane {
  worker: ChildProcess;
  /** the helper has loaded its hasher and said so */
  ready: boolean;
  inHand: number;
}

export class HashPool {
  private readonly lanes: Lane[] = [];
  /** Batches not yet handed out (paths as latin1 strings: a Buffer would be cloned with its whole 8 KiB pool slab). */
  private readonly queue: HashRequest[] = [];
  private queueHead = 0;
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
    threads: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {
    if (threads > 0) this.startHelpers(threads);
  }

  private startHelpers(threads: number): void {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 0; t < threads; t++) {
      const lane: Lane = { worker: fork(url, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] }), ready: false, inHand: 0 };
      lane.worker.on('message', (reply: HashReply | 'ready') => {
        if (reply === 'ready') lane.ready = true;
        else {
          reply.results.forEach((r, k) => this.onDone(reply.id + k, r));
          this.outstanding -= reply.results.length;
          lane.inHand--;
        }
        this.feed(lane);
        this.wake?.();
      });
      lane.worker.on('error', (e) => {
        this.failure = e;
        this.wake?.();
      });
      lane.worker.on('exit', (code, signal) => {
        lane.ready = false;
        if (this.closing || lane.inHand === 0) return;
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

  /** The current batch goes into the queue (and to a helper with room). */
  private seal(): void {
    if (this.batch.length === 0) return;
    this.queue.push({ id: this.batchStart, paths: this.batch, bytes: this.batchBytes });
    this.batch = [];
    this.batchBytes = 0;
    for (const lane of this.lanes) this.feed(lane);
  }

  private feed(lane: Lane): void {
    while (lane.ready && lane.inHand < IN_HAND && this.queueHead < this.queue.length) {
      const req = this.queue[this.queueHead];
      this.queue[this.queueHead++] = undefined as unknown as HashRequest;
      lane.inHand++;
      lane.worker.send(req satisfies HashRequest);
    }
    if (this.queueHead === this.queue.length) this.queue.length = this.queueHead = 0;
  }

  /** Wait for every submitted file, hashing queued batches here meanwhile. */
  async drain(): Promise<void> {
    this.seal();
    while (this.outstanding > 0) {
      if (this.failure) throw this.failure;
      if (this.queueHead < this.queue.length) {
        // the last batch: the helpers take from the front
        this.hashHere(this.queue.pop()!);
        if (this.queueHead === this.queue.length) this.queue.length = this.queueHead = 0;
        await new Promise<void>((resolve) => setImmediate(resolve)); // let helpers' answers in
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
