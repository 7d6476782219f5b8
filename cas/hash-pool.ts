/**
 * fs-verity digests of many files, by `workers` hashers: the caller (in `drain()`) and
 * `workers - 1` helper processes. Submitted files are batched into a queue, small files ahead of
 * big ones; each helper is kept a few batches ahead (more are sent as it answers), and the caller
 * takes batches from the same queue once it drains. A caller that scans while it submits
 * (cfs-writer) must let its event loop run every few milliseconds so the helpers' answers come
 * in and they get more work; before it blocks for long, `handOff` sends them more.
 * The first 16 MiB never wait for a helper to start: a small tree is hashed before one would be up.
 * Processes, not worker threads: the native hasher (koffi) is not safe to load in worker
 * threads (koffi issue 190; seen here too).
 */
import { type ChildProcess, fork } from 'node:child_process';
import * as os from 'node:os';
import type { HashReply, HashRequest, ReclaimRequest } from './hash-worker.js';
import { digestsOf } from './digest.js';

export interface HashResult {
  digest?: string;
  size?: number;
  error?: string;
  code?: string;
}

const BATCH_FILES = 16;
const BATCH_BYTES = 8 << 20;
/** Files from this size wait behind smaller ones (which are more likely to share a size with another). */
const BIG_FILE = 1 << 20;
/** Requests sent ahead with handOff, in JSON bytes per helper: what its socket buffer surely holds. */
const HANDOFF_MESSAGE_BYTES = 96 << 10;
/** Helpers start once this much is queued; less is hashed by the caller alone. */
const LOCAL_BYTES = 16 << 20;
/** Work sent ahead to one helper: enough to keep it busy between two turns of the caller's event loop. */
const AHEAD_BYTES = 32 << 20;
const AHEAD_BATCHES = 64;
/**
 * While the caller drains it hashes from the queue too, and turns its event loop after each
 * batch: a helper needs only a few batches ahead, and the rest stays for the caller to take.
 */
const DRAIN_AHEAD_BYTES = 16 << 20;
const DRAIN_AHEAD_BATCHES = 3;

interface Lane {
  worker: ChildProcess;
  /** It has said it is loaded: until then work stays queued here, where the caller can take it. */
  ready: boolean;
  /** bytes, batches and request JSON sent and not answered yet */
  bytes: number;
  batches: number;
  messageBytes: number;
}

/** A batch: the files' submission indexes, paths and total size. */
interface Batch extends HashRequest {
  indexes: number[];
  bytes: number;
}

/** A batch being filled. */
interface OpenBatch {
  indexes: number[];
  paths: string[];
  sizes: number[];
  bytes: number;
}

export class HashPool {
  private readonly lanes: Lane[] = [];
  /** Sealed batches no one has taken yet: small files first (`soon`), then big ones (`later`). */
  private soon = new Queue();
  private later = new Queue();
  private queuedBytes = 0;
  private readonly open = { soon: newBatch(), later: newBatch() };
  private submitted = 0;
  private requests = 0;
  /** batches sent to helpers and not answered yet, by request id */
  private readonly inFlight = new Map<number, Batch>();
  /** files submitted and not answered yet */
  private outstanding = 0;
  /** with prioritize(): which files are needed first, and how many of them are not answered yet */
  private need: ((index: number) => boolean) | null = null;
  private needLeft = 0;
  private given = 0;
  private here = 0;
  private draining = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private closing = false;

  /** `workers` hashers in all, the caller included: 0 or 1 hashes everything in drain(). */
  constructor(
    private readonly workers: number,
    private readonly onDone: (index: number, r: HashResult) => void,
  ) {}

  /** Files the caller hashed itself (in drain()). */
  get hashedHere(): number {
    return this.here;
  }

  /** Batches the helpers gave back unstarted so far. */
  get reclaimed(): number {
    return this.given;
  }

  /** Whether helper processes are hashing (they start once enough work is queued). */
  get helping(): boolean {
    return this.lanes.length > 0;
  }

  private startHelpers(): void {
    const url = new URL('./hash-worker.js', import.meta.url);
    for (let t = 1; t < this.workers; t++) {
      const worker = fork(url, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
      const lane: Lane = { worker, ready: false, bytes: 0, batches: 0, messageBytes: 0 };
      lane.worker.on('message', (reply: HashReply) => {
        if ('ready' in reply) {
          lane.ready = true;
        } else if ('reclaimed' in reply) {
          // back to the front of the queue, in their order
          const back = new Queue();
          for (const id of reply.reclaimed) {
            this.given++;
            const b = this.settle(lane, id);
            back.push(b);
            this.queuedBytes += b.bytes;
          }
          for (const q of [this.soon, this.later]) {
            while (q.size > 0) back.push(q.shift());
          }
          this.soon = back;
          this.reorder();
        } else {
          this.answer(this.settle(lane, reply.id), reply.results);
        }
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

  /** Queue one file (its path in bytes, or as a latin1 string) of `size` bytes; its index is the order of submission. */
  submit(path: Buffer | string, size: number): number {
    if (this.need) throw new Error('HashPool: submit after prioritize');
    this.outstanding++;
    const big = size >= BIG_FILE;
    const b = big ? this.open.later : this.open.soon;
    b.indexes.push(this.submitted);
    b.paths.push(typeof path === 'string' ? path : path.toString('latin1'));
    b.sizes.push(size);
    b.bytes += size;
    if (b.paths.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) this.seal(big);
    return this.submitted++;
  }

  private seal(big: boolean): void {
    const b = big ? this.open.later : this.open.soon;
    if (b.paths.length === 0) return;
    (big ? this.later : this.soon).push({ id: 0, ...b });
    this.queuedBytes += b.bytes;
    if (big) this.open.later = newBatch();
    else this.open.soon = newBatch();
    if (this.lanes.length === 0 && this.workers > 1 && this.queuedBytes > LOCAL_BYTES) this.startHelpers();
    this.feed();
  }

  private sealAll(): void {
    this.seal(false);
    this.seal(true);
  }

  /** Send queued batches to ready helpers that are not far enough ahead, least loaded first. */
  private feed(): void {
    while (this.queued()) {
      let lane: Lane | null = null;
      for (const l of this.lanes) if (l.ready && (lane === null || l.bytes < lane.bytes)) lane = l;
      if (lane === null) return;
      if (this.draining ? lane.bytes >= DRAIN_AHEAD_BYTES || lane.batches >= DRAIN_AHEAD_BATCHES : lane.bytes >= AHEAD_BYTES || lane.batches >= AHEAD_BATCHES) return;
      this.send(lane, this.take());
    }
  }

  /** A batch sent to `lane` is back (answered or reclaimed). */
  private settle(lane: Lane, id: number): Batch {
    const b = this.inFlight.get(id)!;
    this.inFlight.delete(id);
    lane.bytes -= b.bytes;
    lane.batches--;
    lane.messageBytes -= messageSize(b);
    return b;
  }

  private send(lane: Lane, b: Batch): void {
    b.id = this.requests++;
    this.inFlight.set(b.id, b);
    lane.bytes += b.bytes;
    lane.batches++;
    lane.messageBytes += messageSize(b);
    lane.worker.send({ id: b.id, paths: b.paths, sizes: b.sizes } satisfies HashRequest);
  }

  private queued(): boolean {
    return this.soon.size > 0 || this.later.size > 0;
  }

  private peek(): Batch {
    return this.soon.size > 0 ? this.soon.peek() : this.later.peek();
  }

  private take(): Batch {
    const b = (this.soon.size > 0 ? this.soon : this.later).shift();
    this.queuedBytes -= b.bytes;
    return b;
  }

  /**
   * Once everything is submitted: files for which `need` holds go first (batches holding one
   * move to the front, and the helpers give back what they have not started, to be sorted in
   * too), and drain(true) waits for them only.
   */
  prioritize(need: (index: number) => boolean): void {
    this.sealAll();
    this.need = need;
    this.needLeft = 0;
    for (const b of this.inFlight.values()) for (const i of b.indexes) if (need(i)) this.needLeft++;
    for (const q of [this.soon, this.later]) q.forEach((b) => b.indexes.forEach((i) => need(i) && this.needLeft++));
    this.reorder();
    this.reclaim();
  }

  /** With prioritize(): batches holding a needed file first, each group in its order. */
  private reorder(): void {
    if (!this.need) return;
    const first = new Queue();
    const rest = new Queue();
    for (const q of [this.soon, this.later]) {
      while (q.size > 0) {
        const b = q.shift();
        (this.needs(b) ? first : rest).push(b);
      }
    }
    this.soon = first;
    this.later = rest;
  }

  private needs(b: Batch): boolean {
    for (const i of b.indexes) if (this.need!(i)) return true;
    return false;
  }

  private answer(b: Batch, results: HashResult[]): void {
    for (let k = 0; k < results.length; k++) {
      const i = b.indexes[k];
      if (this.need?.(i)) this.needLeft--;
      this.onDone(i, results[k]);
    }
    this.outstanding -= results.length;
  }

  /**
   * Before the caller blocks (its event loop stopped, so no answers come in and no work goes
   * out): share the queue out to the helpers, as much as their socket buffers hold. Once the
   * caller is back, reclaim() takes back what they have not started.
   */
  handOff(): void {
    this.sealAll();
    for (let sent = true; sent && this.queued(); ) {
      sent = false;
      for (const lane of this.lanes) {
        if (!this.queued() || lane.messageBytes + messageSize(this.peek()) > HANDOFF_MESSAGE_BYTES) continue;
        this.send(lane, this.take());
        sent = true;
      }
    }
  }

  /** Ask the helpers for the batches they have not started (they come back to the queue, and drain() shares them again). */
  reclaim(): void {
    for (const lane of this.lanes) if (lane.batches > 0) lane.worker.send({ reclaim: true } satisfies ReclaimRequest);
  }

  /** Wait for every submitted file (with `needed`: those prioritize() asked for), hashing queued batches here meanwhile. */
  async drain(needed = false): Promise<void> {
    this.sealAll();
    this.draining = true;
    // what a helper holds beyond the few batches it needs now comes back, for the caller to share
    if (this.lanes.some((l) => l.batches > DRAIN_AHEAD_BATCHES)) this.reclaim();
    try {
      const left = (): number => (needed ? this.needLeft : this.outstanding);
      while (left() > 0) {
        if (this.failure) throw this.failure;
        if (this.queued() && (!needed || this.needs(this.peek()))) {
          this.hashHere(this.take());
          if (this.lanes.length > 0) await new Promise<void>((resolve) => setImmediate(resolve)); // helpers' answers in, more work out
          continue;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
      }
      if (this.failure) throw this.failure;
    } finally {
      this.draining = false;
    }
  }

  private hashHere(b: Batch): void {
    this.here += b.paths.length;
    this.answer(b, digestsOf(b.paths, b.sizes));
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

const newBatch = (): OpenBatch => ({ indexes: [], paths: [], sizes: [], bytes: 0 });

/** First in, first out, without Array.shift's copying. */
class Queue {
  private items: (Batch | undefined)[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(b: Batch): void {
    this.items.push(b);
  }

  peek(): Batch {
    return this.items[this.head]!;
  }

  forEach(f: (b: Batch) => void): void {
    for (let i = this.head; i < this.items.length; i++) f(this.items[i]!);
  }

  shift(): Batch {
    const b = this.items[this.head]!;
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) this.items.length = this.head = 0;
    return b;
  }
}

/** About the JSON size of a batch's request. */
function messageSize(b: Batch): number {
  let n = 56;
  for (const p of b.paths) n += p.length + 3 + 8;
  return n;
}

/** Hashers by default: one per CPU (the caller is one of them). */
export const defaultThreads = (): number => os.availableParallelism();
