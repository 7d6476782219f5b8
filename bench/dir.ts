/**
 * Directory-writer benchmark: `node bin/cfs-writer.js [--digest-store STORE] DIR OUT.img` against
 * upstream `mkcomposefs [--digest-store=STORE] DIR OUT.img` on the same real trees in the same run.
 *
 * Per tree, in these modes (runs of the two tools interleaved, each tool with its own store):
 *   empty  --digest-store into a fresh, empty store directory for every run
 *   warm   --digest-store into a store that already holds every object (the last `empty` run's
 *          store, else one filled by an untimed run)
 *   cached like warm, but ours re-snapshots into a cfs-cas store (`--snapshot --store`, as
 *          `npm start` does), whose digest cache lets it skip reading unchanged files; upstream
 *          as in warm
 *   cachefile  like warm, ours with `--digest-cache FILE` (the same cache, opt-in, for a plain
 *          store), filled by an untimed run first; upstream as in warm
 *   none   no store (digests only)
 * and prints best/median wall time (node startup included), entries/s, the ratio ours/upstream,
 * whether the two images are byte-identical (they should be) and the peak RSS of both writers
 * (GNU `/usr/bin/time -f %M`; "n/a" without it). The page cache is warmed first by reading the
 * whole tree once, so the first timed run is not the only one reading from disk, and `sync` runs
 * (untimed) before each timed run, so none pays for the write-back of an earlier one or of a
 * store fill (each tool's own syncs stay in its time).
 *
 * Environment:
 *   BENCH_DIR_TREES  comma-separated directories (default "/usr/share/doc,/usr")
 *   BENCH_DIR_MODES  comma-separated modes from empty,warm,cached,cachefile,none, or "auto" (default): trees of
 *                    fewer than BENCH_DIR_BIG entries get them all, bigger ones none only (a store
 *                    of /usr costs about 5 GB of disk per tool)
 *   BENCH_DIR_BIG    entry count from which a tree counts as big (default 50000): big trees get
 *                    one run per command, the others BENCH_RUNS (default 3)
 *   BENCH_TIMEOUT    per-invocation timeout in seconds (default 0: none)
 *   MKCOMPOSEFS      upstream mkcomposefs (default: on PATH, else /work/upstream/bin/mkcomposefs)
 *
 * Targets (issue): <= 0.80x mkcomposefs on /usr with a warm store, <= 1.00x with an empty one;
 * peak RSS < 300 MB on /usr.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isStoreRoot } from '../cas/store.js';
import {
  PKG_ROOT,
  best,
  envInt,
  findUpstream,
  haveGnuTime,
  loadAvg,
  median,
  printTable,
  runQuiet,
  runShellTimed,
  runTimed,
  secs,
  treeStats,
} from './util.js';

type Mode = 'empty' | 'warm' | 'cached' | 'cachefile' | 'none';
const MODES: readonly Mode[] = ['empty', 'warm', 'cached', 'cachefile', 'none'];
const TARGET: Record<Mode, number> = { empty: 1.0, warm: 0.8, cached: 0.8, cachefile: 0.8, none: 1.0 };
const RSS_TARGET_MB = 300;

interface Tool {
  label: string;
  key: 'ours' | 'up';
  /** `cache`: a --digest-cache file (ours only). */
  command(tree: string, out: string, store: string | undefined, cache?: string): { file: string; args: string[] };
}

interface Result {
  seconds: number[];
  rssKiB: number[];
  failed: boolean;
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Sorted "relative-path size" lines of every file in a store directory. */
function storeListing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else out.push(`${r} ${fs.lstatSync(path.join(d, e.name)).size}`);
    }
  };
  walk(dir, '');
  return out.sort();
}

function parseModes(raw: string | undefined): Mode[] | 'auto' {
  if (raw === undefined || raw === '' || raw === 'auto') return 'auto';
  const modes = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of modes) {
    if (!(MODES as readonly string[]).includes(m)) {
      console.error(`bench: BENCH_DIR_MODES: unknown mode ${JSON.stringify(m)} (use empty, warm, cached, cachefile, none or auto)`);
      process.exit(2);
    }
  }
  // keep the canonical order: `warm` reuses the store of the last `empty` run
  return MODES.filter((m) => modes.includes(m));
}

const mb = (kib: number | undefined): string => (kib === undefined ? 'n/a' : (kib / 1024).toFixed(0));

/** Run the directory-writer benchmark with scratch space in `tmp`; returns 1 if an invocation failed. */
export function runDirBench(tmp: string): number {
  const trees = (process.env.BENCH_DIR_TREES ?? '/usr/share/doc,/usr').split(',').map((s) => s.trim()).filter(Boolean);
  const modeSetting = parseModes(process.env.BENCH_DIR_MODES);
  const big = envInt('BENCH_DIR_BIG', 50_000, 1);
  const smallRuns = envInt('BENCH_RUNS', 3, 1);
  const timeout = envInt('BENCH_TIMEOUT', 0, 0);

  console.log('\n== directory writer: cfs-writer DIR vs mkcomposefs DIR ==');
  const mkcomposefs = findUpstream('mkcomposefs', 'MKCOMPOSEFS');
  if (!mkcomposefs) console.log('upstream mkcomposefs not found (set MKCOMPOSEFS): timing cfs-writer alone');
  const rssNote = haveGnuTime() ? 'peak RSS by /usr/bin/time -f %M' : 'peak RSS n/a (no GNU time: apt-get install time)';
  console.log(`upstream: ${mkcomposefs ?? '-'}; node ${process.version}, ${os.cpus().length} CPUs, ${loadAvg()}; ${rssNote}`);

  const node = process.execPath;
  const writerJs = path.join(PKG_ROOT, 'bin/cfs-writer.js');
  const tools: Tool[] = [
    {
      label: 'cfs-writer',
      key: 'ours',
      command: (tree, out, store, cache) => ({
        file: node,
        // a cfs-cas store root (mode cached) is re-snapshotted, as `npm start` does
        args: [
          writerJs,
          '--no-progress',
          ...(!store ? [] : isStoreRoot(store) ? ['--snapshot', '--store', store, '--name', 'bench'] : ['--digest-store', store]),
          ...(cache ? ['--digest-cache', cache] : []),
          tree,
          out,
        ],
      }),
    },
  ];
  if (mkcomposefs) {
    tools.push({
      label: 'mkcomposefs',
      key: 'up',
      command: (tree, out, store) => ({ file: mkcomposefs, args: [...(store ? [`--digest-store=${store}`] : []), tree, out] }),
    });
  }

  const rows: string[][] = [
    ['tree', 'mode', 'entries', 'runs', 'ours best (s)', 'median (s)', 'entries/s', 'upstream (s)', 'ratio', 'target', 'identical', 'RSS ours (MB)', 'RSS up (MB)'],
  ];
  const notes: string[] = [];
  let failed = false;
  const work = path.join(tmp, 'dir-bench');

  for (const tree of trees) {
    if (!fs.statSync(tree, { throwIfNoEntry: false })?.isDirectory()) {
      console.log(`${tree}: not a directory, skipped`);
      continue;
    }
    fs.rmSync(work, { recursive: true, force: true });
    fs.mkdirSync(work, { recursive: true });
    try {
      const t0 = process.hrtime.bigint();
      const { entries, bytes } = treeStats(tree);
      const countSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const modes = modeSetting === 'auto' ? (entries < big ? [...MODES] : (['none'] as Mode[])) : modeSetting;
      const runs = entries < big ? smallRuns : 1;
      // Warm the page cache: both writers read every file (digests), so without this the first
      // timed run alone pays for the disk.
      const warm = runShellTimed('find "$1" -xdev -type f -print0 | xargs -0r cat > /dev/null 2>&1; true', [tree]);
      console.log(
        `${tree}: ${entries.toLocaleString('en-US')} entries, ${(bytes / 1e9).toFixed(2)} GB in files ` +
          `(counted in ${countSeconds.toFixed(1)} s, page cache warmed in ${secs(warm?.seconds, 1)} s); ` +
          `modes ${modes.join(',')}, ${runs} run(s) per command`,
      );

      /** The store each tool filled in its last `empty` run, for `warm`. */
      const warmStore = new Map<Tool['key'], string>();
      /** Our cfs-cas store, for `cached`. */
      let casRoot: string | undefined;
      for (const mode of modes) {
        const results = new Map<Tool['key'], Result>(tools.map((t) => [t.key, { seconds: [], rssKiB: [], failed: false }]));
        const image = (t: Tool): string => path.join(work, `${t.key}-${mode}.img`);

        if (mode === 'cached') {
          // our own store (objects/ under a marked root): filled once, untimed, which also fills the cache
          const root = path.join(work, 'ours-cas');
          const init = runTimed(node, [path.join(PKG_ROOT, 'bin/cfs-cas.js'), '--store', root, 'init']);
          const c = tools[0].command(tree, image(tools[0]), root);
          if (!init || !runTimed(c.file, c.args, { timeout })) results.get('ours')!.failed = true;
          else casRoot = root;
        }
        const cacheFile = mode === 'cachefile' ? path.join(work, 'ours.digest-cache') : undefined;
        if (mode === 'warm' || mode === 'cached' || mode === 'cachefile') {
          for (const t of tools) {
            if (warmStore.has(t.key) || (mode === 'cached' && t.key === 'ours')) continue;
            const store = path.join(work, `${t.key}-store-warm`);
            fs.mkdirSync(store);
            const c = t.command(tree, image(t), store);
            if (!runTimed(c.file, c.args, { timeout })) results.get(t.key)!.failed = true;
            else warmStore.set(t.key, store);
          }
        }
        if (cacheFile) {
          // fill the cache, untimed (the store is warm already)
          const c = tools[0].command(tree, image(tools[0]), warmStore.get('ours'), cacheFile);
          if (!warmStore.has('ours') || !runTimed(c.file, c.args, { timeout })) results.get('ours')!.failed = true;
        }

        for (let i = 0; i < runs; i++) {
          for (const t of tools) {
            const r = results.get(t.key)!;
            if (r.failed) continue;
            let store: string | undefined;
            if (mode === 'empty') {
              store = path.join(work, `${t.key}-store-${i}`);
              fs.mkdirSync(store);
            } else if (mode === 'warm' || mode === 'cached' || mode === 'cachefile') {
              store = mode === 'cached' && t.key === 'ours' ? casRoot : warmStore.get(t.key);
            }
            fs.rmSync(image(t), { force: true });
            // no run pays for writing back what an earlier one (or a store fill) wrote
            runQuiet('sync', []);
            const c = t.command(tree, image(t), store, cacheFile);
            const res = runTimed(c.file, c.args, { timeout, rssFile: path.join(work, 'rss.txt') });
            if (!res) {
              r.failed = true;
              continue;
            }
            r.seconds.push(res.seconds);
            if (res.rssKiB !== undefined) r.rssKiB.push(res.rssKiB);
            if (mode === 'empty') {
              const previous = warmStore.get(t.key);
              if (previous) fs.rmSync(previous, { recursive: true, force: true });
              warmStore.set(t.key, store!);
            }
          }
        }

        const ours = results.get('ours')!;
        const up = results.get('up');
        const b = ours.failed ? undefined : best(ours.seconds);
        const ub = up && !up.failed ? best(up.seconds) : undefined;
        const ratio = b !== undefined && ub !== undefined ? b / ub : undefined;
        let identical = '-';
        if (up && !ours.failed && !up.failed) {
          const a = sha256(image(tools[0]));
          const u = sha256(image(tools[1]));
          identical = a === u ? 'yes' : 'NO';
          if (a !== u) notes.push(`${tree} ${mode}: images differ (ours ${a}, upstream ${u})`);
          if (mode === 'empty' || mode === 'warm') {
            const so = warmStore.get('ours');
            const su = warmStore.get('up');
            if (so && su) {
              const lo = storeListing(so);
              const lu = storeListing(su);
              const same = lo.length === lu.length && lo.every((l, k) => l === lu[k]);
              if (!same) notes.push(`${tree} ${mode}: stores differ (ours ${lo.length} objects, upstream ${lu.length})`);
              else if (mode === 'empty') notes.push(`${tree}: both stores hold the same ${lo.length} objects`);
            }
          }
        }
        if (ours.failed || up?.failed) failed = true;
        const maxRss = (r: Result | undefined): number | undefined => (r && r.rssKiB.length ? Math.max(...r.rssKiB) : undefined);
        rows.push([
          tree,
          mode,
          String(entries),
          String(runs),
          ours.failed ? 'FAILED' : secs(b),
          ours.failed ? '-' : secs(median(ours.seconds)),
          b === undefined ? '-' : Math.round(entries / b).toLocaleString('en-US'),
          up ? (up.failed ? 'FAILED' : secs(ub)) : '-',
          ratio === undefined ? '-' : `${ratio.toFixed(2)}x`,
          ratio === undefined ? '-' : `${ratio <= TARGET[mode] ? 'ok' : 'MISS'} <=${TARGET[mode].toFixed(2)}`,
          identical,
          mb(maxRss(ours)),
          mb(maxRss(up)),
        ]);
        const rssOurs = maxRss(ours);
        if (entries >= big && rssOurs !== undefined) {
          notes.push(`${tree} ${mode}: peak RSS of cfs-writer ${mb(rssOurs)} MB (target < ${RSS_TARGET_MB} MB: ${rssOurs / 1024 < RSS_TARGET_MB ? 'ok' : 'MISS'})`);
        }
        if (up && runs > 1 && !up.failed) {
          // an empty store's runs are mostly disk writes, whose time varies run to run by 2x here
          const mr = ours.failed ? '' : ` (median ratio ${(median(ours.seconds)! / median(up.seconds)!).toFixed(2)}x)`;
          notes.push(`${tree} ${mode}: upstream median ${secs(median(up.seconds))} s${mr}`);
        }
      }
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }

  if (rows.length > 1) {
    console.log('');
    printTable(rows);
    console.log('ratio = ours / upstream, best wall times (node startup included); identical = images byte-identical');
    console.log(`finished at ${loadAvg()}`);
    console.log('targets: warm store <= 0.80x, empty store <= 1.00x (issue: on /usr), no store <= 1.00x; RSS < 300 MB on /usr');
    for (const n of notes) console.log(`  ${n}`);
  }
  return failed ? 1 : 0;
}
