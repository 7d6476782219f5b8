import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ObjectStager, PlainObjects, STORE_MARKER, defaultStorePath, isStoreRoot, objectRelPath } from '../../cas/store.js';
import { retryBusy } from '../../cas/index.js';
import { FsVerityHasher, cryptoBlockHasher } from '../../format/fsverity.js';
import { runBin } from '../cli/run.js';
import { VECTORS } from '../support/vectors.js';
import { tmpDir, tmpStore } from './helpers.js';

/** Content recipes of ../shared/vectors/objects/digests.tsv. */
function content(name: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  if (name.startsWith('mod251-')) for (let i = 0; i < size; i++) b[i] = (i * 7) % 251;
  else if (name === 'hello-world') b.write('hello world\n');
  return b;
}

const rows = fs
  .readFileSync(path.join(VECTORS, 'objects', 'digests.tsv'), 'utf8')
  .trim()
  .split('\n')
  .slice(1)
  .map((l) => l.split('\t'))
  .filter(([, size]) => Number(size) <= 1 << 21);

const KERNEL_EMPTY = '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95';


describe('store layout', () => {
  it('names objects as objects/XX/REST by fs-verity digest (shared vectors)', () => {
    const store = tmpStore();
    expect(rows.length).toBeGreaterThan(10);
    for (const [name, size, , digest] of rows) {
      const r = store.putBuffer(content(name, Number(size)));
      // An empty object is named by the kernel's fs-verity digest, not upstream's printed value.
      expect(r.digest, name).toBe(size === '0' ? KERNEL_EMPTY : digest);
      expect(objectRelPath(r.digest)).toBe(`${r.digest.slice(0, 2)}/${r.digest.slice(2)}`);
      expect(fs.readFileSync(path.join(store.objectsDir, objectRelPath(r.digest))).equals(content(name, Number(size))), name).toBe(true);
      expect(store.has(r.digest)).toBe(true);
    }
    store.close();
  });

  it('putFile computes the same digest, dedups, and accepts Buffer paths', () => {
    const store = tmpStore();
    const dir = tmpDir();
    const name = Buffer.concat([Buffer.from(dir + '/'), Buffer.from([0x66, 0xff, 0x6f])]);
    fs.writeFileSync(name, 'hello world\n');
    const a = store.putFile(name);
    expect(a).toMatchObject({ digest: rows.find((r) => r[0] === 'hello-world')![3], size: 12, added: true });
    expect(store.putFile(name)).toMatchObject({ digest: a.digest, added: false });
    const mode = fs.statSync(path.join(store.objectsDir, objectRelPath(a.digest))).mode & 0o777;
    expect(mode).toBe(0o644);
    store.close();
  });

  it('a stager copies files with known digests in, visible only once committed', async () => {
    const store = tmpStore();
    const dir = tmpDir();
    const digestOf = (data: Buffer) => store.putBuffer(data).digest;
    const old = Buffer.alloc(5000, 1);
    const oldDigest = digestOf(old); // already in the store
    const files = [Buffer.alloc(7000, 2), Buffer.alloc(9000, 3), old];
    const entries = files.map((data, i) => {
      const p = path.join(dir, `f${i}`);
      fs.writeFileSync(p, data, { mode: 0o600 });
      return { path: p, digest: i === 2 ? oldDigest : new FsVerityHasher(cryptoBlockHasher).update(data).digest().toString('hex'), size: data.length };
    });
    const stager = store.stager();
    for (const e of [...entries, entries[0]]) stager.add(e);
    expect(stager.totals).toMatchObject({ newObjects: 2, newBytes: 16000, dedupObjects: 2, dedupBytes: 12000 });
    expect(store.has(entries[0].digest)).toBe(false); // staged, not visible yet
    // a file that changed after it was hashed is refused
    fs.writeFileSync(path.join(dir, 'grown'), Buffer.alloc(10));
    expect(() => stager.add({ path: path.join(dir, 'grown'), digest: 'ab'.repeat(32), size: 9 })).toThrow(/changed while being stored/);
    const t = await stager.commit();
    expect(t).toMatchObject({ newObjects: 2, newBytes: 16000 });
    for (const [i, e] of entries.entries()) {
      const obj = path.join(store.objectsDir, objectRelPath(e.digest));
      expect(fs.readFileSync(obj).equals(files[i])).toBe(true);
      expect(fs.statSync(obj).mode & 0o777).toBe(0o644);
    }
    await stager.close();
    await stager.close();
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);
    store.close();
  });

  it('marks the root and finds the default path', () => {
    const store = tmpStore();
    expect(isStoreRoot(store.root)).toBe(true);
    expect(fs.existsSync(path.join(store.root, STORE_MARKER))).toBe(true);
    expect(defaultStorePath({ CFS_STORE: '/x' })).toBe('/x');
    expect(defaultStorePath({ XDG_DATA_HOME: '/d', HOME: '/h' })).toBe('/d/composefs-ts/store');
    expect(defaultStorePath({ HOME: '/h' })).toBe('/h/.local/share/composefs-ts/store');
  });
});

const xfsSkip = process.getuid?.() !== 0 ? 'not root' : spawnSync('sh', ['-c', 'command -v mkfs.xfs && command -v filefrag']).status !== 0 ? 'mkfs.xfs/filefrag missing (apt xfsprogs e2fsprogs)' : null;
if (xfsSkip) console.log(`reflink test skipped: ${xfsSkip}`);

describe.runIf(!xfsSkip)('reflinks', () => {
  it('on a reflink file system, objects share the source extents and are still copies', () => {
    const tmp = tmpDir();
    const img = path.join(tmp, 'xfs.img');
    const mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, 320 << 20);
    const sh = (cmd: string, ...args: string[]) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      expect(r.status, `${cmd}: ${r.stderr}`).toBe(0);
      return r.stdout;
    };
    sh('mkfs.xfs', '-q', '-m', 'reflink=1', img);
    sh('mount', '-o', 'loop', img, mnt);
    try {
      const src = path.join(mnt, 'src');
      const data = Buffer.alloc(1 << 20, 0x5a);
      fs.writeFileSync(src, data);
      const r = runBin('cfs-cas', ['--store', path.join(mnt, 'store'), 'put', src]);
      expect(r.code, r.stderr).toBe(0);
      const digest = r.stdout.toString().split(/\s/)[0];
      const object = path.join(mnt, 'store', 'objects', objectRelPath(digest));
      expect(sh('filefrag', '-v', object)).toMatch(/shared/);
      // a mkcomposefs-style --digest-store directory goes through the same copy
      expect(runBin('cfs-writer', ['--digest-store', path.join(mnt, 'plain'), mnt, path.join(tmp, 'x.img')]).code).toBe(0);
      expect(sh('filefrag', '-v', path.join(mnt, 'plain', objectRelPath(digest)))).toMatch(/shared/);
      fs.writeFileSync(src, 'changed');
      expect(fs.readFileSync(object)).toEqual(data);
    } finally {
      spawnSync('umount', [mnt]);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('stager into a plain objects directory', () => {
  it('lists a busy objects/XX directory instead of a stat per object, and leaves existing objects as they are', async () => {
    const objects = path.join(tmpDir(), 'objects');
    const src = tmpDir();
    // two directories, taken in turns: each is listed after its own 16 lookups
    const digest = (i: number) => (i % 4 < 2 ? 'ab' : '9f') + i.toString(16).padStart(62, '0');
    for (const d of ['ab', '9f']) fs.mkdirSync(path.join(objects, d), { recursive: true });
    for (let i = 0; i < 80; i += 2) fs.writeFileSync(path.join(objects, objectRelPath(digest(i))), 'old'); // the even ones exist
    const stager = new ObjectStager(new PlainObjects(objects), false);
    for (let i = 0; i < 80; i++) {
      const f = path.join(src, `f${i}`);
      fs.writeFileSync(f, `new ${i}`);
      stager.add({ path: f, digest: digest(i), size: fs.statSync(f).size });
    }
    expect(stager.totals).toMatchObject({ newObjects: 40, dedupObjects: 40 });
    await stager.commit();
    await stager.close();
    for (let i = 0; i < 80; i++) expect(fs.readFileSync(path.join(objects, objectRelPath(digest(i))), 'utf8')).toBe(i % 2 ? `new ${i}` : 'old');
    expect(fs.readdirSync(objects).sort()).toEqual(['9f', 'ab']); // no staging directory left
  });

  it('without writeback: files written by the caller, commitSync and closeSync', () => {
    const objects = path.join(tmpDir(), 'objects');
    const d = (c: string) => c.repeat(64);
    fs.mkdirSync(path.join(objects, 'aa'), { recursive: true });
    fs.writeFileSync(path.join(objects, objectRelPath(d('a'))), 'old');
    const stager = new ObjectStager(new PlainObjects(objects), false, false);
    const file = stager.newFile();
    fs.writeFileSync(file, 'bbb');
    stager.addWritten(d('b'), file, 3);
    expect(stager.totals).toMatchObject({ newObjects: 1, dedupObjects: 0 });
    expect(stager.has(d('a'), 3)).toBe(true);
    expect(stager.has(d('b'), 3)).toBe(true);
    expect(stager.commitSync()).toEqual({ newObjects: 1, newBytes: 3, dedupObjects: 2, dedupBytes: 6 });
    stager.closeSync();
    expect(fs.readFileSync(path.join(objects, objectRelPath(d('b'))), 'utf8')).toBe('bbb');
    expect(fs.readFileSync(path.join(objects, objectRelPath(d('a'))), 'utf8')).toBe('old');
    expect(fs.readdirSync(objects).sort()).toEqual(['aa', 'bb']); // no staging directory left
  });
});

describe('index opening', () => {
  it('retries while SQLite answers SQLITE_BUSY, and only then, until its time is up', () => {
    const busy = (): never => {
      throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    };
    let calls = 0;
    expect(retryBusy(() => (++calls < 3 ? busy() : 'opened'))).toBe('opened');
    expect(calls).toBe(3);
    calls = 0;
    expect(() => retryBusy(() => (calls++, JSON.parse('{')))).toThrow(SyntaxError);
    expect(calls).toBe(1);
    const t = Date.now();
    expect(() => retryBusy(busy, 50)).toThrow('database is locked');
    expect(Date.now() - t).toBeGreaterThanOrEqual(20);
  });
});

describe('digest cache rows', () => {
  it('are looked up in batches: only rows whose stamp still matches, in the order asked', () => {
    const store = tmpStore();
    const rows: [string, string, string][] = [];
    for (let i = 0; i < 600; i++) rows.push([`7:${i}`, `stamp${i}`, i.toString(16).padStart(64, '0')]);
    store.index.putFileDigests(rows);
    const files = ['7:599', '7:5', '9:1', '7:9', ...rows.map((r) => r[0]).slice(0, 400), '7:5'];
    const stamps = files.map((f) => (f === '7:5' ? 'changed' : `stamp${f.split(':')[1]}`));
    const got = store.index.fileDigests(files, stamps);
    expect(got.length).toBe(files.length);
    expect(got[0]).toBe(rows[599][2]);
    expect(got[1]).toBeUndefined(); // stamp changed
    expect(got[2]).toBeUndefined(); // never cached
    expect(got[3]).toBe(rows[9][2]); // asked for twice in one batch (hardlinks): both answered
    for (let i = 0; i < 400; i++) expect(got[4 + i], files[4 + i]).toBe(i === 5 ? undefined : rows[i][2]);
    expect(got[404]).toBeUndefined();
    expect(store.index.fileDigests([], [])).toEqual([]);
    store.close();
  });
});
