/**
 * Real mounts (CI runs as root on a kernel with erofs and overlayfs): images from real trees
 * must show exactly the source tree; option injection is refused; nothing leaks.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelHas } from '../../mount/kernel.js';
import { parseComposefsOptions } from '../../mount/options.js';
import { runBin } from '../cli/run.js';
import { VECTORS } from '../support/vectors.js';

const isRoot = process.getuid?.() === 0;
const reason = !isRoot ? 'not root' : !kernelHas('erofs') || !kernelHas('overlay') ? 'kernel lacks erofs or overlay' : null;
if (reason) console.log(`mount tests skipped: ${reason}`);

/** Everything a user sees of a tree: type, mode, owner, size, mtime, symlink target, user xattrs, content hash. */
function listing(root: string): string {
  const out = execFileSync(
    'sh',
    ['-c', 'cd "$1" && find . -mindepth 1 -printf "%p %y %m %U:%G %s %T@ %l\\n" | LC_ALL=C sort', 'sh', root],
    { encoding: 'latin1' },
  );
  const lines = out.split('\n').map((l) => l.replace(/^(.* d \S+ \S+) \d+ /, '$1 - ')); // directory sizes differ by design
  const hashes = execFileSync('sh', ['-c', 'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum', 'sh', root], {
    encoding: 'latin1',
  });
  const xattrs = execFileSync(
    'sh',
    ['-c', 'cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m "^user\\." 2>/dev/null || true', 'sh', root],
    { encoding: 'latin1' },
  );
  return `${lines.join('\n')}\n${hashes}\n${xattrs}`;
}

/** Loop devices backed by files under `dir` (other runs' devices do not count). */
const loopsUnder = (dir: string): number =>
  execFileSync('losetup', ['-a'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir)).length;

describe.runIf(!reason)('mounting composefs images', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-mount-'));
  const tree = path.join(tmp, 'tree');
  const mnt = path.join(tmp, 'mnt');
  beforeAll(() => {
    const r = spawnSync('bash', [path.join(VECTORS, 'make-tree.sh'), tree], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    // An overlay whiteout (char 0:0) is stored as an escaped xattr whiteout: the mount shows it as
    // a regular file that hides things only when the mount is itself a lower layer. The listing
    // comparison is about everything else.
    fs.rmSync(path.join(tree, 'dev', 'whiteout'));
    fs.mkdirSync(mnt);
  });
  afterAll(() => {
    spawnSync('umount', [mnt]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('--digest-store image, via mount -t composefs: the mount shows the source tree', () => {
    const store = path.join(tmp, 'objects');
    const img = path.join(tmp, 'store.img');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, img]).code).toBe(0);
    const r = runBin('mount.composefs', ['none', mnt, '-o', `descriptor=${img},base=${store}`]);
    expect(r.code, r.stderr).toBe(0);
    try {
      expect(listing(mnt)).toBe(listing(tree));
    } finally {
      expect(runBin('cfs-mount', ['umount', mnt]).code).toBe(0);
    }
    expect(loopsUnder(tmp)).toBe(0);
  });

  it('--relative image with base= the source directory', () => {
    const img = path.join(tmp, 'rel.img');
    expect(runBin('cfs-writer', ['--relative', tree, img]).code).toBe(0);
    expect(runBin('cfs-mount', ['--base', tree, img, mnt]).code).toBe(0);
    try {
      expect(listing(mnt)).toBe(listing(tree));
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
  });

  it('a cfs-cas store and a ref name; the forced legacy (fallback) form', () => {
    const store = path.join(tmp, 'cas');
    expect(runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'tree', tree]).code).toBe(0);
    for (const extra of [[], ['--fallback']]) {
      const r = runBin('cfs-mount', ['--store', store, '--check', ...extra, 'tree', mnt]);
      expect(r.code, r.stderr).toBe(0);
      try {
        expect(listing(mnt)).toBe(listing(tree));
        if (extra.length) expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).toMatch(/lowerdir=\/run\/composefs-ts\/image-\w+:/);
      } finally {
        runBin('cfs-mount', ['umount', mnt]);
      }
    }
    expect(loopsUnder(tmp)).toBe(0);
  });

  it('new mount API by default (file-backed erofs, no loop device), with attached layers before 6.15; CFS_MOUNT_CLASSIC=1 uses mount(8)', () => {
    const store = path.join(tmp, 'objects');
    const img = path.join(tmp, 'store.img');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, img]).code).toBe(0);
    const mountLine = (): string => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.includes(` ${mnt} `)) ?? '';
    const layersLeft = (): number => fs.readdirSync('/run/composefs-ts').filter((d) => d.startsWith('layer-')).length;
    const before = fs.existsSync('/run/composefs-ts') ? layersLeft() : 0;
    for (const [env, form] of [
      [{}, /lowerdir\+=\/proc\/self\/fd\/\d+,datadir\+=/],
      // kernels before 6.15 refuse detached layers: the image is attached to a private directory first
      [{ CFS_MOUNT_ATTACHED_LAYERS: '1' }, /lowerdir\+=\/run\/composefs-ts\/layer-\w+,datadir\+=/],
      [{ CFS_MOUNT_CLASSIC: '1' }, /lowerdir=\/run\/composefs-ts\/image-\w+::/],
    ] as const) {
      const r = runBin('cfs-mount', ['--base', store, img, mnt], { env });
      expect(r.code, r.stderr).toBe(0);
      try {
        expect(mountLine()).toMatch(form);
        if (!('CFS_MOUNT_CLASSIC' in env)) expect(loopsUnder(tmp)).toBe(0);
        expect(layersLeft()).toBe(before);
        expect(listing(mnt)).toBe(listing(tree));
      } finally {
        runBin('cfs-mount', ['umount', mnt]);
      }
    }
    expect(loopsUnder(tmp)).toBe(0);
  });

  it('idmap=: owners show through a user namespace mapping', () => {
    const store = path.join(tmp, 'objects');
    const img = path.join(tmp, 'store.img');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, img]).code).toBe(0);
    // a user namespace mapping 0..65535 to 100000..165535, kept alive by a sleeping process
    const holder = spawn('unshare', ['--user', 'sleep', '60'], { stdio: 'ignore' });
    try {
      const ns = `/proc/${holder.pid}/ns/user`;
      for (let i = 0; i < 100 && fs.readlinkSync(ns) === fs.readlinkSync('/proc/self/ns/user'); i++) execFileSync('sleep', ['0.02']);
      fs.writeFileSync(`/proc/${holder.pid}/uid_map`, '0 100000 65536');
      fs.writeFileSync(`/proc/${holder.pid}/gid_map`, '0 100000 65536');
      for (const env of [{}, { CFS_MOUNT_ATTACHED_LAYERS: '1' }]) {
        const r = runBin('mount.composefs', ['none', mnt, '-o', `descriptor=${img},base=${store},idmap=${ns}`], { env });
        expect(r.code, r.stderr).toBe(0);
        try {
          const src = fs.lstatSync(path.join(tree, 'hello.txt'));
          const st = fs.lstatSync(path.join(mnt, 'hello.txt'));
          expect([st.uid, st.gid]).toEqual([src.uid + 100000, src.gid + 100000]);
          expect(fs.readFileSync(path.join(mnt, 'sizes', 'f100000'))).toEqual(fs.readFileSync(path.join(tree, 'sizes', 'f100000')));
        } finally {
          runBin('cfs-mount', ['umount', mnt]);
        }
      }
    } finally {
      holder.kill();
    }
    const bad = runBin('mount.composefs', ['none', mnt, '-o', `descriptor=${img},base=${store},idmap=/nonexistent`]);
    expect(bad.code).toBe(32);
    expect(bad.stderr).toMatch(/\/nonexistent/);
  });

  it('--hardlinks image: the mount shows one inode with st_nlink 2', () => {
    const store = path.join(tmp, 'objects');
    const img = path.join(tmp, 'hl.img');
    expect(runBin('cfs-writer', ['--hardlinks', '--digest-store', store, tree, img]).code).toBe(0);
    expect(runBin('cfs-mount', ['--base', store, img, mnt]).code).toBe(0);
    try {
      const a = fs.lstatSync(path.join(mnt, 'link-a'));
      const b = fs.lstatSync(path.join(mnt, 'link-b'));
      expect(a.ino).toBe(b.ino);
      expect([a.nlink, b.nlink]).toEqual([2, 2]);
      expect(fs.lstatSync(path.join(mnt, 'hello.txt')).nlink).toBe(1);
      expect(fs.readFileSync(path.join(mnt, 'link-b'))).toEqual(fs.readFileSync(path.join(tree, 'link-a')));
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
  });

  it('writable: changes land in the upper directory, the image stays unchanged', () => {
    const img = path.join(tmp, 'w.img');
    const store = path.join(tmp, 'objects');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, img]).code).toBe(0);
    const rw = path.join(tmp, 'rw');
    expect(runBin('cfs-mount', ['--base', store, '--writable', '--upper', rw, img, mnt]).code).toBe(0);
    try {
      fs.writeFileSync(path.join(mnt, 'new-file'), 'new');
      fs.appendFileSync(path.join(mnt, 'hello.txt'), 'more');
      fs.rmSync(path.join(mnt, 'sizes'), { recursive: true });
      expect(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8')).toBe('hello world\nmore');
      expect(fs.existsSync(path.join(rw, 'upper', 'new-file'))).toBe(true);
      expect(JSON.parse(fs.readFileSync(path.join(rw, 'lower.json'), 'utf8')).image).toBe(img);
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
    expect(runBin('cfs-mount', ['--base', store, img, mnt]).code).toBe(0);
    try {
      expect(listing(mnt)).toBe(listing(tree));
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
  });

  it('writable on a tmpfs by default; umount releases the tmpfs too', () => {
    const img = path.join(tmp, 'store.img');
    const store = path.join(tmp, 'objects');
    expect(runBin('cfs-writer', ['--digest-store', store, tree, img]).code).toBe(0);
    const before = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes('composefs-upper')).length;
    expect(runBin('cfs-mount', ['--base', store, '--writable', img, mnt]).code).toBe(0);
    try {
      fs.writeFileSync(path.join(mnt, 'scratch'), 'x');
      expect(fs.readFileSync(path.join(mnt, 'scratch'), 'utf8')).toBe('x');
      const during = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes('composefs-upper')).length;
      expect(during).toBe(before + 1);
    } finally {
      expect(runBin('cfs-mount', ['umount', mnt]).code).toBe(0);
    }
    const after = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes('composefs-upper')).length;
    expect(after).toBe(before);
    expect(loopsUnder(tmp)).toBe(0);
  });

  it('commit: create, modify, chmod, rename, delete; the new image shows exactly the changed tree', () => {
    const store = path.join(tmp, 'cas');
    expect(runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'base', tree]).code).toBe(0);
    const rw = path.join(tmp, 'rw-commit');
    const t0 = Math.floor(Date.now() / 1000) - 1;
    const expected = path.join(tmp, 'expected');
    spawnSync('cp', ['-a', tree, expected]);
    expect(runBin('cfs-mount', ['--store', store, '--writable', '--upper', rw, 'base', mnt]).code).toBe(0);
    try {
      for (const root of [mnt, expected]) {
        fs.writeFileSync(path.join(root, 'created.txt'), 'x'.repeat(5000));
        fs.writeFileSync(path.join(root, 'small-new'), 'tiny');
        fs.appendFileSync(path.join(root, 'sizes', 'f100000'), 'appended');
        fs.chmodSync(path.join(root, 'sizes', 'three-mib'), 0o600); // metadata only: metacopy up
        fs.renameSync(path.join(root, 'many'), path.join(root, 'many-renamed')); // redirect
        fs.renameSync(path.join(root, 'hello.txt'), path.join(root, 'hello-moved.txt'));
        fs.rmSync(path.join(root, 'deep'), { recursive: true });
        fs.rmSync(path.join(root, 'sym-rel'));
        fs.mkdirSync(path.join(root, 'names', 'newdir'));
        fs.symlinkSync('target', path.join(root, 'names', 'newdir', 'link'));
      }
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
    const c = runBin('cfs-mount', ['commit', rw, '--store', store, '--name', 'changed']);
    expect(c.code, c.stderr).toBe(0);
    expect(runBin('cfs-mount', ['--store', store, 'changed', mnt]).code).toBe(0);
    // what the test touched has mtimes of now in both trees, not the same ones
    const recent = (l: string): string => l.replace(/\b(\d{10})\.\d{10}\b/g, (m, sec) => (Number(sec) >= t0 ? 'NOW' : m));
    try {
      expect(recent(listing(mnt))).toBe(recent(listing(expected)));
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
    // the old image is unchanged
    expect(runBin('cfs-mount', ['--store', store, 'base', mnt]).code).toBe(0);
    try {
      expect(listing(mnt)).toBe(listing(tree));
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
  });

  it('commit: a directory removed and re-created (opaque in the upper layer) hides the old contents', () => {
    const store = path.join(tmp, 'cas');
    expect(runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'opq-base', tree]).code).toBe(0);
    const rw = path.join(tmp, 'rw-opaque');
    expect(runBin('cfs-mount', ['--store', store, '--writable', '--upper', rw, 'opq-base', mnt]).code).toBe(0);
    try {
      fs.rmSync(path.join(mnt, 'many'), { recursive: true });
      fs.mkdirSync(path.join(mnt, 'many'));
      fs.writeFileSync(path.join(mnt, 'many', 'only'), 'only file now');
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
    const opaque = spawnSync('getfattr', ['-h', '--absolute-names', '-n', 'trusted.overlay.opaque', path.join(rw, 'upper', 'many')], { encoding: 'utf8' });
    expect(opaque.stdout).toMatch(/trusted.overlay.opaque="y"/); // the case this test is about
    const c = runBin('cfs-mount', ['commit', rw, '--store', store, '--name', 'opq-new']);
    expect(c.code, c.stderr).toBe(0);
    expect(runBin('cfs-mount', ['--store', store, 'opq-new', mnt]).code).toBe(0);
    try {
      expect(fs.readdirSync(path.join(mnt, 'many'))).toEqual(['only']);
      expect(fs.readFileSync(path.join(mnt, 'many', 'only'), 'utf8')).toBe('only file now');
      expect(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8')).toBe('hello world\n');
    } finally {
      runBin('cfs-mount', ['umount', mnt]);
    }
  });

  it('install-helper makes `mount -t composefs` work', () => {
    const helper = '/sbin/mount.composefs';
    if (fs.existsSync(helper)) {
      console.log(`install-helper test skipped: ${helper} exists (not ours to replace)`);
      return;
    }
    const store = path.join(tmp, 'cas');
    expect(runBin('cfs-writer', ['--snapshot', '--store', store, '--name', 'via-mount8', tree]).code).toBe(0);
    expect(runBin('cfs-mount', ['install-helper']).code).toBe(0);
    try {
      const image = fs.realpathSync(path.join(store, 'refs', 'via-mount8'));
      const r = spawnSync('mount', ['-t', 'composefs', '-o', `descriptor=${image},base=${store}`, 'none', mnt], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      try {
        expect(listing(mnt)).toBe(listing(tree));
      } finally {
        spawnSync('umount', [mnt]);
      }
      expect(loopsUnder(tmp)).toBe(0);
    } finally {
      fs.rmSync(helper, { force: true });
    }
  });

  it('clear errors: digest mismatch, missing objects with --check, missing base', () => {
    const img = path.join(tmp, 'store.img');
    const r1 = runBin('cfs-mount', ['--base', path.join(tmp, 'objects'), '--digest', '0'.repeat(64), img, mnt]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/image digest mismatch/);
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    expect(runBin('cfs-mount', ['--base', empty, '--check', img, mnt]).stderr).toMatch(/7 object\(s\) missing/);
    const r3 = runBin('mount.composefs', ['none', mnt, '-o', `descriptor=${img},base=/nonexistent`]);
    expect(r3.code).toBe(32);
    expect(r3.stderr).toMatch(/base directory not found/);
  });
});

describe('mount options', () => {
  it('reads both dialects', () => {
    const o = parseComposefsOptions('/img.cfs', 'basedir=/a:/b,digest=' + 'AB'.repeat(32) + ',verity,ro');
    expect(o).toMatchObject({ image: '/img.cfs', basedirs: ['/a', '/b'], digest: 'ab'.repeat(32), verity: true, readOnly: true });
    expect(parseComposefsOptions('none', 'descriptor=/x.img,base=/objs,upperdir=/u,workdir=/w')).toMatchObject({
      image: '/x.img',
      basedirs: ['/objs'],
      upperdir: '/u',
      workdir: '/w',
    });
  });
  it('refuses option injection and bad paths', () => {
    const bad = [
      'descriptor=/x,base=/objs,lowerdir=/etc',
      'descriptor=/x,base=/objs:/y,upperdir=/u',
      'descriptor=/x,basedir=/a\\,b',
      'descriptor=/x,base=/objs\n',
      'descriptor=/x,base=/o,upperdir=/u:/v,workdir=/w',
      'descriptor=/x,base=/o,upperdir=relative,workdir=/w',
      'descriptor=/x,base=/o,upperdir=/u',
      'descriptor=/x',
      'base=/o',
      'descriptor=/x,base=/o,idmap=/proc/1/ns/user,upperdir=/u,workdir=/w',
    ];
    for (const b of bad) expect(() => parseComposefsOptions('none', b), JSON.stringify(b)).toThrow(/option|path|absolute|colon|comma|go together|no image|no object|newline|upperdir=/);
  });
});
