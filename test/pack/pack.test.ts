/**
 * cfs-pack: packed images of the make-tree.sh tree and of a system directory, loop-mounted as
 * plain erofs and compared entry by entry with the source (modes, owners, times, xattrs,
 * devices, hardlinks, contents); checked by fsck.erofs where installed; unpacked again; errors
 * leave no output.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK_SIZE, PACK_HEADER, PACK_MAGIC, S_IFDIR, S_IFREG, decodeImage, dumpToString, encodePacked, newInode } from '../../format/index.js';
import { runBin } from '../cli/run.js';
import { VECTORS } from '../support/vectors.js';
import { describeTree, has, sh, withErofsMount } from './tree.js';

const isRoot = process.getuid?.() === 0;
const erofs = fs.readFileSync('/proc/filesystems', 'utf8').split('\n').some((l) => l.endsWith('\terofs'));
const mountReason = !isRoot ? 'not root' : !erofs ? 'the kernel has no erofs' : !fs.existsSync('/dev/loop-control') ? 'no loop devices' : null;
const treeReason = !isRoot ? 'not root (make-tree.sh needs mknod, chown and trusted.* xattrs)' : !has('setfattr') || !has('python3') ? 'setfattr/python3 missing' : null;
if (mountReason) console.log(`cfs-pack mount tests skipped: ${mountReason}`);
if (treeReason) console.log(`cfs-pack make-tree tests skipped: ${treeReason}`);
const fsck = has('fsck.erofs');
if (!fsck) console.log('fsck.erofs not installed (erofs-utils): fsck.erofs/dump.erofs checks skipped');
const erofsfuse = has('erofsfuse') && fs.existsSync('/dev/fuse');
if (!erofsfuse) console.log('erofsfuse not installed or no /dev/fuse: FUSE mount check skipped');
/** A real system directory (override with CFS_PACK_SYSTEM_DIR). */
const SYSTEM_DIR = process.env.CFS_PACK_SYSTEM_DIR ?? '/usr/share/zoneinfo';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-pack-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const at = (f: string): string => path.join(tmp, f);

function packOk(args: string[]): string {
  const r = runBin('cfs-pack', ['--no-progress', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return r.stderr;
}

/** fsck.erofs and dump.erofs accept the image, and fsck.erofs --extract reads back `source`. */
function fsckOk(image: string, source: string): void {
  if (!fsck) return;
  for (const [tool, args] of [['fsck.erofs', [image]], ['dump.erofs', ['-s', image]]] as const) {
    const r = sh(tool, [...args]);
    expect(r.ok, `${tool}: ${r.out}`).toBe(true);
  }
  const out = `${image}.fsck-extract`;
  const r = sh('fsck.erofs', [`--extract=${out}`, image]);
  expect(r.ok, r.out).toBe(true);
  // erofs-utils 1.5 extracts hardlinks as separate copies, no xattrs, and files without set-id
  // bits (it chowns after chmod); the kernel mount tests cover those
  const unlinked = (d: string): string =>
    describeTree(d, { noXattrs: true })
      .replace(/ nlink=\d+| link-of="[^"]*"/g, '')
      .replace(/^("(?:[^"\\]|\\.)*") 10[1-7](\d{3}) /gm, '$1 100$2 ');
  expect(unlinked(out)).toBe(unlinked(source));
  fs.rmSync(out, { recursive: true });
}

/** Nothing but `keep` is left in `dir` (no temp files). */
function onlyThese(dir: string, keep: string[]): void {
  expect(fs.readdirSync(dir).sort()).toEqual([...keep].sort());
}

describe('encodePacked (format core)', () => {
  it('lays out data places that decode back, identical contents sharing blocks', () => {
    const root = newInode(S_IFDIR | 0o755, { mtimeSec: 5n });
    const file = (size: number, key: string) => newInode(S_IFREG | 0o644, { size, mtimeSec: 7n, mtimeNsec: 9, payload: key });
    const a = file(10_000, 'same');
    const b = file(10_000, 'same');
    const c = file(10_000, 'other');
    const small = file(100, 'small');
    const big = file(3 * BLOCK_SIZE + 3000, 'big'); // a tail over half a block gets a block
    root.children = ['a', 'b', 'c', 'd-big', 'small'].map((name, i) => ({ name, inode: [a, b, c, big, small][i], link: false }));
    const img = encodePacked(root, { dataKey: (n) => n.payload });
    expect(img.meta.readUInt32LE(PACK_HEADER.off.magic)).toBe(PACK_MAGIC);
    expect(img.meta.length).toBe(img.metaBlocks * BLOCK_SIZE);
    expect(img.dedupFiles).toBe(1);
    expect(img.dedupBytes).toBe(2 * BLOCK_SIZE);
    // a and b share two blocks (their 1808-byte tails are inline, one per inode)
    const [da, dc, dbig, dsmall] = img.data;
    expect(img.data.length).toBe(4);
    expect([da.inode, da.nBlocks, da.tailSize, da.tailOffsets.length]).toEqual([a, 2, 1808, 2]);
    expect([dc.inode, dc.blkaddr]).toEqual([c, da.blkaddr + 2]);
    expect([dbig.nBlocks, dbig.tailSize]).toEqual([4, 0]);
    expect([dsmall.nBlocks, dsmall.tailSize, dsmall.blkaddr]).toEqual([0, 100, 0]);
    expect(img.totalBlocks).toBe(da.blkaddr + 2 + 2 + 4);
    expect(da.blkaddr).toBe(img.metaBlocks);

    const dec = decodeImage(img.meta, { plain: true });
    expect(dec.blocks).toBe(img.totalBlocks);
    const [pa, pb, pc] = ['a', 'b', 'c'].map((n) => dec.data.get(dec.root.children!.find((d) => d.name === n)!.inode)!);
    expect(pa.blkaddr).toBe(pb.blkaddr);
    expect(pa.tailOffset).not.toBe(pb.tailOffset);
    expect([pa.tailOffset, pb.tailOffset]).toEqual(da.tailOffsets);
    expect(pc.blkaddr).toBe(dc.blkaddr);
    // no overlay rewriting, no root whiteouts: the tree reads back as it went in
    for (const d of root.children) d.inode.payload = null;
    const body = (dump: string): string => dump.slice(dump.indexOf('\n')); // the root's size and nlink are the encoder's
    expect(body(dumpToString(dec.root))).toBe(body(dumpToString(root)));
  });
});

describe('encodePacked: large files', () => {
  it('a 5 GiB file gets an extended inode, its blocks and a short inline tail', () => {
    const root = newInode(S_IFDIR | 0o755);
    const size = 5 * 2 ** 30 + 5;
    root.children = [{ name: 'big', inode: newInode(S_IFREG | 0o600, { size }), link: false }];
    const img = encodePacked(root);
    expect(img.data[0].nBlocks).toBe(5 * 2 ** 18);
    expect(img.data[0].tailSize).toBe(5);
    expect(img.totalBlocks).toBe(img.metaBlocks + 5 * 2 ** 18);
    const dec = decodeImage(img.meta, { plain: true });
    const big = dec.root.children![0].inode;
    expect(big.size).toBe(size);
    expect(dec.data.get(big)).toEqual({ blkaddr: img.metaBlocks, nBlocks: 5 * 2 ** 18, tailOffset: img.data[0].tailOffsets[0], tailSize: 5 });
  });
});

describe.runIf(!treeReason)('cfs-pack on the make-tree.sh tree', () => {
  const tree = at('tree');
  beforeAll(() => {
    const r = spawnSync('bash', [path.join(VECTORS, 'make-tree.sh'), tree], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`make-tree.sh failed: ${r.stderr}`);
  });
  const img = at('tree.erofs');

  it('packs deterministically; fsck.erofs accepts the image', () => {
    const summary = packOk([tree, img]);
    expect(summary).toMatch(/411 entries/);
    const again = at('tree-again.erofs');
    packOk([tree, again]);
    expect(fs.readFileSync(again).equals(fs.readFileSync(img))).toBe(true);
    expect(fs.statSync(img).size % BLOCK_SIZE).toBe(0);
    fsckOk(img, tree);
  });

  it.runIf(!mountReason)('mounts with plain mount -t erofs: every entry as in the source', () => {
    const want = describeTree(tree);
    expect(want).toMatch(/"link-b" .*link-of="link-a"/);
    expect(want).toMatch(/"dev\/whiteout" 20644 0:0 nlink=1 rdev=0/);
    expect(want).toMatch(/trusted\.overlay\.opaque="y"/);
    expect(withErofsMount(img, at('mnt'), () => describeTree(at('mnt')))).toBe(want);
  });

  it.runIf(erofsfuse)('mounts with erofsfuse', () => {
    const mnt = at('fuse');
    fs.mkdirSync(mnt);
    const m = sh('erofsfuse', [img, mnt]);
    expect(m.ok, m.out).toBe(true);
    try {
      expect(describeTree(mnt, { noTimes: false })).toBe(describeTree(tree));
    } finally {
      sh('umount', [mnt]);
    }
  });

  it('unpack(pack(tree)) equals the tree, and packs to the same image again', () => {
    const out = at('unpacked');
    expect(packOk(['--unpack', img, out])).toMatch(/unpacked packed image: 411 entries/);
    expect(describeTree(out)).toBe(describeTree(tree));
    const repacked = at('repacked.erofs');
    packOk([out, repacked]);
    expect(fs.readFileSync(repacked).equals(fs.readFileSync(img))).toBe(true);
  });

  it('--image with its store gives the same image as the directory; --unpack of a composefs image', () => {
    const store = at('store');
    const cimg = at('tree.cfs');
    const w = runBin('cfs-writer', ['--hardlinks', '--digest-store', store, tree, cimg]);
    expect(w.code, w.stderr).toBe(0);
    const fromImage = at('from-image.erofs');
    packOk(['--image', cimg, '--store', store, fromImage]);
    expect(fs.readFileSync(fromImage).equals(fs.readFileSync(img))).toBe(true);
    const out = at('unpacked-cfs');
    expect(packOk(['--unpack', '--store', store, cimg, out])).toMatch(/unpacked composefs image/);
    expect(describeTree(out)).toBe(describeTree(tree));
  });

  it.runIf(!mountReason)('--use-epoch: every mtime is 0', () => {
    const epoch = at('epoch.erofs');
    packOk(['--use-epoch', tree, epoch]);
    const mnt = at('mnt-epoch');
    withErofsMount(epoch, mnt, () => {
      expect(describeTree(mnt, { noTimes: true })).toBe(describeTree(tree, { noTimes: true }));
      const times = new Set(describeTree(mnt).match(/mtime=\d+/g));
      expect([...times]).toEqual(['mtime=0']);
    });
  });
});

describe.runIf(!mountReason)('cfs-pack of a real system directory and of a root file system', () => {
  let systemTree: string | undefined;
  const wantSystem = (): string => (systemTree ??= describeTree(SYSTEM_DIR));
  it(`${SYSTEM_DIR}: the mounted image equals the directory`, () => {
    if (!fs.existsSync(SYSTEM_DIR)) {
      console.log(`${SYSTEM_DIR} missing: system directory test skipped`);
      return;
    }
    const img = at('system.erofs');
    packOk([SYSTEM_DIR, img]);
    fsckOk(img, SYSTEM_DIR);
    expect(withErofsMount(img, at('mnt-sys'), () => describeTree(at('mnt-sys')))).toBe(wantSystem());
    const out = at('sys-unpacked');
    packOk(['--unpack', img, out]);
    expect(describeTree(out)).toBe(wantSystem());
  });

  it.runIf(fsck)(`--unpack reads an image mkfs.erofs made of ${SYSTEM_DIR}`, () => {
    const img = at('mkfs.erofs');
    const r = sh('mkfs.erofs', ['--quiet', img, SYSTEM_DIR]);
    expect(r.ok, r.out).toBe(true);
    const out = at('mkfs-unpacked');
    expect(packOk(['--unpack', img, out])).toMatch(/unpacked erofs image/);
    expect(describeTree(out)).toBe(wantSystem());
  });

  it('duplicates are stored once and read back right', () => {
    const dir = at('dups');
    fs.mkdirSync(dir);
    const a = Buffer.alloc(50_000, 'a');
    const b = Buffer.from(a);
    b[49_999] = 0x62; // same size, other content
    fs.writeFileSync(path.join(dir, 'one'), a);
    fs.writeFileSync(path.join(dir, 'two'), a);
    fs.writeFileSync(path.join(dir, 'three'), b);
    const img = at('dups.erofs');
    expect(packOk([dir, img])).toMatch(/1 duplicate files stored once \(0\.0 MiB saved\)/);
    const dec = decodeImage(fs.readFileSync(img).subarray(0, 64 * BLOCK_SIZE), { plain: true });
    const place = (n: string) => dec.data.get(dec.root.children!.find((d) => d.name === n)!.inode)!;
    expect(place('one').blkaddr).toBe(place('two').blkaddr);
    expect(place('three').blkaddr).not.toBe(place('one').blkaddr);
    // header + superblock + inodes, then 13 blocks per distinct content (12 full + 848 inline)
    expect(fs.statSync(img).size).toBe((place('one').blkaddr + 2 * 12) * BLOCK_SIZE);
    expect(withErofsMount(img, at('mnt-dups'), () => describeTree(at('mnt-dups')))).toBe(describeTree(dir));
  });

  it('a root file system tree with /sbin/init mounts and runs its init', () => {
    const root = at('rootfs');
    for (const d of ['sbin', 'bin', 'proc', 'sys', 'dev', 'etc']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.writeFileSync(path.join(root, 'sbin/init'), '#!/bin/sh\necho packed-init-ok\n', { mode: 0o755 });
    fs.writeFileSync(path.join(root, 'etc/hostname'), 'packed\n');
    const img = at('rootfs.erofs');
    packOk([root, img]);
    fsckOk(img, root);
    withErofsMount(img, at('mnt-root'), () => {
      const st = fs.statSync(at('mnt-root/sbin/init'));
      expect(st.mode & 0o777).toBe(0o755);
      expect(spawnSync(at('mnt-root/sbin/init'), { encoding: 'utf8' }).stdout).toBe('packed-init-ok\n');
    });
  });
});

describe.runIf(has('script'))('cfs-pack on a terminal', () => {
  it('shows a progress line, and none without a terminal', () => {
    const dir = at('many');
    fs.mkdirSync(dir);
    for (let i = 0; i < 600; i++) fs.writeFileSync(path.join(dir, `f${i}`), '');
    const bin = path.resolve(__dirname, '../../bin/cfs-pack.js');
    const cmd = `${process.execPath} ${bin} ${dir} ${at('many.erofs')}`;
    const out = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'latin1' }).stdout;
    expect(out).toMatch(/\r\x1b\[Kscanning: 512 entries/);
    expect(out).toMatch(/cfs-pack: 601 entries/);
    expect(packOk([dir, at('many2.erofs')])).not.toMatch(/scanning/);
  });
});

describe('cfs-pack errors leave no output', () => {
  it('refuses a missing source or a bad command line', () => {
    const dir = at('err1');
    fs.mkdirSync(dir);
    const r = runBin('cfs-pack', ['/nonexistent/src', path.join(dir, 'out.erofs')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^cfs-pack: \/nonexistent\/src: not a directory/);
    expect(runBin('cfs-pack', ['only-one-arg']).code).toBe(2);
    expect(runBin('cfs-pack', ['--unpack', '--use-epoch', 'img', dir]).stderr).toMatch(/--use-epoch and --threads are for packing/);
    expect(runBin('cfs-pack', ['--image', 'img', '--skip-xattrs', 'out']).code).toBe(2);
    onlyThese(dir, []);
  });

  it('a composefs image whose objects are missing', () => {
    const src = at('err-src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'big'), Buffer.alloc(10_000, 7));
    const cimg = at('err.cfs');
    expect(runBin('cfs-writer', [src, cimg]).code).toBe(0);
    const out = at('err2');
    fs.mkdirSync(out);
    const r = runBin('cfs-pack', ['--image', cimg, '--store', at('empty-store'), path.join(out, 'x.erofs')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/err\.cfs: CFS_IO: 1 backing file\(s\) not found/);
    onlyThese(out, []);
  });

  it('a composefs image whose backing path leaves the base directory', () => {
    const base = at('err-base');
    fs.mkdirSync(path.join(base, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(base, 'secret'), 'x'.repeat(100));
    const cimg = at('escape.cfs');
    const dump = '/ 4096 40755 2 0 0 0 0.0 - - -\n/f 100 100644 1 0 0 0 0.0 ../secret - -\n';
    expect(runBin('cfs-writer', ['--from-file', '-', cimg], { input: dump }).code).toBe(0);
    const out = at('err-escape');
    fs.mkdirSync(out);
    const r = runBin('cfs-pack', ['--image', cimg, '--base', path.join(base, 'sub'), path.join(out, 'x.erofs')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/escape\.cfs: CFS_\w+: backing file path "\.\.\/secret" leaves the base directory/);
    onlyThese(out, []);
  });

  it.runIf(isRoot)('a full disk mid-write: exit 1, no image, no temp file', () => {
    const src = at('err-big');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'data'), Buffer.alloc(3 << 20, 1));
    const small = at('small-fs');
    fs.mkdirSync(small);
    const m = sh('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
    expect(m.ok, m.out).toBe(true);
    try {
      const r = runBin('cfs-pack', [src, path.join(small, 'out.erofs')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ENOSPC/);
      onlyThese(small, []);
    } finally {
      sh('umount', [small]);
    }
  });

  it('--unpack of a corrupt or truncated image, or into a non-empty directory', () => {
    const src = at('err-tree');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'sub/f'), Buffer.alloc(20_000, 3));
    const img = at('err-tree.erofs');
    packOk([src, img]);
    const parent = at('err3');
    fs.mkdirSync(parent);
    const bytes = fs.readFileSync(img);
    const truncated = at('truncated.erofs');
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - BLOCK_SIZE));
    let r = runBin('cfs-pack', ['--unpack', truncated, path.join(parent, 'out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/truncated\.erofs: CFS_OUT_OF_BOUNDS: image is \d+ bytes, its superblock says \d+ blocks/);
    const corrupt = at('corrupt.erofs');
    const bad = Buffer.from(bytes);
    bad.fill(0xee, 1152, 1152 + 64); // the root inode
    fs.writeFileSync(corrupt, bad);
    r = runBin('cfs-pack', ['--unpack', corrupt, path.join(parent, 'out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cfs-pack: .*corrupt\.erofs: CFS_/);
    onlyThese(parent, []);
    fs.mkdirSync(path.join(parent, 'full'));
    fs.writeFileSync(path.join(parent, 'full', 'x'), '');
    r = runBin('cfs-pack', ['--unpack', img, path.join(parent, 'full')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/exists and is not an empty directory/);
    onlyThese(parent, ['full']);
  });
});
