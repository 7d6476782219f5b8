/**
 * fs-verity digests of many files on worker threads (one per CPU by default). Files can be
 * submitted while the caller is still busy (for example scanning the tree): workers start
 * hashing at once, and results are delivered when the caller awaits `drain()`.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { HashReply, HashRequest } from './hash-worker.js';
import { digestOfFile } from '../cas/store.js';

export interface HashResult {
  digest?: string;
  size?: number;
  error?: string;
  code?: string;
}

const BATCH = 16;

export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private queue: Buffer[] = [];
  private queueStart = 0;
  private outstanding = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private readonly pending: Buffer[] = [];

  /** `threads` 0 hashes on the calling thread inside drain(). */
  constructor(
    threads: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 0; t < threads; t++) {
      const w = new Worker(url);
      w.unref();
      w.on('message', (reply: HashReply) => {
        reply.results.forEach((r, k) => this.onDone(reply.id + k, r));
        this.outstanding -= reply.results.length;
        this.idle.push(w);
        this.dispatch();
        this.wake?.();
      });
      w.on('error', (e) => {
        this.failure = e;
        this.wake?.();
      });
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  private submitted = 0;
  /** Queue one file; returns its index (the order of submission). */
  submit(path: Buffer): number {
    this.pending.push(path);
    this.outstanding++;
    if (this.pending.length >= BATCH) this.flushPending();
    return this.submitted++;
  }

  private flushPending(): void {
    if (this.pending.length === 0) return;
    this.queue.push(...this.pending.splice(0));
    this.dispatch();
  }

  private dispatch(): void {
    while (this.idle.length && this.queueStart < this.queue.length) {
      const w = this.idle.pop()!;
      const id = this.queueStart;
      const paths = this.queue.slice(this.queueStart, this.queueStart + BATCH);
      this.queueStart += paths.length;
      w.ref();
      w.postMessage({ id, paths } satisfies HashRequest);
    }
  }

  /** Wait for every submitted file. */
  async drain(): Promise<void> {
    this.flushPending();
    if (this.workers.length === 0) {
      for (let i = this.queueStart; i < this.queue.length; i++) {
        try {
          this.onDone(i, digestOfFile(this.queue[i]));
        } catch (e) {
          const err = e as NodeJS.ErrnoException;
          this.onDone(i, { error: err.message, code: err.code });
        }
        this.outstanding--;
      }
      this.queueStart = this.queue.length;
      return;
    }
    while (this.outstanding > 0) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    if (this.failure) throw this.failure;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export const defaultThreads = (): number => os.availableParallelism();
