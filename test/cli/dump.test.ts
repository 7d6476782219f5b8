import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { type Inode, S_IFDIR, S_IFREG, addChild, decodeImage, dumpToString, encodeImage, newInode } from '../../format/index.js';
import { VECTORS } from '../support/vectors.js';
import { runBin } from './run.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-dump-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const dirs = (f: string): string => path.join(VECTORS, 'dirs', f);
const gen = (f: string): string => path.join(VECTORS, 'generated', f);

describe('cfs-dump', () => {
  it('dump (also the default command) prints what composefs-info dump prints', () => {
    const expected = fs.readFileSync(dirs('tree-plain.canonical.dump'));
    expect(runBin('cfs-dump', ['dump', dirs('tree-plain.img')]).stdout.equals(expected)).toBe(true);
    expect(runBin('cfs-dump', [dirs('tree-plain.img')]).stdout.equals(expected)).toBe(true);
  });
  it('ls, objects and missing-objects match composefs-info', () => {
    expect(runBin('cfs-dump', ['ls', dirs('tree-plain.img')]).stdout.equals(fs.readFileSync(dirs('tree-plain.ls.txt')))).toBe(true);
    const objects = runBin('cfs-dump', ['objects', dirs('tree-plain.img')]).stdout.toString();
    expect(objects).toBe(fs.readFileSync(dirs('tree-plain.objects.txt'), 'utf8'));
    // a base dir holding every listed object but the first
    const base = path.join(tmp, 'objects');
    const list = objects.trim().split('\n');
    for (const o of list.slice(1)) {
      fs.mkdirSync(path.join(base, path.dirname(o)), { recursive: true });
      fs.writeFileSync(path.join(base, o), '');
    }
    const missing = runBin('cfs-dump', ['missing-objects', '--basedir', base, dirs('tree-plain.img')]);
    expect(missing.code).toBe(0);
    expect(missing.stdout.toString()).toBe(`${list[0]}\n`);
    expect(runBin('cfs-dump', ['--basedir', base, 'missing-objects', dirs('tree-plain.img')]).stdout.toString()).toBe(`${list[0]}\n`);
    expect(runBin('cfs-dump', ['missing-objects', dirs('tree-plain.img')]).code).toBe(2);
  });
  it('--filter keeps the named top-level entries', () => {
    const out = runBin('cfs-dump', ['dump', '--filter', 'sub', gen('whiteouts-v1.img')]).stdout.toString().split('\n');
    expect(out[0]).toMatch(/^\/ /);
    expect(out.slice(1, -1).every((l) => l.startsWith('/sub'))).toBe(true);
    expect(out.length).toBeGreaterThan(3);
  });
  it('--json prints one object per entry', () => {
    const lines = runBin('cfs-dump', ['dump', '--json', gen('hardlinks.img')]).stdout.toString().trim().split('\n');
    const text = fs.readFileSync(gen('hardlinks.canonical.dump'), 'utf8').trim().split('\n');
    expect(lines.length).toBe(text.length);
    const objs = lines.map((l) => JSON.parse(l));
    expect(objs[0]).toMatchObject({ path: '/', type: 'dir', mode: 0o755 });
    const link1 = objs.find((o) => o.path === '/link1');
    expect(link1).toMatchObject({ type: 'file', hardlinkTo: '/dir/link2', size: 9999, nlink: 3 });
    expect(link1.digest).toBe('0369a36fe856043f6475e9da1a38e9b406df859bf6f23ca56b9e14722d7e4c1e');
    expect(Buffer.from(link1.xattrs[0].valueBase64, 'base64').toString()).toBe('y');
  });
  it('measure-file prints fs-verity digests (the kernel value for empty files)', () => {
    const f = path.join(tmp, 'hello');
    fs.writeFileSync(f, 'hello world\n');
    const e = path.join(tmp, 'empty');
    fs.writeFileSync(e, '');
    const r = runBin('cfs-dump', ['measure-file', f, e]);
    expect(r.stdout.toString()).toBe(
      '37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92\n3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95\n',
    );
  });
  it('a corrupt image gives one line and exit 1', () => {
    const bad = path.join(tmp, 'bad.img');
    const img = fs.readFileSync(gen('bigdir.img'));
    fs.writeFileSync(bad, img.subarray(0, 5000));
    const r = runBin('cfs-dump', [bad]);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr).toMatch(/^cfs-dump: .*bad\.img: CFS_OUT_OF_BOUNDS at 0x[0-9a-f]+: .+\n$/);
    fs.writeFileSync(bad, 'not an image');
    expect(runBin('cfs-dump', ['ls', bad]).stderr).toMatch(/too small/);
    expect(runBin('cfs-dump', ['dump', tmp]).stderr).toMatch(/is a directory/);
  });
  it('big images are printed in two parts at once, byte for byte the whole dump', () => {
    // 36k entries (an image over the 4 MiB from which a thread helps); a hardlink within the
    // first directory, and (second image) one from the first directory to the last
    const build = (crossLink: boolean): { file: string; expected: string } => {
      const root = newInode(S_IFDIR | 0o755);
      const label = { key: 'security.selinux', value: 'system_u:object_r:usr_t:s0' };
      const dirs: Inode[] = [];
      for (let d = 0; d < 60; d++) {
        const dir = newInode(S_IFDIR | 0o755, { xattrs: [label] });
        for (let f = 0; f < 600; f++) {
          const digest = createHash('sha256').update(`${d}/${f}`).digest('hex');
          const file = newInode(S_IFREG | 0o644, { size: 4096 + f, digest, payload: `${digest.slice(0, 2)}/${digest.slice(2)}`, xattrs: [label] });
          addChild(dir, { name: `f${String(f).padStart(4, '0')}`, inode: file, link: false });
        }
        addChild(root, { name: `d${String(d).padStart(2, '0')}`, inode: dir, link: false });
        dirs.push(dir);
      }
      const owner = dirs[0].children![1].inode;
      owner.nlink = 2;
      addChild(crossLink ? dirs[59] : dirs[0], { name: 'zlink', inode: owner, link: true });
      const img = encodeImage(root);
      expect(img.length).toBeGreaterThan(4 << 20);
      const file = path.join(tmp, crossLink ? 'big-cross.img' : 'big.img');
      fs.writeFileSync(file, img);
      return { file, expected: dumpToString(decodeImage(img).root) };
    };
    for (const crossLink of [false, true]) {
      const { file, expected } = build(crossLink);
      const r = runBin('cfs-dump', [file], { env: { CFS_DEBUG: '1' } });
      expect(r.code).toBe(0);
      expect(r.stdout.toString('latin1') === expected).toBe(true);
      expect(r.stderr).toMatch(crossLink ? /printed whole: the parts at cut \S+ share an inode/ : /printed in two parts, cut at \d+\/\d+/);
      // the same from stdin
      const s = runBin('cfs-dump', ['-'], { input: fs.readFileSync(file) });
      expect(s.stdout.toString('latin1') === expected).toBe(true);
    }
  });
});
