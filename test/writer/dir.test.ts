/**
 * Directory input against the vectors made by upstream mkcomposefs from
 * ../shared/vectors/make-tree.sh, plus our own modes (--relative, --hardlinks, --snapshot).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, dumpToString } from '../../format/index.js';
import { setTimes } from '../../cas/sys.js';
import { runBin } from '../cli/run.js';
import { VECTORS } from '../support/vectors.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const dirs = (f: string): string => path.join(VECTORS, 'dirs', f);
const expectedSha = (name: string): string => fs.readFileSync(dirs(`${name}.sha256`), 'utf8').trim().split(/\s+/)[0];

const isRoot = process.getuid?.() === 0;
const hasTools = spawnSync('sh', ['-c', 'command -v setfattr && command -v python3 && command -v mknod']).status === 0;
const reason = !isRoot ? 'not root (make-tree.sh needs mknod, chown and trusted.* xattrs)' : !hasTools ? 'setfattr/python3/mknod missing' : null;
if (reason) console.log(`directory vector tests skipped: ${reason}`);

describe.runIf(!reason)('cfs-writer DIR matches mkcomposefs on make-tree.sh', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-dir-'));
  const tree = path.join(tmp, 'tree');
  beforeAll(() => {
    const r = spawnSync('bash', [path.join(VECTORS, 'make-tree.sh'), tree], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`make-tree.sh failed: ${r.stderr}`);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('plain: image and dump', () => {
    const r = runBin('cfs-writer', [tree]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(r.stdout)).toBe(expectedSha('tree-plain'));
    expect(dumpToString(decodeImage(r.stdout).root)).toBe(fs.readFileSync(dirs('tree-plain.canonical.dump'), 'latin1'));
  });
  it('--use-epoch', () => {
    const out = path.join(tmp, 'epoch.img');
    expect(runBin('cfs-writer', ['--use-epoch', tree, out]).code).toBe(0);
    expect(sha(fs.readFileSync(out))).toBe(expectedSha('tree-epoch'));
  });
  it('--digest-store into a plain directory, as mkcomposefs', () => {
    const store = path.join(tmp, 'plain-store');
    const out = path.join(tmp, 'store.img');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, out]).code).toBe(0);
    expect(sha(fs.readFileSync(out))).toBe(expectedSha('tree-store'));
    const files = (fs.readdirSync(store, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(store, f)).isFile()).sort();
    expect(files.join('\n') + '\n').toBe(fs.readFileSync(dirs('store-objects.txt'), 'utf8'));
    expect(fs.readdirSync(store).filter((n) => n.startsWith('.'))).toEqual([]); // no staging litter
    // every object holds the content its name promises, readable by all
    for (const f of files) {
      const m = runBin('cfs-dump', ['measure-file', path.join(store, f)]);
      expect(m.stdout.toString().trim()).toBe(f.replace('/', ''));
      expect(fs.statSync(path.join(store, f)).mode & 0o777).toBe(0o644);
    }
    // running again adds nothing and gives the same image
    expect(runBin('cfs-writer', ['--digest-store', store, tree, out]).code).toBe(0);
    expect(sha(fs.readFileSync(out))).toBe(expectedSha('tree-store'));
  });
  it('--relative: redirects are paths under DIR', () => {
    const r = runBin('cfs-writer', ['--relative', tree]);
    expect(r.code).toBe(0);
    const objects = runBin('cfs-dump', ['objects', '-'], { input: r.stdout });
    const list = objects.stdout.toString().trim().split('\n');
    expect(list).toContain('sizes/three-mib');
    expect(list).toContain('link-a');
    for (const o of list) expect(fs.existsSync(path.join(tree, o))).toBe(true);
    const missing = runBin('cfs-dump', ['missing-objects', '--basedir', tree, '-'], { input: r.stdout });
    expect(missing.stdout.toString()).toBe('');
  });
  it('--hardlinks: names of one inode share an image inode', () => {
    const plain = dumpToString(decodeImage(runBin('cfs-writer', [tree]).stdout).root);
    expect(plain).toMatch(/^\/link-b \d+ 100644 1 /m);
    const linked = dumpToString(decodeImage(runBin('cfs-writer', ['--hardlinks', tree]).stdout).root);
    expect(linked).toMatch(/^\/link-a 68 100644 2 /m);
    expect(linked).toMatch(/^\/link-b 68 @100644 2 0 0 0 \S+ \/link-a /m);
  });
  it('--snapshot: objects and image into a cfs-cas store, with a summary', () => {
    const store = path.join(tmp, 'cas');
    const r = runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'demo', tree]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/411 entries/);
    expect(r.stderr).toMatch(/objects: 7 new/);
    expect(r.stderr).toMatch(/mount -t composefs -o descriptor=/);
    const image = fs.readFileSync(path.join(store, 'refs', 'demo'));
    expect(sha(image)).toBe(expectedSha('tree-plain'));
    const missing = runBin('cfs-dump', ['missing-objects', '--basedir', path.join(store, 'objects'), path.join(store, 'refs', 'demo')]);
    expect(missing.stdout.toString()).toBe('');
    expect(fs.readdirSync(path.join(store, 'tmp'))).toEqual([]); // the staging directory is gone
    const again = runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'demo', tree]);
    expect(again.stderr).toMatch(/objects: 0 new .*, 8 deduplicated/);
  });
});

/**
 * What every digest cache does, run through `run` (extra options → stderr and image): 6 files in
 * a new `tree`; the first run hashes all, the next reads none, --no-cache reads all; a file
 * rewritten with its size and mtime kept is read again (its ctime gives it away).
 */
async function cacheHitsAndMisses(tree: string, run: (...extra: string[]) => { msg: string; image: Buffer }): Promise<void> {
  fs.mkdirSync(tree);
  for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(tree, `f${i}`), Buffer.alloc(1000 + i, i + 1));
  await new Promise((r) => setTimeout(r, 1100)); // files changed within the last second are not cached
  const fresh = () => runBin('cfs-writer', [tree]).stdout;
  expect(run().msg).not.toMatch(/digest cache/);
  const warm = run();
  expect(warm.msg).toMatch(/6 unchanged files not read again/);
  expect(sha(warm.image)).toBe(sha(fresh()));
  expect(run('--no-cache').msg).not.toMatch(/digest cache/);
  const f0 = path.join(tree, 'f0');
  const st = fs.statSync(f0);
  fs.writeFileSync(f0, Buffer.alloc(1000, 0x55));
  fs.utimesSync(f0, st.atime, st.mtime);
  const changed = run();
  expect(changed.msg).toMatch(/5 unchanged files not read again/);
  expect(sha(changed.image)).toBe(sha(fresh()));
  expect(sha(changed.image)).not.toBe(sha(warm.image));
}

describe('cfs-writer digest cache (a cfs-cas store remembers digests of unchanged files)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-cache-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('skips unchanged files, re-reads changed ones (even with size and mtime kept), and never trusts a lost object', async () => {
    const tree = path.join(tmp, 'tree');
    const store = path.join(tmp, 'cas');
    const snap = (...extra: string[]) => {
      const r = runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 't', ...extra, tree]);
      expect(r.code, r.stderr).toBe(0);
      return { msg: r.stderr, image: fs.readFileSync(path.join(store, 'refs', 't')) };
    };
    await cacheHitsAndMisses(tree, snap);
    // an object that left the store is hashed and stored again
    const objects = runBin('cfs-dump', ['objects', path.join(store, 'refs', 't')]).stdout.toString().trim().split('\n');
    fs.rmSync(path.join(store, 'objects', objects[0]));
    const regained = snap();
    expect(regained.msg).toMatch(/objects: 1 new/);
    expect(fs.existsSync(path.join(store, 'objects', objects[0]))).toBe(true);
  });
});

describe('cfs-writer --digest-cache FILE (the same cache for a plain store or no store)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-cachefile-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('skips unchanged files, re-reads changed ones, puts a lost object back, and refuses what it cannot do', async () => {
    const tree = path.join(tmp, 'tree');
    const cache = path.join(tmp, 'digests.cache');
    const plain = path.join(tmp, 'objects');
    const run = (...args: string[]) => {
      const r = runBin('cfs-writer', ['--digest-cache', cache, ...args, tree]);
      expect(r.code, r.stderr).toBe(0);
      return { msg: r.stderr, image: r.stdout };
    };
    await cacheHitsAndMisses(tree, run); // no store
    // a plain store: a cached file whose object is missing is copied in again
    await new Promise((r) => setTimeout(r, 1100)); // f0 was just written: let it be cached next
    const first = run('--digest-store', plain);
    const objects = runBin('cfs-dump', ['objects', '-'], { input: first.image }).stdout.toString().trim().split('\n');
    expect(objects.length).toBe(6);
    fs.rmSync(path.join(plain, objects[0]));
    const again = run('--digest-store', plain);
    expect(again.msg).toMatch(/6 unchanged files not read again/);
    expect(sha(again.image)).toBe(sha(first.image));
    const m = runBin('cfs-dump', ['measure-file', path.join(plain, objects[0])]);
    expect(m.stdout.toString().trim()).toBe(objects[0].replace('/', ''));
    // what it cannot do: usage errors, and a file that is not a cache
    const cas = path.join(tmp, 'cas');
    expect(runBin('cfs-cas', ['--store', cas, 'init']).code).toBe(0);
    expect(runBin('cfs-writer', ['--digest-cache', cache, '--digest-store', cas, tree]).code).toBe(2);
    expect(runBin('cfs-writer', ['--digest-cache', cache, '--relative', tree]).code).toBe(2);
    expect(runBin('cfs-writer', ['--digest-cache', cache, '--from-file', '-'], { input: '/ 0 40755 1 0 0 0 0.0 - - -\n' }).code).toBe(2);
    const bogus = path.join(tmp, 'bogus');
    fs.writeFileSync(bogus, 'not a database, not at all '.repeat(200));
    const bad = runBin('cfs-writer', ['--digest-cache', bogus, tree]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.toString()).toMatch(/bogus.*cannot open digest cache/);
    expect(bad.stdout.length).toBe(0);
    const before = fs.readdirSync(plain).sort();
    expect(runBin('cfs-writer', ['--digest-cache', bogus, '--digest-store', plain, tree]).code).toBe(1);
    expect(fs.readdirSync(plain).sort()).toEqual(before); // no staging directory left
    expect(before.filter((n) => n.startsWith('.'))).toEqual([]);
  });
});

describe('cfs-writer DIR: values past 32 bits', () => {
  it('keeps sizes over 4 GiB and times before 1970 and after 2106 exact', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-big-'));
    try {
      const big = path.join(tmp, 'big');
      fs.writeFileSync(big, '');
      fs.truncateSync(big, 5 * 2 ** 30 + 3); // sparse: nothing to hash with --relative
      setTimes(Buffer.from(big), 2n ** 33n, 500_000_000);
      const old = path.join(tmp, 'old');
      fs.writeFileSync(old, 'o'.repeat(100));
      setTimes(Buffer.from(old), -1_000_000_000n, 7);
      const after = (n: string): fs.BigIntStats => fs.lstatSync(path.join(tmp, n), { bigint: true });
      const r = runBin('cfs-writer', ['--relative', tmp]);
      expect(r.code, r.stderr).toBe(0);
      const byName = new Map(decodeImage(r.stdout).root.children!.map((d) => [d.name, d.inode]));
      for (const name of ['big', 'old']) {
        const st = after(name);
        const inode = byName.get(name)!;
        expect(inode.size, name).toBe(Number(st.size));
        expect(inode.mtimeSec * 1_000_000_000n + BigInt(inode.mtimeNsec), name).toBe(st.mtimeNs);
        expect(inode.payload, name).toBe(name);
      }
      expect(byName.get('big')!.size).toBe(5 * 2 ** 30 + 3);
      expect(byName.get('big')!.mtimeSec).toBe(2n ** 33n);
      expect(byName.get('big')!.mtimeNsec).toBe(500_000_000);
      expect(byName.get('old')!.mtimeSec).toBe(-1_000_000_000n);
      expect(byName.get('old')!.mtimeNsec).toBe(7);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('cfs-writer DIR errors', () => {
  it('names a missing directory', () => {
    const r = runBin('cfs-writer', ['/nonexistent/dir']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nonexistent\/dir/);
  });
  it.runIf(isRoot)('reports an unreadable entry, or skips it with --ignore-errors', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-err-'));
    try {
      fs.writeFileSync(path.join(tmp, 'ok'), 'x'.repeat(100));
      // a path longer than PATH_MAX cannot be read through a full path
      const d = 'd'.repeat(250);
      spawnSync('sh', ['-c', `cd "${tmp}" && for i in $(seq 20); do mkdir ${d} && cd ${d}; done`]);
      const r = runBin('cfs-writer', [tmp]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^cfs-writer: .*ddd.*: CFS_IO: cannot/m);
      const ok = runBin('cfs-writer', ['--ignore-errors', tmp]);
      expect(ok.code).toBe(0);
      expect(ok.stderr).toMatch(/skipped \d+ unreadable entries/);
    } finally {
      spawnSync('rm', ['-rf', tmp]); // rm walks relative to each directory: the path is too long for fs.rmSync
    }
  });
});
