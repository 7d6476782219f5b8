/**
 * cfs-dump's default command on big images: the dump printed in two parts at once, the head on
 * this thread and the tail on a worker thread sharing the image. Whenever the parts would not
 * be exactly the whole dump (an inode reached from both, anything odd), it is printed whole.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { readInput } from '../cli-kit/index.js';
import { MAX_IMAGE_SIZE, type DumpCut, dumpCut, dumpImage, dumpPart, partsOverlap } from '../format/index.js';

/** Images from this size on are dumped in two parts (a thread costs about 50 ms to start). */
const PARALLEL_MIN_BYTES = 4 << 20;
/** The head's share of the entries. */
const HEAD_SHARE = 0.5;

/** What the worker is sent: the image, then the cut. */
export type TailRequest = { image: SharedArrayBuffer; offset: number; length: number; input: string } | { cut: DumpCut };
export interface TailReply {
  text: Uint8Array;
  placed: Uint8Array;
}

const parallel = (size: number): boolean => size >= PARALLEL_MIN_BYTES && os.availableParallelism() >= 2;

/**
 * Dump text of an image file (`-`: stdin), in chunks: the same bytes as dumpImage. `note` hears
 * how it was printed (for CFS_DEBUG).
 */
export async function dumpFile(file: string, note?: (msg: string) => void): Promise<Uint8Array[]> {
  const input = file === '-' ? 'stdin' : file;
  // the thread starts while the image is read
  let worker = file !== '-' && parallel(fs.statSync(file).size) ? startWorker() : null;
  const image = await readInput(file, MAX_IMAGE_SIZE, worker !== null || file === '-');
  if (!worker && parallel(image.length)) worker = startWorker();
  if (!worker || !(image.buffer instanceof SharedArrayBuffer)) {
    await worker?.terminate();
    return dumpImage(image, { input });
  }
  const reply = new Promise<TailReply | null>((resolve) => {
    worker!.once('message', resolve);
    worker!.once('error', () => resolve(null));
    worker!.once('exit', () => resolve(null));
  });
  try {
    worker.postMessage({ image: image.buffer, offset: image.byteOffset, length: image.length, input } satisfies TailRequest);
    const cut = dumpCut(image, input, HEAD_SHARE);
    if (!cut) {
      note?.('printed whole: no place to cut');
      return dumpImage(image, { input });
    }
    worker.postMessage({ cut } satisfies TailRequest);
    const head = dumpPart(image, input, cut, 'head');
    const tail = head && (await reply);
    if (!head || !tail || partsOverlap(head.placed, tail.placed)) {
      note?.(`printed whole: the parts at cut ${cut.join('/')} ${!head || !tail ? 'declined' : 'share an inode'}`);
      return dumpImage(image, { input });
    }
    note?.(`printed in two parts, cut at ${cut.join('/')}`);
    return [...head.chunks, tail.text];
  } finally {
    await worker.terminate();
  }
}

const startWorker = (): Worker => new Worker(new URL('./dump-worker.js', import.meta.url));
