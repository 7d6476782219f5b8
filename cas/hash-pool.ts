/**
 * fs-verity digests of many files in helper processes (one per CPU by default). Files are
 * submitted while the caller is still busy scanning the tree: batches go to helpers at once
 * (to the one with the fewest bytes outstanding), so hashing overlaps the scan, and results
 * are delivered when the caller awaits `drain()`. Processes, not worker threads: the native
 * hasher (koffi) is not safe to load in worker threads (koffi issue 190; seen here too).
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
/** Helpers start only once this much is queued: a small tree is hashed sooner than they start. */
const INLINE_BYTES = 48 << 20;

interface Lane {
  worker: ChildProcess;
  /** bytes sent and not answered yet */
  bytes: number;
}

export class HashPool {
  private readonly lanes: Lane[] = [];
  /** Files hashed on the calling thread in drain(), with their submission index. */
  private readonly inline: { path: Buffer; index: number }[] = [];
  private inlineBytes = 0;
  private batch: string[] = [];
  private batchBytes = 0;
  private batchStart = 0;
  private submitted = 0;
  private outstanding = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private closing = false;

  /** `threads` 0 hashes on the calling thread inside drain(). */
  constructor(
    private readonly threads: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {}

  private startHelpers(): void {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 0; t < this.threads; t++) {
      const lane: Lane = { worker: fork(url, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] }), bytes: 0 };
      lane.worker.on('message', (reply: HashReply) => {
        reply.results.forEach((r, k) => this.onDone(reply.id + k, r));
        this.outstanding -= reply.results.length;
        lane.bytes -= reply.bytes;
        this.wake?.();
      });
      lane.worker.on('error', (e) => {
        this.failure = e;
        this.wake?.();
      });
      lane.worker.on('exit', (code, signal) => {
        if (this.closing || this.outstanding === 0) return;
        this.failure ??= new Error(`hash helper exited (${signal ?? `status ${code}`}) with files outstanding`);
        this.wake?.();
      });
      this.lanes.push(lane);
    }
  }

  /** Queue one file of `size` bytes; its index is the order of submission. */
  submit(path: Buffer, size: number): number {
    this.outstanding++;
    if (this.lanes.length === 0 && (this.threads === 0 || this.inlineBytes + size <= INLINE_BYTES)) {
      this.inline.push({ path, index: this.submitted });
      this.inlineBytes += size;
      return this.submitted++;
    }
    if (this.lanes.length === 0) this.startHelpers();
    if (this.batch.length === 0) this.batchStart = this.submitted; // batches hold consecutive indexes
    this.batch.push(path.toString('latin1'));
    this.batchBytes += size;
    if (this.batch.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) this.send();
    return this.submitted++;
  }

  private send(): void {
    if (this.batch.length === 0) return;
    const lane = this.lanes.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    lane.bytes += this.batchBytes;
    lane.worker.send({ id: this.batchStart, paths: this.batch, bytes: this.batchBytes } satisfies HashRequest);
    this.batch = [];
    this.batchBytes = 0;
  }

  /** Wait for every submitted file. */
  async drain(): Promise<void> {
    this.send();
    for (const { path, index } of this.inline) {
      try {
        this.onDone(index, digestOfFile(path));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        this.onDone(index, { error: err.message, code: err.code });
      }
      this.outstanding--;
    }
    this.inline.length = 0;
    while (this.outstanding > 0) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    if (this.failure) throw this.failure;
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
