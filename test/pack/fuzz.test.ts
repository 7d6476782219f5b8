/**
 * The decoder's plain mode (cfs-pack images) on mutated packed metadata of the generated vector
 * trees (not large-files: its 2^53-byte files do not fit a packed image). Errors are fine,
 * anything else is a bug.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeImage, encodePacked } from '../../format/index.js';
import { fuzzDecoder } from '../../test-support/fuzz.js';
import { VECTORS } from '../support/vectors.js';

const TREES = ['hardlinks', 'xattrs-shared', 'symlinks', 'devices', 'whiteouts-v1', 'inline-content', 'regular-files', 'deep', 'weird-names'];

describe('plain decoder fuzz', () => {
  it('1000 mutated packed images decode or fail with CfsError', () => {
    const images = TREES.map((n) => encodePacked(decodeImage(fs.readFileSync(path.join(VECTORS, 'generated', `${n}.img`))).root).meta);
    const stats = fuzzDecoder(images, 1000, 20261127, true);
    expect(stats.decoded).toBeGreaterThan(25);
    expect(stats.rejected).toBeGreaterThan(250);
    expect(stats.maxMs).toBeLessThan(5000);
  });
});
