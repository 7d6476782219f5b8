import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { FsVerityHasher, cryptoBlockHasher, fsverityDigest } from '../../format/fsverity.js';
import { blockHasher, blockHasherName, nativeHashers, newVerityHasher, verityDigest } from '../../cas/sha256-native.js';

/** Deterministic bytes. */
function data(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const SIZES = [0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 129 * 4096, 128 * 128 * 4096 + 3 * 4096 + 7];

const shaNiSkip =
  process.arch !== 'x64' || !/\bsha_ni\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'))
    ? 'this CPU has no SHA extensions'
    : spawnSync(process.env.CC || 'cc', ['--version']).status !== 0
      ? 'no C compiler to build cas/native/sha256-blocks.c'
      : '';
if (shaNiSkip) console.log(`SHA-NI block hasher test skipped: ${shaNiSkip}`);

describe('native fs-verity block hasher', () => {
  it('is OpenSSL through koffi at least, not the node:crypto fallback', () => {
    expect(nativeHashers.openSsl).not.toBeNull();
    expect(blockHasher).not.toBe(cryptoBlockHasher);
  });

  it.skipIf(!!shaNiSkip)('is our SHA-NI code where the CPU has the SHA extensions (npm run build compiles it)', () => {
    expect(blockHasherName).toBe('sha-ni');
    expect(blockHasher).toBe(nativeHashers.shaNi);
  });

  it('each native hasher gives node:crypto hashes for 1 to 9 different blocks, at any offset', () => {
    const hashers = [nativeHashers.shaNi, nativeHashers.openSsl?.blocks].filter((h) => h !== null && h !== undefined);
    expect(hashers.length).toBeGreaterThan(0);
    const src = data(11 * 4096 + 3, 5);
    for (const h of hashers) {
      for (let count = 1; count <= 9; count++) {
        for (const off of [0, 3, 4096 + 1]) {
          const dst = Buffer.alloc(32 * count + 5, 0xee);
          h(src, off, count, dst, 5);
          const want = Array.from({ length: count }, (_, k) => createHash('sha256').update(src.subarray(off + k * 4096, off + (k + 1) * 4096)).digest());
          expect(dst.subarray(5).toString('hex'), `${count} blocks at ${off}`).toBe(Buffer.concat(want).toString('hex'));
          expect(dst.subarray(0, 5).toString('hex')).toBe('eeeeeeeeee');
        }
      }
    }
  });

  it('gives node:crypto digests for sizes around block and level boundaries', () => {
    for (const n of SIZES) {
      const d = data(n, n + 1);
      expect(verityDigest(d).toString('hex'), `size ${n}`).toBe(fsverityDigest(d, cryptoBlockHasher).toString('hex'));
    }
  });

  it('hashes the descriptor natively too: newVerityHasher, reused, agrees with node:crypto at every size', () => {
    const h = newVerityHasher();
    for (const n of [...SIZES, ...SIZES.slice().reverse()]) {
      const d = data(n, n + 3);
      expect(h.reset().update(d).digest().toString('hex'), `size ${n}`).toBe(fsverityDigest(d, cryptoBlockHasher).toString('hex'));
    }
  });

  it('gives the same digest for any chunking, and after reset() for a second input', () => {
    const big = data(128 * 128 * 4096 + 5000, 7);
    const small = data(5000, 8);
    const h = newVerityHasher();
    for (let off = 0; off < big.length; off += 70001) h.update(big.subarray(off, off + 70001));
    expect(h.digest().toString('hex')).toBe(fsverityDigest(big, cryptoBlockHasher).toString('hex'));
    // a reused hasher must not see the earlier, deeper tree
    expect(h.reset().update(small).digest().toString('hex')).toBe(new FsVerityHasher().update(small).digest().toString('hex'));
  });

  it('hashes only the first bytes of a buffer when given a length, and mixes up no addresses across many buffers', () => {
    const h = newVerityHasher();
    const bufs = Array.from({ length: 19 }, (_, i) => data(3 * 4096 + 100 * i, 40 + i));
    // more buffers than the hasher remembers addresses of, interleaved, each cut short
    for (let round = 0; round < 3; round++) {
      for (const [i, b] of bufs.entries()) {
        const n = b.length - 4096 - 50 * round - i;
        const want = fsverityDigest(b.subarray(0, n), cryptoBlockHasher).toString('hex');
        expect(h.reset().update(b, n).digest().toString('hex'), `buffer ${i}, ${n} bytes`).toBe(want);
        const dst = Buffer.alloc(64);
        blockHasher(b, 4096, 2, dst, 0);
        expect(dst.toString('hex')).toBe(Buffer.concat([1, 2].map((k) => createHash('sha256').update(b.subarray(k * 4096, (k + 1) * 4096)).digest())).toString('hex'));
      }
    }
    // a length past the end means the whole buffer
    expect(h.reset().update(bufs[0], 1e9).digest().toString('hex')).toBe(verityDigest(bufs[0]).toString('hex'));
  });

  it('does not keep a big buffer alive for its address', async () => {
    // 32 blocks: with the context and two tree levels, four buffers, fewer than are remembered
    let big: Buffer | null = data(128 << 10, 9);
    expect(verityDigest(big).toString('hex')).toBe(fsverityDigest(big, cryptoBlockHasher).toString('hex'));
    const ref = new WeakRef(big);
    big = null;
    await new Promise((r) => setImmediate(r)); // a WeakRef holds its target until the job ends
    v8.setFlagsFromString('--expose_gc');
    (vm.runInNewContext('gc') as () => void)();
    expect(ref.deref()).toBeUndefined();
  });

  it('refuses a block range outside the buffers', () => {
    for (const h of [nativeHashers.shaNi, nativeHashers.openSsl?.blocks]) {
      if (!h) continue;
      expect(() => h(Buffer.alloc(4096), 1, 1, Buffer.alloc(32), 0)).toThrow(RangeError);
      expect(() => h(Buffer.alloc(4096), 0, 1, Buffer.alloc(32), 1)).toThrow(RangeError);
      expect(() => h(Buffer.alloc(8192), 0, 2, Buffer.alloc(63), 0)).toThrow(RangeError);
    }
  });
});
