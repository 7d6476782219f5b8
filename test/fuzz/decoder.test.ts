import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuzzDecoder } from '../../test-support/fuzz.js';
import { VECTORS } from '../support/vectors.js';

const SMALL = ['empty-root', 'hardlinks', 'xattrs-shared', 'symlinks', 'devices', 'whiteouts-v1', 'inline-content', 'regular-files', 'large-files', 'deep', 'xattrs-many', 'weird-names'];

describe('decoder fuzz (errors are fine; anything else is a bug)', () => {
  const images = SMALL.map((n) => fs.readFileSync(path.join(VECTORS, 'generated', `${n}.img`)));
  const seed = Number(process.env.FUZZ_SEED ?? 20261127);
  it(`4000 mutated images decode or fail with CfsError (seed ${seed})`, () => {
    const before = process.memoryUsage().rss;
    const stats = fuzzDecoder(images, 4000, seed);
    expect(stats.cases).toBe(4000);
    // both outcomes happen, so the mutations reach the decoder's checks
    expect(stats.decoded).toBeGreaterThan(100);
    expect(stats.rejected).toBeGreaterThan(1000);
    // bounded: no case near a hang, no runaway memory
    expect(stats.maxMs).toBeLessThan(5000);
    expect(process.memoryUsage().rss - before).toBeLessThan(1 << 30);
  });
});
