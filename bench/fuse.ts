/**
 * FUSE benchmark (BENCH_ONLY=fuse): one tree as
 *   cfs fuse      `cfs-writer --digest-store STORE TREE IMG`, `cfs-mount --fuse --base STORE IMG MNT`
 *   squashfuse    `mksquashfs TREE sq.img` (defaults: gzip), Debian's `squashfuse sq.img MNT`
 *   squashfuse_ll the same image through squashfuse's low-level server
 *   cfs kernel    the same composefs image, `cfs-mount --base STORE IMG MNT` (erofs + overlayfs)
 * For each: `ls -lR` cold (after dropping the page, dentry and inode caches) and warm, and
 * reading every file (`find MNT -type f -print0 | xargs -0 cat`) cold and warm; then the ratios of
 * our FUSE view to squashfuse and to the kernel mount (target: within 1.5x of squashfuse on
 * metadata, equal on data). Best of BENCH_RUNS (default 3) per cell.
 *
 * Needs root (drop_caches, the kernel mount); rows whose tool is missing are skipped with the reason.
 *
 * Environment:
 *   BENCH_FUSE_TREE   the tree (default /usr/share/doc)
 *   BENCH_RUNS        runs per cell (default 3)
 *   BENCH_TIMEOUT     per-invocation timeout in seconds (default 0: none)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelHas } from '../mount/kernel.js';
import { dropCaches, mountsUnder } from './mount.js';
import { PKG_ROOT, best, envInt, loadAvg, printTable, runQuiet, runShellTimed, runTimed, secs, treeStats, which } from './util.js';

interface Row {
  name: string;
  skip?: string;
  mount(mnt: string): boolean;
  umount(mnt: string): boolean;
}

interface Cells {
  lsCold: number[];
  lsWarm: number[];
  readCold: number[];
  readWarm: number[];
  entries?: number;
  error?: string;
}
const COLUMNS = ['lsCold', 'lsWarm', 'readCold', 'readWarm'] as const;

export function runFuseBench(): number {
  const tree = path.resolve(process.env.BENCH_FUSE_TREE || '/usr/share/doc');
  const runs = envInt('BENCH_RUNS', 3, 1);
  const timeout = envInt('BENCH_TIMEOUT', 0, 0);
  console.log(`\n== fuse: cfs-mount --fuse vs squashfuse vs the kernel composefs mount, ${tree} ==`);
  const skip = (why: string): number => (console.log(`skipped: ${why}`), 0);
  if (process.getuid?.() !== 0) return skip('needs root (drop_caches, the kernel mount)');
  if (!fs.existsSync('/dev/fuse')) return skip('no /dev/fuse');
  if (!which('fusermount3')) return skip('fusermount3 not found (apt install fuse3)');
  if (!fs.statSync(tree, { throwIfNoEntry: false })?.isDirectory()) return skip(`${tree} is not a directory`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-bench-fuse-'));
  const node = process.execPath;
  const mountJs = path.join(PKG_ROOT, 'bin/cfs-mount.js');
  const store = path.join(tmp, 'store');
  const img = path.join(tmp, 'cfs.img');
  const sq = path.join(tmp, 'sq.img');
  const ok = (r: unknown): boolean => r !== undefined;
  const fuseUmount = (mnt: string): boolean => ok(runTimed('fusermount3', ['-u', mnt], { timeout }));
  const cfsUmount = (mnt: string): boolean => ok(runTimed(node, [mountJs, 'umount', mnt], { timeout }));
  const mksquashfs = which('mksquashfs');
  const sqSkip = !mksquashfs ? 'mksquashfs not found (squashfs-tools)' : undefined;
  const rows: Row[] = [
    { name: 'cfs fuse', mount: (mnt) => ok(runTimed(node, [mountJs, '--fuse', '--base', store, img, mnt], { timeout })), umount: cfsUmount },
    ...['squashfuse', 'squashfuse_ll'].map((tool) => ({
      name: tool,
      skip: sqSkip ?? (which(tool) ? undefined : `${tool} not found (apt install squashfuse)`),
      mount: (mnt: string) => ok(runTimed(tool, [sq, mnt], { timeout })),
      umount: fuseUmount,
    })),
    {
      name: 'cfs kernel',
      skip: !kernelHas('erofs') || !kernelHas('overlay') ? 'the kernel has no erofs or overlay' : undefined,
      mount: (mnt) => ok(runTimed(node, [mountJs, '--base', store, img, mnt], { timeout })),
      umount: cfsUmount,
    },
  ];

  const results = new Map<string, Cells>();
  let failed = false;
  const env = { ...process.env, LC_ALL: 'C' };
  try {
    const { entries, bytes } = treeStats(tree);
    console.log(`${tree}: ${entries.toLocaleString('en-US')} entries, ${(bytes / 1e6).toFixed(1)} MB in files; ${runs} run(s); ${loadAvg()}`);
    fs.mkdirSync(store);
    if (!ok(runTimed(node, [path.join(PKG_ROOT, 'bin/cfs-writer.js'), '--no-progress', '--digest-store', store, tree, img], { timeout }))) {
      console.log('cfs-writer failed');
      return 1;
    }
    if (!sqSkip && !ok(runTimed(mksquashfs!, [tree, sq, '-noappend', '-quiet'], { timeout }))) {
      console.log('mksquashfs failed');
      return 1;
    }
    // runs interleave the rows, so drift in machine load affects all alike
    for (let run = 0; run < runs; run++) {
      for (const row of rows) {
        if (row.skip) continue;
        const c = results.get(row.name) ?? { lsCold: [], lsWarm: [], readCold: [], readWarm: [] };
        results.set(row.name, c);
        if (c.error) continue;
        const mnt = path.join(tmp, `mnt-${row.name.replace(/\W/g, '-')}`);
        fs.mkdirSync(mnt, { recursive: true });
        if (!row.mount(mnt)) {
          c.error = 'mount failed';
          failed = true;
          continue;
        }
        try {
          const ls = (): number | undefined => runTimed('ls', ['-lR', '--', mnt], { env, timeout })?.seconds;
          const read = (): number | undefined => runShellTimed('find "$1" -type f -print0 | xargs -0r cat > /dev/null', [mnt], { timeout })?.seconds;
          const cells: [number[], () => number | undefined, boolean][] = [
            [c.lsCold, ls, true],
            [c.lsWarm, ls, false],
            [c.readCold, read, true],
            [c.readWarm, read, false],
          ];
          for (const [into, fn, cold] of cells) {
            if (cold && !dropCaches()) continue;
            const t = fn();
            if (t === undefined) {
              c.error = 'ls/read failed';
              failed = true;
            } else into.push(t);
          }
          c.entries ??= treeStats(mnt).entries;
        } finally {
          if (!row.umount(mnt)) {
            failed = true;
            runQuiet('umount', ['--lazy', mnt]);
          }
        }
      }
    }

    const table: string[][] = [['fs', 'ls -lR cold', 'ls -lR warm', 'read cold', 'read warm', 'entries']];
    for (const row of rows) {
      const c = results.get(row.name);
      if (!c) {
        table.push([row.name, `skipped: ${row.skip}`, '', '', '', '']);
        continue;
      }
      table.push([
        row.name + (c.error ? ` (${c.error})` : ''),
        ...COLUMNS.map((k) => secs(best(c[k]))),
        c.entries === undefined ? '-' : String(c.entries) + (c.entries === entries ? '' : ` (tree ${entries})`),
      ]);
    }
    const ours = results.get('cfs fuse');
    for (const peer of ['squashfuse', 'squashfuse_ll', 'cfs kernel']) {
      const p = results.get(peer);
      if (!ours || !p) continue;
      table.push([
        `ratio fuse/${peer}`,
        ...COLUMNS.map((k) => {
          const a = best(ours[k]);
          const b = best(p[k]);
          return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;
        }),
        '',
      ]);
    }
    console.log('');
    printTable(table);
    console.log('seconds, wall clock, best of the runs; cold = after sync + echo 3 > /proc/sys/vm/drop_caches; read = find -type f | xargs cat');
    console.log('targets: fuse/squashfuse <= 1.5x on ls -lR, <= 1.0x on read; squashfs with mksquashfs defaults (gzip), composefs objects uncompressed');
  } finally {
    for (const m of mountsUnder(tmp)) runQuiet('umount', ['--lazy', m]);
    if (mountsUnder(tmp).length === 0) fs.rmSync(tmp, { recursive: true, force: true });
    else console.error(`bench: mounts left under ${tmp}; not removing it`);
  }
  return failed ? 1 : 0;
}
