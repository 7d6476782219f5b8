/**
 * cas/zstd.ts against real zstd output: the frame walks must follow every block (raw, RLE,
 * compressed, checksums, skippable frames) of genuine streams, and refuse hostile headers.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ZstdWindowGuard, checkZstdFrames, zstdDecompress } from '../../cas/zstd.js';
import { prng } from '../../test-support/fuzz.js';

const noZstd = spawnSync('zstd', ['--version']).status === 0 ? null : 'no zstd CLI (apt zstd)';
if (noZstd) console.log(`zstd tests skipped: ${noZstd}`);
const zstd = (data: Buffer, ...args: string[]): Buffer => spawnSync('zstd', ['-q', '-c', ...args], { input: data, maxBuffer: 1 << 28 }).stdout;
const skippable = (n: number): Buffer => Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, n, 0, 0, 0]), Buffer.alloc(n, 7)]);

describe.runIf(!noZstd)('zstd frame walks', () => {
  // random (raw blocks), zeros (RLE), text (compressed), several frames, a skippable frame between
  const data = Buffer.concat([randomBytes(300_000), Buffer.alloc(500_000), Buffer.from('composefs '.repeat(50_000))]);
  const stream = Buffer.concat([zstd(data), skippable(20), zstd(data.subarray(0, 1000), '--no-check'), zstd(Buffer.alloc(0))]);

  it('the streaming guard follows real streams fed in any chunking', () => {
    const rand = prng(7);
    for (const sizes of [[997], [3, 5, 7], [65536], [stream.length]]) {
      const g = new ZstdWindowGuard();
      for (let i = 0, k = 0; i < stream.length; k++) {
        const n = sizes.length > 2 ? 1 + Math.floor(rand() * 4096) : sizes[k % sizes.length];
        g.feed(stream.subarray(i, i + n));
        i += n;
      }
    }
    expect(zstdDecompress(stream, 64 << 20)).toEqual(Buffer.concat([data, data.subarray(0, 1000)]));
  });

  it('refuses a frame asking for a 2 GiB window, in a stream and in a range', () => {
    // window descriptor 0xa8: 2^(10+21) = 2 GiB; then one empty raw last block
    const bomb = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x01, 0x00, 0x00]);
    const s = Buffer.concat([zstd(Buffer.from('fine')), bomb]);
    expect(() => new ZstdWindowGuard().feed(s)).toThrow(/asks for a 2147483648-byte window/);
    expect(() => checkZstdFrames(s, 1 << 30)).toThrow(/frames declare 2147483648 bytes/);
    expect(() => new ZstdWindowGuard().feed(Buffer.from('not zstd at all'))).toThrow(/no zstd frame at byte 0/);
  });
});
