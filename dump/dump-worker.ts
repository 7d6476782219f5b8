/** Thread of cfs-dump's two-part dump: prints the tail part of a shared image once told the cut. */
import { parentPort } from 'node:worker_threads';
import { dumpPart } from '../format/index.js';
import type { TailReply, TailRequest } from './parallel.js';

let image: Uint8Array | null = null;
let input = '';
parentPort!.on('message', (m: TailRequest) => {
  if ('image' in m) {
    image = new Uint8Array(m.image, m.offset, m.length);
    input = m.input;
    return;
  }
  const part = dumpPart(image!, input, m.cut, 'tail');
  if (!part) {
    parentPort!.postMessage(null);
    return;
  }
  // one buffer of its own (a chunk may sit in a shared pool), moved rather than copied
  let size = 0;
  for (const c of part.chunks) size += c.length;
  const text = new Uint8Array(size);
  let at = 0;
  for (const c of part.chunks) {
    text.set(c, at);
    at += c.length;
  }
  parentPort!.postMessage({ text, placed: part.placed } satisfies TailReply, [text.buffer, part.placed.buffer as ArrayBuffer]);
});
