/**
 * Mount benchmark: one tree as
 *   composefs  `node bin/cfs-writer.js --digest-store STORE TREE IMG`, mounted by
 *              `node bin/cfs-mount.js mount --base STORE IMG MNT` (erofs + overlayfs)
 *   squashfs   `mksquashfs TREE sq.img -noappend -quiet`, `mount -t squashfs -o loop,ro`
 *   erofs      `mkfs.erofs erofs.img TREE` (uncompressed), `mount -t erofs -o loop,ro`
 * For each: build time and size, time to mount, `ls -lR` cold (after dropping the page cache)
 * and warm, and reading every file (`find MNT -type f -print0 | xargs -0 cat`) cold and warm.
 *
 * The runner (runRowsBench) is shared with the cfs-pack benchmark (bench/pack.ts).
 *
 * Needs root and a kernel with erofs + overlayfs (else prints why it skips). Missing mksquashfs /
 * mkfs.erofs are installed once with apt-get (squashfs-tools, erofs-utils); a row whose tool is
 * still missing is skipped with the reason. Everything is unmounted and removed again, also on
 * failure or interruption, and loop devices still bound to our images are detached.
 *
 * Environment:
 *   BENCH_MOUNT_TREE  the tree (default /usr/share/doc)
 *   BENCH_TIMEOUT     per-invocation timeout in seconds (default 0: none)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PKG_ROOT, envInt, loadAvg, runQuiet, runShellTimed, runTimed, secs, printTable, treeStats, which } from './util.js';
import { kernelHas } from '../mount/kernel.js';

/** One file system in a build + mount + read benchmark. */
export interface Row {
  name: string;
  /** Why the row cannot run, if it cannot. */
  skip?: string;
  image: string;
  /** Extra disk used besides the image (the composefs object store). */
  extraDir?: string;
  /** Bytes the output takes, if not the image file's size (+ extraDir). */
  size?(): number;
  build(): boolean;
  mount(mnt: string): boolean;
  umount(mnt: string): boolean;
}

interface Measured {
  build?: number;
  size?: number;
  mount?: number;
  lsCold?: number;
  lsWarm?: number;
  readCold?: number;
  readWarm?: number;
  umount?: number;
  entries?: number;
  error?: string;
}

/** Mount points at or under `dir`, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  let info = '';
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescape)
    .filter((p) => p === dir || p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** Detach loop devices still bound to `image` (mount -o loop sets autoclear, so normally none). */
function detachLoops(image: string): string[] {
  const r = runQuiet('losetup', ['-j', image]);
  if (!r.ok || !r.out) return [];
  const devs = r.out
    .split('\n')
    .map((l) => /^(\/dev\/loop\d+):/.exec(l)?.[1])
    .filter((d): d is string => d !== undefined);
  for (const d of devs) runQuiet('losetup', ['-d', d]);
  return devs;
}

let dropCachesError: string | undefined;
/** sync + drop the page, dentry and inode caches; false (with the reason kept) if not allowed. */
export function dropCaches(): boolean {
  runQuiet('sync', []);
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch (e) {
    dropCachesError = (e as Error).message;
    return false;
  }
}

/** Install the Debian packages of missing tools once ([tool, package] pairs). */
function ensureTools(tools: [string, string][]): void {
  const missing = tools.filter(([tool]) => !which(tool)).map(([, pkg]) => pkg);
  if (missing.length === 0 || !which('apt-get')) return;
  console.log(`installing ${missing.join(' ')} (apt-get) ...`);
  const r = runTimed('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-q', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (!r) console.log('apt-get install failed; rows needing those tools are skipped');
}

export interface RowsBench {
  /** Section heading. */
  title: string;
  tree: string;
  /** File systems the kernel must have for the section to run at all. */
  fstypes: string[];
  /** [tool, Debian package] pairs installed with apt-get when missing. */
  tools: [string, string][];
  rows(tmp: string, timeout: number): Row[];
  /** Lines printed under the table. */
  notes: string[];
}

/**
 * Build each row's image from `tree`, mount it, time `ls -lR` and reading every file, cold and
 * warm, unmount; print one table. Returns 1 if an invocation failed (skips are not failures).
 */
export function runRowsBench(bench: RowsBench): number {
  const { tree } = bench;
  const timeout = envInt('BENCH_TIMEOUT', 0, 0);
  console.log(`\n== ${bench.title}, ${tree} ==`);

  const skip = (why: string): number => {
    console.log(`skipped: ${why}`);
    return 0;
  };
  if (process.getuid?.() !== 0) return skip('needs root (mount, loop devices, drop_caches)');
  for (const fstype of bench.fstypes) {
    if (!kernelHas(fstype)) return skip(`the kernel has no ${fstype} support (/proc/filesystems)`);
  }
  if (!fs.existsSync('/dev/loop-control')) return skip('no /dev/loop-control (loop devices unavailable)');
  if (!fs.statSync(tree, { throwIfNoEntry: false })?.isDirectory()) return skip(`${tree} is not a directory`);
  ensureTools(bench.tools);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-bench-mount-'));
  const mounted = new Map<string, Row>();
  const loopImages: string[] = [];
  let cleanedUp = false;
  /** Unmount whatever is still mounted, detach our loop devices, remove tmp if nothing is left there. */
  const cleanup = (): void => {
    if (cleanedUp) return;
    cleanedUp = true;
    for (const [mnt, row] of mounted) {
      if (!row.umount(mnt)) runQuiet('umount', ['--lazy', mnt]);
      mounted.delete(mnt);
    }
    for (const img of loopImages) {
      const left = detachLoops(img);
      if (left.length) console.log(`  detached leftover loop device(s) ${left.join(' ')} of ${img}`);
    }
    const still = mountsUnder(tmp);
    for (const m of still) runQuiet('umount', ['--lazy', m]);
    if (mountsUnder(tmp).length === 0) fs.rmSync(tmp, { recursive: true, force: true });
    else console.error(`bench: mounts left under ${tmp}; not removing it: ${mountsUnder(tmp).join(' ')}`);
  };
  // run.ts's signal handlers end the process with process.exit(): unmount on the way out.
  process.on('exit', cleanup);

  const rows = bench.rows(tmp, timeout);

  const results = new Map<string, Measured>();
  let failed = false;
  const lsEnv = { ...process.env, LC_ALL: 'C' };
  try {
    const { entries, bytes } = treeStats(tree);
    console.log(`${tree}: ${entries.toLocaleString('en-US')} entries, ${(bytes / 1e6).toFixed(1)} MB in files; scratch ${tmp}; ${loadAvg()}`);
    for (const row of rows) {
      if (row.skip) continue;
      const m: Measured = {};
      results.set(row.name, m);
      const t0 = process.hrtime.bigint();
      if (!row.build()) {
        m.error = 'build failed';
        failed = true;
        continue;
      }
      m.build = Number(process.hrtime.bigint() - t0) / 1e9;
      m.size = row.size ? row.size() : fs.statSync(row.image).size + (row.extraDir ? treeStats(row.extraDir).bytes : 0);
      loopImages.push(row.image);

      const mnt = path.join(tmp, `mnt-${row.name}`);
      fs.mkdirSync(mnt);
      dropCaches();
      const t1 = process.hrtime.bigint();
      if (!row.mount(mnt)) {
        m.error = 'mount failed';
        failed = true;
        continue;
      }
      m.mount = Number(process.hrtime.bigint() - t1) / 1e9;
      mounted.set(mnt, row);
      try {
        const ls = (): number | undefined => runTimed('ls', ['-lR', '--', mnt], { env: lsEnv, timeout })?.seconds;
        const read = (): number | undefined =>
          runShellTimed('find "$1" -type f -print0 | xargs -0r cat > /dev/null', [mnt], { timeout })?.seconds;
        const cold = dropCaches();
        m.lsCold = cold ? ls() : undefined;
        m.lsWarm = ls();
        m.readCold = dropCaches() ? read() : undefined;
        m.readWarm = read();
        if ((cold && m.lsCold === undefined) || m.lsWarm === undefined || m.readWarm === undefined) {
          m.error = 'ls/read failed';
          failed = true;
        }
        m.entries = treeStats(mnt).entries;
      } finally {
        const t2 = process.hrtime.bigint();
        const unmounted = row.umount(mnt);
        if (unmounted) {
          m.umount = Number(process.hrtime.bigint() - t2) / 1e9;
          mounted.delete(mnt);
          fs.rmdirSync(mnt); // never recursive: it was a mount point
        } else {
          failed = true; // cleanup() retries, lazily if need be
        }
      }
    }

    const table: string[][] = [
      ['fs', 'size (MB)', 'build (s)', 'mount (s)', 'ls -lR cold', 'ls -lR warm', 'read cold', 'read warm', 'umount (s)', 'entries'],
    ];
    for (const row of rows) {
      const m = results.get(row.name);
      if (!m) {
        table.push([row.name, `skipped: ${row.skip}`, '', '', '', '', '', '', '', '']);
        continue;
      }
      table.push([
        row.name + (m.error ? ` (${m.error})` : ''),
        m.size === undefined ? '-' : (m.size / 1e6).toFixed(1),
        secs(m.build, 2),
        secs(m.mount),
        secs(m.lsCold),
        secs(m.lsWarm),
        secs(m.readCold),
        secs(m.readWarm),
        secs(m.umount),
        m.entries === undefined ? '-' : String(m.entries) + (m.entries === entries ? '' : ` (tree ${entries})`),
      ]);
    }
    console.log('');
    printTable(table);
    console.log('seconds, wall clock; cold = after sync + echo 3 > /proc/sys/vm/drop_caches; read = find -type f | xargs cat');
    for (const note of bench.notes) console.log(note);
    if (dropCachesError) console.log(`drop_caches failed (${dropCachesError}): cold columns left empty`);
  } finally {
    cleanup();
    process.removeListener('exit', cleanup);
  }
  return failed ? 1 : 0;
}

/** A row whose image is loop-mounted read-only as `fstype`. */
export function loopRow(r: { name: string; fstype: string; image: string; timeout: number; skip?: string; size?: () => number; build: (image: string) => boolean }): Row {
  const ok = (x: unknown): boolean => x !== undefined;
  return {
    name: r.name,
    skip: r.skip,
    image: r.image,
    size: r.size,
    build: () => r.build(r.image),
    mount: (mnt) => ok(runTimed('mount', ['-t', r.fstype, '-o', 'loop,ro', '--', r.image, mnt], { timeout: r.timeout })),
    umount: (mnt) => ok(runTimed('umount', ['--', mnt], { timeout: r.timeout })),
  };
}

function mountRows(tree: string, tmp: string, timeout: number): Row[] {
  const node = process.execPath;
  const writerJs = path.join(PKG_ROOT, 'bin/cfs-writer.js');
  const mountJs = path.join(PKG_ROOT, 'bin/cfs-mount.js');
  const store = path.join(tmp, 'store');
  const mksquashfs = which('mksquashfs');
  const mkfsErofs = which('mkfs.erofs');
  const ok = (r: unknown): boolean => r !== undefined;

  return [
    {
      name: 'composefs',
      image: path.join(tmp, 'cfs.img'),
      extraDir: store,
      build() {
        fs.mkdirSync(store, { recursive: true });
        return ok(runTimed(node, [writerJs, '--no-progress', '--digest-store', store, tree, this.image], { timeout }));
      },
      mount(mnt) {
        return ok(runTimed(node, [mountJs, 'mount', '--base', store, this.image, mnt], { timeout }));
      },
      umount(mnt) {
        return ok(runTimed(node, [mountJs, 'umount', mnt], { timeout }));
      },
    },
    loopRow({
      name: 'squashfs',
      fstype: 'squashfs',
      skip: !kernelHas('squashfs') ? 'the kernel has no squashfs support' : !mksquashfs ? 'mksquashfs not found (squashfs-tools)' : undefined,
      image: path.join(tmp, 'sq.img'),
      timeout,
      build: (image) => ok(runTimed(mksquashfs!, [tree, image, '-noappend', '-quiet'], { timeout })),
    }),
    loopRow({
      name: 'erofs',
      fstype: 'erofs',
      skip: !mkfsErofs ? 'mkfs.erofs not found (erofs-utils)' : undefined,
      image: path.join(tmp, 'erofs.img'),
      timeout,
      build: (image) => ok(runTimed(mkfsErofs!, [image, tree], { timeout })),
    }),
  ];
}

/** The mount benchmark: composefs vs squashfs vs erofs. */
export function runMountBench(): number {
  const tree = path.resolve(process.env.BENCH_MOUNT_TREE || '/usr/share/doc');
  return runRowsBench({
    title: 'mount: composefs vs squashfs vs erofs',
    tree,
    fstypes: ['erofs', 'overlay'],
    tools: [
      ['mksquashfs', 'squashfs-tools'],
      ['mkfs.erofs', 'erofs-utils'],
    ],
    rows: (tmp, timeout) => mountRows(tree, tmp, timeout),
    notes: [
      'composefs: size = image + object store; build, mount and umount include node startup (cfs-writer, cfs-mount)',
      'squashfs: mksquashfs defaults (gzip); erofs: mkfs.erofs defaults (uncompressed)',
    ],
  });
}
