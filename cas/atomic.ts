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

/** A temp file beside `dest` that becomes `dest` on commit, or disappears on abort. */
class TempFile {
  readonly path: string;
  private fd: number;
  constructor(
    private readonly dest: string,
    private readonly mode: number,
  ) {
    this.path = tmpName(path.dirname(dest));
    this.fd = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  }
  get handle(): number {
    return this.fd;
  }
  /** chmod, fsync (if `sync`), close, rename into place. */
  commit(sync = true): void {
    fs.fchmodSync(this.fd, this.mode);
    if (sync) fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = -1;
    fs.renameSync(this.path, this.dest);
  }
  abort(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    fs.rmSync(this.path, { force: true });
  }
}

/**
 * Write `data` to `dest` atomically (temp file in the same directory), and durably unless
 * `sync` is false.
 */
export function writeAtomic(dest: string, data: Uint8Array | ((fd: number) => void), mode = 0o644, sync = true): void {
  const t = new TempFile(dest, mode);
  try {
    if (typeof data === 'function') data(t.handle);
    else for (let off = 0; off < data.length; ) off += fs.writeSync(t.handle, data, off, data.length - off);
    t.commit(sync);
  } catch (e) {
    t.abort();
    throw e;
  }
}

/**
 * writeAtomic for long writes: `fill` may await (and should, now and then), and SIGINT/SIGTERM
 * meanwhile remove the temp file before the process ends.
 */
export async function writeAtomicAsync(dest: string, fill: (fd: number) => Promise<void>, mode = 0o644): Promise<void> {
  const t = new TempFile(dest, mode);
  const dispose = removeOnSignal(t.path);
  try {
    await fill(t.handle);
    t.commit();
  } catch (e) {
    t.abort();
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
