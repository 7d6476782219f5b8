import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cryptoBlockHasher, fsverityDigest } from '../../format/fsverity.js';
import { digestsOf } from '../../cas/digest.js';
import { PROJECT_ROOT } from '../support/vectors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-digest-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Sizes around the 4 KiB block and the 64 KiB read. */
const SIZES = [0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 5];

function files(): { paths: string[]; sizes: number[]; want: string[] } {
  const paths: string[] = [];
  const want: string[] = [];
  for (const n of SIZES) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (i * 13 + n) & 0xff;
    // a name that is not UTF-8: the path goes as latin1, one char per byte
    const p = Buffer.concat([Buffer.from(path.join(dir, `f${n}-`)), Buffer.from([0xe9, 0xff])]);
    fs.writeFileSync(p, b);
    paths.push(p.toString('latin1'));
    want.push(fsverityDigest(b, cryptoBlockHasher).toString('hex'));
  }
  return { paths, sizes: SIZES, want };
}

describe('digestsOf', () => {
  const f = files();

  it('gives node:crypto digests and the sizes read, with the sizes given, without them, and with wrong ones', () => {
    const wrong = f.sizes.map((n, i) => (i % 2 ? n + 70000 : Math.max(0, n - 3000)));
    for (const sizes of [f.sizes, undefined, wrong]) {
      const got = digestsOf(f.paths, sizes);
      expect(got).toEqual(f.want.map((digest, i) => ({ digest, size: SIZES[i] })));
    }
  });

  it('names the errno of a file it cannot open, and goes on with the rest', () => {
    const got = digestsOf([path.join(dir, 'missing'), dir, f.paths[2]], [10, 10, SIZES[2]]);
    expect(got[0]).toEqual({ code: 'ENOENT', error: 'no such file or directory (open)' });
    expect(got[1]).toEqual({ code: 'EISDIR', error: 'illegal operation on a directory (read)' });
    expect(got[2]).toEqual({ digest: f.want[2], size: SIZES[2] });
  });

  it('gives the same answers through node:fs (where libc cannot be loaded)', () => {
    const paths = [...f.paths, path.join(dir, 'missing'), dir];
    const sizes = [...f.sizes, 1, 1];
    // the built module (npm test builds first), in a process of its own: the choice is made once
    const script = `import { digestsOf } from ${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'dist/cas/digest.js')).href)};
      process.stdout.write(JSON.stringify(digestsOf(${JSON.stringify(paths)}, ${JSON.stringify(sizes)})));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, CFS_NO_RAW_IO: '1' }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual(digestsOf(paths, sizes));
  });
});
