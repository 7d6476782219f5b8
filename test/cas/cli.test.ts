import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBin } from '../cli/run.js';
import { bytes, makeTar, tmpDir } from './helpers.js';

const cas = (args: string[], opts: Parameters<typeof runBin>[2] = {}) => runBin('cfs-cas', args, opts);
const expectCode = (r: ReturnType<typeof cas>, code: number): void => {
  expect(r.code, r.stderr).toBe(code);
};
const oneLine = (stderr: string): void => {
  expect(stderr.trim().split('\n')).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at /);
};

async function sampleTar(): Promise<Buffer> {
  return makeTar([
    { header: { name: 'etc/hostname', type: 'file' }, data: 'box\n' },
    { header: { name: 'usr/lib/big', type: 'file' }, data: bytes(20, 100_000) },
    { header: { name: 'usr/lib/copy', type: 'file' }, data: bytes(20, 100_000) },
  ]);
}

describe('cfs-cas CLI', () => {
  it('put, has, cat and stats on a store made on first use', () => {
    const dir = tmpDir();
    const store = path.join(dir, 'store');
    const f = path.join(dir, 'f');
    fs.writeFileSync(f, bytes(21, 10_000));
    const put = cas(['put', '--json', f, '--store', store]);
    expect(put.code, put.stderr).toBe(0);
    const { digest, size, added } = JSON.parse(put.stdout.toString());
    expect({ size, added }).toEqual({ size: 10_000, added: true });
    expectCode(cas(['has', digest, '--store', store]), 0);
    expectCode(cas(['has', 'a'.repeat(64), '--store', store]), 1);
    expect(cas(['cat', digest, '--store', store]).stdout.equals(fs.readFileSync(f))).toBe(true);
    const st = JSON.parse(cas(['stats', '--json', '--store', store]).stdout.toString());
    expect(st).toMatchObject({ objects: 1, bytes: 10_000 });
  });

  it('--verity says once that the file system cannot, and succeeds', () => {
    const dir = tmpDir();
    const files = [1, 2].map((i) => {
      const f = path.join(dir, `f${i}`);
      fs.writeFileSync(f, bytes(30 + i, 5000));
      return f;
    });
    const r = cas(['put', '--verity', ...files, '--store', path.join(dir, 's')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString().trim().split('\n')).toHaveLength(2);
    const notes = r.stderr.split('\n').filter((l) => /fs-verity/.test(l));
    expect(notes.length).toBeLessThanOrEqual(1); // none where verity works
  });

  it('import-tar from stdin, ls, missing, add-image into another store, rm-ref, gc, reindex', async () => {
    const dir = tmpDir();
    const store = path.join(dir, 'store');
    const imp = cas(['import-tar', '-', '--name', 'os', '--json', '--store', store], { input: await sampleTar() });
    expect(imp.code, imp.stderr).toBe(0);
    const r = JSON.parse(imp.stdout.toString());
    expect(r).toMatchObject({ entries: 3, newObjects: 1, dedupObjects: 1, missing: [] });
    expect(cas(['ls', '--store', store]).stdout.toString()).toBe(`os\t${r.image}\n`);
    expect(cas(['missing', 'os', '--store', store])).toMatchObject({ code: 0 });

    const other = path.join(dir, 'other');
    const img = path.join(store, 'images', r.image);
    const add = cas(['add-image', img, '--name', 'copy', '--store', other]);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout.toString().trim()).toBe(r.image);
    expect(add.stderr).toMatch(/1 objects missing/);
    const miss = cas(['missing', 'copy', '--store', other]);
    expect(miss.code).toBe(1);
    expect(miss.stdout.toString()).toMatch(/^[0-9a-f]{2}\/[0-9a-f]{62}\n$/);

    const stats = cas(['stats', '--json', '--store', store]).stdout.toString();
    for (const f of fs.readdirSync(store)) if (f.startsWith('index.sqlite')) fs.rmSync(path.join(store, f));
    expectCode(cas(['reindex', '--store', store]), 0);
    expect(cas(['stats', '--json', '--store', store]).stdout.toString()).toBe(stats);

    expectCode(cas(['rm-ref', 'os', '--store', store]), 0);
    const dry = cas(['gc', '--dry-run', '--grace', '0', '--store', store]);
    expect(dry.stdout.toString()).toMatch(/would remove image/);
    expect(cas(['ls', '--images', '--store', store]).stdout.toString()).toContain(r.image);
    expectCode(cas(['gc', '--grace', '0', '--store', store]), 0);
    expect(JSON.parse(cas(['stats', '--json', '--store', store]).stdout.toString())).toMatchObject({ objects: 0, images: 0 });
    expectCode(cas(['fsck', '--store', store]), 0);
  });

  it('uses $CFS_STORE by default', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'f');
    fs.writeFileSync(f, 'x'.repeat(100));
    expect(cas(['put', f], { env: { CFS_STORE: path.join(dir, 'env-store') } }).code).toBe(0);
    expect(fs.existsSync(path.join(dir, 'env-store', 'objects'))).toBe(true);
  });

  it('fails with one line: bad input exit 1, bad usage exit 2', async () => {
    const dir = tmpDir();
    const store = path.join(dir, 'store');
    expectCode(cas(['init', '--store', store]), 0);
    const evil = await makeTar([{ header: { name: '../escape', type: 'file' }, data: 'x' }]);
    const e1 = cas(['import-tar', '-', '--store', store], { input: evil });
    expect(e1.code).toBe(1);
    expect(e1.stderr).toMatch(/^cfs-cas: stdin: CFS_INVALID_TREE: path "..\/escape" escapes the archive root/);
    oneLine(e1.stderr);
    const e2 = cas(['cat', 'b'.repeat(64), '--store', store]);
    expect(e2.code).toBe(1);
    oneLine(e2.stderr);
    const e3 = cas(['ls', '--store', path.join(dir, 'nothing')]);
    expect(e3.code).toBe(1);
    expect(e3.stderr).toMatch(/not a cfs-cas store/);
    oneLine(e3.stderr);
    const e4 = cas(['has', 'xyz', '--store', store]);
    expect(e4.code).toBe(2);
    expect(e4.stderr).toMatch(/not a SHA-256 digest/);
    expectCode(cas(['frobnicate']), 2);
    const e6 = cas(['import-tar', '-', '--name', '../x', '--store', store], { input: evil });
    expect(e6.code).toBe(2);
    expect(e6.stderr).toMatch(/invalid ref name/);
    expectCode(cas(['gc', '--grace', 'soon', '--store', store]), 2);
    expectCode(cas(['add-image', path.join(dir, 'missing.img'), '--store', store]), 1);
    fs.writeFileSync(path.join(dir, 'junk.img'), 'not an image');
    const e5 = cas(['add-image', path.join(dir, 'junk.img'), '--store', store]);
    expect(e5.code).toBe(1);
    oneLine(e5.stderr);
    expectCode(cas(['rm-ref', 'nope', '--store', store]), 1);
    expectCode(cas(['--help']), 0);
  });
});

describe('cfs-cas import-tar cache', () => {
  it('registers an unchanged tar file again without reading it, and reads it when it changed or lost objects', async () => {
    const dir = tmpDir();
    const store = path.join(dir, 'store');
    const tar = path.join(dir, 'os.tar');
    fs.writeFileSync(tar, await sampleTar());
    await new Promise((r) => setTimeout(r, 1100)); // a file changed in the last second is not cached
    const run = (name: string, ...flags: string[]) => {
      const r = cas(['import-tar', tar, '--name', name, '--json', ...flags, '--store', store]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout.toString()) as { image: string; cached: boolean; entries: number; files: number; newObjects: number; dedupObjects: number; dedupBytes: number };
    };
    const first = run('a');
    expect(first.cached).toBe(false);
    const second = run('b');
    expect(second).toMatchObject({ cached: true, image: first.image, entries: first.entries, files: first.files, newObjects: 0, dedupObjects: first.files });
    expect(fs.readlinkSync(path.join(store, 'refs/b'))).toBe(`../images/${first.image}`);
    expect(run('c', '--no-cache').cached).toBe(false);

    // an object gone from the store: the tar is read again and the object comes back
    const objectsDir = path.join(store, 'objects');
    const xx = fs.readdirSync(objectsDir).find((d) => /^[0-9a-f]{2}$/.test(d))!;
    const victim = path.join(objectsDir, xx, fs.readdirSync(path.join(objectsDir, xx))[0]);
    fs.rmSync(victim);
    const third = run('d');
    expect(third.cached).toBe(false);
    expect(fs.existsSync(victim)).toBe(true);

    // a changed tar (new ctime) is read again
    fs.appendFileSync(tar, Buffer.alloc(1024));
    expect(run('e').cached).toBe(false);
  });
});
