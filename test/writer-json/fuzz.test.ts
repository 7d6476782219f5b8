/**
 * Mutated TOCs: errors are fine (CfsError), anything else is a bug. Each case sets one field of
 * one entry of a valid fixture to a hostile value; seeded, so failures reproduce
 * (CFS_FUZZ_SEED, CFS_FUZZ_CASES for longer runs).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CfsError } from '../../format/index.js';
import { convertToc } from '../../writer-json/convert.js';
import { TOC_FIXTURES } from './helpers.js';
import { prng } from '../../test-support/fuzz.js';

const FIELDS = ['name', 'type', 'size', 'modtime', 'linkName', 'mode', 'uid', 'gid', 'devMajor', 'devMinor', 'xattrs', 'digest', 'offset', 'chunkOffset', 'chunkSize', 'x-payload', 'innerOffset'];
const VALUES: unknown[] = [
  -1, 0, 1, 1.5, 2 ** 32, 2 ** 53, 2 ** 64, -0, 1e308, '', 'x', '.', './', '..', '/abs', 'a/../b', 'a\u0000b', '\ud800', 'é', 'x'.repeat(300), 'd/'.repeat(3000),
  null, true, [], {}, { 'user.x': '!!' }, { '': 'MQ==' }, { 'user.x': 'MQ==' }, 'sha256:' + 'A'.repeat(64), 'sha256:' + 'a'.repeat(64), 'dir', 'reg', 'chunk', 'hardlink', 'symlink',
  'char', '2024-13-01T00:00:00Z', '9999-12-31T23:59:60+23:59',
];

describe('mutated TOCs', () => {
  it('fail only with CfsError', () => {
    const docs = fs.readdirSync(TOC_FIXTURES).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(fs.readFileSync(path.join(TOC_FIXTURES, f), 'utf8')) as { entries: Record<string, unknown>[] });
    const rand = prng(Number(process.env.CFS_FUZZ_SEED ?? 7));
    const pick = <T>(a: T[]): T => a[Math.floor(rand() * a.length)];
    let ok = 0;
    let refused = 0;
    for (let i = 0, n = Number(process.env.CFS_FUZZ_CASES ?? 1500); i < n; i++) {
      const doc = structuredClone(pick(docs));
      for (let m = 0, n = 1 + Math.floor(rand() * 3); m < n; m++) pick(doc.entries)[pick(FIELDS)] = pick(VALUES);
      if (rand() < 0.1) doc.entries.push(structuredClone(pick(doc.entries)));
      try {
        convertToc(Buffer.from(JSON.stringify(doc)), { input: `case ${i}` });
        ok++;
      } catch (e) {
        if (!(e instanceof CfsError)) throw new Error(`case ${i}: ${JSON.stringify(doc)}\n${(e as Error).stack}`);
        refused++;
      }
    }
    expect(ok).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(500);
  });
});
