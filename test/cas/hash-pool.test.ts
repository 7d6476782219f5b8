import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HashResult } from '../../cas/hash-pool.js';
import { fsverityDigest, cryptoBlockHasher } from '../../format/fsverity.js';

// The built module: its helper processes run dist/cas/hash-worker.js (npm test builds first).
const { HashPool } = (await import(new URL('../../dist/cas/hash-pool.js', import.meta.url).href)) as typeof import('../../cas/hash-pool.js');

describe('HashPool', () => {
  it('hashes in helper processes and (in drain) on the calling thread, each result under its own index', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-pool-'));
    try {
      // batches of 8 MiB or 16 files: a helper starts once 16 MiB are queued; the caller takes the rest in drain()
      const sizes = [20 << 20, 5000, 20 << 20, 1, 20 << 20, 70_000, 4096, 123_457];
      const files = sizes.map((n, i) => {
        const f = path.join(dir, `f${i}`);
        fs.writeFileSync(f, Buffer.alloc(n, i + 1));
        return f;
      });
      for (const threads of [3, 2, 1, 0]) {
        const got = new Map<number, HashResult>();
        const pool = new HashPool(threads, (i, r) => got.set(i, r));
        try {
          files.forEach((f, i) => expect(pool.submit(Buffer.from(f), sizes[i])).toBe(i));
          // helpers answer their batches before drain() (as while a scan goes on)
          for (let t = 0; threads > 1 && got.size === 0 && t < 100; t++) await new Promise((r) => setTimeout(r, 50));
          expect(got.size > 0).toBe(threads > 1); // the caller itself only hashes in drain()
          await pool.drain();
        } finally {
          await pool.close();
        }
        expect(got.size).toBe(files.length);
        files.forEach((f, i) => {
          expect(got.get(i), f).toEqual({ digest: fsverityDigest(fs.readFileSync(f), cryptoBlockHasher).toString('hex'), size: sizes[i] });
        });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps work queued while its helper starts, for the caller to take in drain()', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-pool-'));
    try {
      // three batches of 8 MiB: the helper starts past 16 MiB, and a loaded one would be sent all
      // three (32 MiB ahead); hashing them takes less than its start
      const files = [1, 2, 3].map((i) => {
        const f = path.join(dir, `f${i}`);
        fs.writeFileSync(f, Buffer.alloc(8 << 20, i));
        return f;
      });
      const got = new Map<number, HashResult>();
      const pool = new HashPool(2, (i, r) => got.set(i, r));
      try {
        files.forEach((f) => pool.submit(Buffer.from(f), 8 << 20));
        expect(pool.helping).toBe(true);
        await pool.drain();
        expect(pool.hashedHere).toBeGreaterThan(0);
      } finally {
        await pool.close();
      }
      files.forEach((f, i) => expect(got.get(i)?.digest).toBe(fsverityDigest(fs.readFileSync(f), cryptoBlockHasher).toString('hex')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps helpers fed from its queue over many batches, each result once and right', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-pool-'));
    try {
      // 1500 files of 16-20 KiB: ~94 batches of 16 files (past the 64 a helper is sent ahead), ~27 MiB
      const files = Array.from({ length: 1500 }, (_, i) => {
        const f = path.join(dir, `f${i}`);
        fs.writeFileSync(f, Buffer.alloc(16384 + ((i * 37) % 4000), i & 0xff));
        return f;
      });
      const got = new Map<number, HashResult>();
      let twice = 0;
      const pool = new HashPool(3, (i, r) => {
        if (got.has(i)) twice++;
        got.set(i, r);
      });
      try {
        files.forEach((f, i) => pool.submit(Buffer.from(f), fs.statSync(f).size));
        await pool.drain();
      } finally {
        await pool.close();
      }
      expect(twice).toBe(0);
      expect(got.size).toBe(files.length);
      files.forEach((f, i) => expect(got.get(i)?.digest, f).toBe(fsverityDigest(fs.readFileSync(f), cryptoBlockHasher).toString('hex')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports an unreadable file under its index', async () => {
    const got = new Map<number, HashResult>();
    const pool = new HashPool(2, (i, r) => got.set(i, r));
    pool.submit(Buffer.from('/nonexistent/file'), 10);
    await pool.drain();
    await pool.close();
    expect(got.get(0)).toMatchObject({ code: 'ENOENT' });
  });

  it('hashes the files asked for first, and takes back what a helper has not started', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-pool-'));
    try {
      // 64 files of 1 MiB and more (big: queued behind small ones, 8 to a batch) and 64 small
      // ones; a helper starts past 16 MiB and gets up to 32 MiB ahead
      const sizes = Array.from({ length: 128 }, (_, i) => (i % 2 === 0 ? (1 << 20) + i : 3000 + i));
      const files = sizes.map((n, i) => {
        const f = path.join(dir, `f${i}`);
        fs.writeFileSync(f, Buffer.alloc(n, i & 0xff));
        return f;
      });
      const order: number[] = [];
      const got = new Map<number, HashResult>();
      const pool = new HashPool(2, (i, r) => {
        order.push(i);
        got.set(i, r);
      });
      try {
        files.forEach((f, i) => pool.submit(Buffer.from(f), sizes[i]));
        expect(pool.helping).toBe(true);
        const need = (i: number): boolean => i % 16 === 0;
        pool.prioritize(need);
        await pool.drain(true);
        expect(files.every((_, i) => !need(i) || got.has(i))).toBe(true);
        // what is left goes to the helper (which reads its requests as they come), and what
        // it has not started comes back
        pool.handOff();
        pool.reclaim();
        await pool.drain();
        expect(pool.reclaimed).toBeGreaterThan(0);
      } finally {
        await pool.close();
      }
      expect(order.length).toBe(files.length);
      expect(new Set(order).size).toBe(files.length);
      files.forEach((f, i) => expect(got.get(i)?.digest, f).toBe(fsverityDigest(fs.readFileSync(f), cryptoBlockHasher).toString('hex')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
