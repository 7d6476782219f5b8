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

/** Write `data` to `dest` durably and atomically (temp file in the same directory). */
export function writeAtomic(dest: string, data: Uint8Array | ((fd: number) => void), mode = 0o644): void {
  const dir = path.dirname(dest);
  const tmp = tmpName(dir);
  let fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  try {
    if (typeof data === 'function') data(fd);
    else {
      let off = 0;
      while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    }
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, dest);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

