/**
 * A server thread of the FUSE view: decodes the image, then (given the /dev/fuse fd) reads one
 * request at a time and answers it, until the file system is unmounted (ENODEV).
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { decodeImage, isCfsError } from '../format/index.js';
import { FuseServer, ImageView } from './fuse.js';
import { IN_HEADER, Op } from './fuse-proto.js';

const { image, basedirs, bufSize } = workerData as { image: string; basedirs: string[]; bufSize: number };
const port = parentPort!;
port.postMessage({ loaded: true }); // modules (koffi among them) are loaded: the next thread may start
let view: ImageView;
try {
  view = new ImageView(decodeImage(fs.readFileSync(image), { input: image }).root);
  port.postMessage({ decoded: true });
} catch (e) {
  port.postMessage({ error: isCfsError(e) ? { code: e.code, message: e.message, offset: e.offset } : { message: (e as Error).message } });
  process.exit(1);
}

port.once('message', ({ devFd }: { devFd: number }) => {
  port.unref();
  const server = new FuseServer(view, basedirs, devFd, (log) => port.postMessage({ log }));
  const buf = Buffer.allocUnsafe(bufSize);
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(devFd, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // EINTR: a signal; ENOENT: the request was interrupted before we read it
      if (code === 'EINTR' || code === 'ENOENT' || code === 'EAGAIN') continue;
      port.postMessage({ end: code === 'ENODEV' ? null : String(code) });
      break;
    }
    const req = buf.subarray(0, n);
    const init = req.readUInt32LE(IN_HEADER.opcode) === Op.INIT;
    if (!server.handle(req)) break;
    if (init) port.postMessage({ ready: true });
  }
});
