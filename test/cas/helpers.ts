import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach } from 'vitest';
import { Store } from '../../cas/store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

export function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-cas-'));
  dirs.push(d);
  return d;
}

export function tmpStore(): Store {
  return Store.open(path.join(tmpDir(), 'store'), { create: true });
}

export { type TarEntry, makeTar } from '../../test-support/tar.js';

/** Rewrite the ustar size field (octal, 12 bytes at 124) of the header at `off` and fix its checksum. */
export function patchSize(archive: Buffer, off: number, size: number): Buffer {
  const b = Buffer.from(archive);
  b.write(size.toString(8).padStart(11, '0') + '\0', off + 124, 'latin1');
  b.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[off + i];
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', off + 148, 'latin1');
  return b;
}

export function chunks(data: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) parts.push(data.subarray(i, i + size));
  return Readable.from(parts, { objectMode: false });
}

/** Every path under a directory with its size, for "store unchanged" checks (index and lock aside). */
export function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n);
      const rel = path.relative(root, p);
      if (/^(index\.sqlite.*|lock)$/.test(rel)) continue;
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p);
      else out.push(`${rel} ${st.size}`);
    }
  };
  walk(root);
  return out;
}

/** Deterministic pseudo-random bytes. */
export function bytes(seed: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    b[i] = x & 0xff;
  }
  return b;
}
