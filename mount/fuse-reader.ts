/**
 * Worker thread of the FUSE server: blocking reads of /dev/fuse (one request per read), each
 * request handed to the main thread. Ends when the file system is unmounted (ENODEV).
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

const { fd, bufSize } = workerData as { fd: number; bufSize: number };
const buf = Buffer.allocUnsafe(bufSize);
for (;;) {
  let n: number;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, null);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // EINTR: a signal; ENOENT: the request was interrupted before we read it
    if (code === 'EINTR' || code === 'ENOENT' || code === 'EAGAIN') continue;
    parentPort!.postMessage({ end: code === 'ENODEV' ? null : String(code) });
    break;
  }
  const req = new Uint8Array(n);
  req.set(buf.subarray(0, n));
  parentPort!.postMessage(req, [req.buffer]);
}
