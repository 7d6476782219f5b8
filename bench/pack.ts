/**
 * cfs-pack benchmark: one tree as a self-contained image, four ways, in the same run:
 *   cfs-pack    `node bin/cfs-pack.js TREE img`, mounted with `mount -t erofs -o loop,ro`
 *   squashfs    `mksquashfs TREE img -comp zstd -noappend -quiet`, `mount -t squashfs`
 *   mkfs.erofs  `mkfs.erofs --quiet img TREE` (uncompressed), `mount -t erofs`
 *   ext4 cp -a  sparse image, `mkfs.ext4 -q`, loop mount, `cp -a TREE/. MNT`, umount
 * Build time (each ends with `sync`, since cfs-pack fsyncs its output), size (allocated bytes for
 * the sparse ext4 image), then `ls -lR` and reading every file after mounting, cold and warm
 * (bench/mount.ts runs the rows). Prints cfs-pack's build time as a ratio to mksquashfs's
 * (target <= 1.00x). Missing tools are installed with apt-get once, else their rows are skipped.
 *
 *   BENCH_PACK_TREE   the tree (default /usr/share/doc)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Row, loopRow, runRowsBench } from './mount.js';
import { PKG_ROOT, runQuiet, runTimed, treeStats, which } from './util.js';

/** Run `steps` in order; false at the first that fails. */
const all = (...steps: (() => boolean)[]): boolean => steps.every((s) => s());

function packRows(tree: string, tmp: string, timeout: number, results: Map<string, number>): Row[] {
  const ok = (r: unknown): boolean => r !== undefined;
  const run = (file: string, args: string[]) => (): boolean => ok(runTimed(file, args, { timeout }));
  const sync = run('sync', []);
  const timed = (name: string, build: () => boolean) => (): boolean => {
    const t0 = process.hrtime.bigint();
    const done = all(build, sync);
    if (done) results.set(name, Number(process.hrtime.bigint() - t0) / 1e9);
    return done;
  };
  const mksquashfs = which('mksquashfs');
  const mkfsErofs = which('mkfs.erofs');
  const mkfsExt4 = which('mkfs.ext4');
  const ext4Mnt = path.join(tmp, 'ext4-fill');
  return [
    loopRow({
      name: 'cfs-pack',
      fstype: 'erofs',
      image: path.join(tmp, 'pack.erofs'),
      timeout,
      build: (image) => timed('cfs-pack', run(process.execPath, [path.join(PKG_ROOT, 'bin/cfs-pack.js'), '--no-progress', tree, image]))(),
    }),
    loopRow({
      name: 'squashfs zstd',
      fstype: 'squashfs',
      skip: !mksquashfs ? 'mksquashfs not found (squashfs-tools)' : undefined,
      image: path.join(tmp, 'sq.img'),
      timeout,
      build: (image) => timed('squashfs zstd', run(mksquashfs!, [tree, image, '-comp', 'zstd', '-noappend', '-quiet']))(),
    }),
    loopRow({
      name: 'mkfs.erofs',
      fstype: 'erofs',
      skip: !mkfsErofs ? 'mkfs.erofs not found (erofs-utils)' : undefined,
      image: path.join(tmp, 'mkfs.erofs'),
      timeout,
      build: (image) => timed('mkfs.erofs', run(mkfsErofs!, ['--quiet', image, tree]))(),
    }),
    loopRow({
      name: 'ext4 cp -a',
      fstype: 'ext4',
      skip: !mkfsExt4 ? 'mkfs.ext4 not found (e2fsprogs)' : undefined,
      image: path.join(tmp, 'ext4.img'),
      timeout,
      size: () => fs.statSync(path.join(tmp, 'ext4.img')).blocks * 512,
      build: (image) => {
        // room for the data, plus an inode and a block of slack per entry, plus the journal
        const { entries, bytes } = treeStats(tree);
        const size = Math.ceil((bytes * 1.2 + entries * 8192 + (64 << 20)) / 4096) * 4096;
        const fill = (): boolean => {
          fs.mkdirSync(ext4Mnt, { recursive: true });
          if (!ok(runTimed('mount', ['-o', 'loop', '--', image, ext4Mnt], { timeout }))) return false;
          const copied = ok(runTimed('cp', ['-a', '--', `${tree}/.`, ext4Mnt], { timeout }));
          const unmounted = runQuiet('umount', ['--', ext4Mnt]).ok;
          fs.rmdirSync(ext4Mnt);
          return copied && unmounted;
        };
        const create = (): boolean => {
          fs.writeFileSync(image, '');
          fs.truncateSync(image, size);
          return true;
        };
        return timed('ext4 cp -a', () => all(create, run(mkfsExt4!, ['-q', '-F', image]), fill))();
      },
    }),
  ];
}

export function runPackBench(): number {
  const tree = path.resolve(process.env.BENCH_PACK_TREE || '/usr/share/doc');
  const builds = new Map<string, number>();
  const code = runRowsBench({
    title: 'pack: cfs-pack vs mksquashfs -comp zstd vs mkfs.erofs vs cp -a into ext4',
    tree,
    fstypes: ['erofs'],
    tools: [
      ['mksquashfs', 'squashfs-tools'],
      ['mkfs.erofs', 'erofs-utils'],
      ['mkfs.ext4', 'e2fsprogs'],
    ],
    rows: (tmp, timeout) => packRows(tree, tmp, timeout, builds),
    notes: [
      'build = the tool (node startup included for cfs-pack) + sync; ext4: truncate + mkfs.ext4 + mount + cp -a + umount',
      'size: image file; ext4: allocated blocks of the sparse image. mkfs.erofs and cfs-pack are uncompressed',
    ],
  });
  const ours = builds.get('cfs-pack');
  const sq = builds.get('squashfs zstd');
  if (ours !== undefined && sq !== undefined) console.log(`cfs-pack build / mksquashfs -comp zstd build: ${(ours / sq).toFixed(2)}x (target <= 1.00x)`);
  return code;
}
