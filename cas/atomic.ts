/** Durable, atomic file writes: a temp file in the destination directory, fsync, rename. */
import * as fs from 'node:fs';
import * as path from 'node:path';

let tmpCounter = 0;
/** A temp name in `dir`, unique within this process. */
export const tmpName = (dir: string): string => path.join(dir, `.tmp-${process.pid}-${Date.now().toString(36)}-${tmpCounter++}`);

/** fsync a directory (so a rename in it is durable) or a file. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const openTemp = (tmp: string, mode: number): number => fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);

/** chmod, fsync and close the temp file. */
function finishTemp(fd: number, mode: number): void {
  fs.fchmodSync(fd, mode);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}

/** Write `data` to `dest` durably and atomically (temp file in the same directory). */
export function writeAtomic(dest: string, data: Uint8Array | ((fd: number) => void), mode = 0o644): void {
  const tmp = tmpName(path.dirname(dest));
  let fd = openTemp(tmp, mode);
  try {
    if (typeof data === 'function') data(fd);
    else {
      let off = 0;
      while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    }
    finishTemp(fd, mode);
    fd = -1;
    fs.renameSync(tmp, dest);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * writeAtomic for long writes: `fill` may await (and should, now and then), and SIGINT/SIGTERM
 * meanwhile remove the temp file before the process ends.
 */
export async function writeAtomicAsync(dest: string, fill: (fd: number) => Promise<void>, mode = 0o644): Promise<void> {
  const tmp = tmpName(path.dirname(dest));
  let fd = openTemp(tmp, mode);
  const dispose = removeOnSignal(tmp);
  try {
    await fill(fd);
    finishTemp(fd, mode);
    fd = -1;
    fs.renameSync(tmp, dest);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  } finally {
    dispose();
  }
}

const SIGNALS = { SIGINT: 130, SIGTERM: 143 } as const;

/** Until disposed, SIGINT/SIGTERM remove `file` (recursively) and end the process. */
export function removeOnSignal(file: string): () => void {
  const handlers = Object.entries(SIGNALS).map(([sig, code]) => {
    const h = (): void => {
      fs.rmSync(file, { recursive: true, force: true });
      process.exit(code);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return () => {
    for (const [sig, h] of handlers) process.removeListener(sig, h);
  };
}
