/**
 * cfs-ostree-convert benchmark: a large tree committed into a bare-user repo, then per run
 * (interleaved, same commit, page cache warm after the commit):
 *   node bin/cfs-ostree-convert.js --repo R --base-objects COMMIT OUT.img
 *   node bin/cfs-ostree-convert.js --repo R --store S COMMIT OUT.img    (fresh store each run)
 *   ostree checkout --repo R COMMIT DIR                                 (DIR removed after each run)
 * and prints best/median wall times with the ratio to the checkout (target < 1.00x).
 *
 * Environment:
 *   BENCH_OSTREE_TREE  the tree to commit (default /usr/share)
 *   BENCH_RUNS         runs per command (default 3)
 *   BENCH_TIMEOUT      per-invocation timeout in seconds (default 0: none)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PKG_ROOT, best, envInt, loadAvg, median, printTable, runQuiet, runTimed, secs, treeStats, which } from './util.js';

export function runOstreeBench(tmp: string): number {
  console.log('\n== cfs-ostree-convert vs ostree checkout ==');
  const ostree = which('ostree');
  if (!ostree) {
    console.log('skipped: ostree is not installed');
    return 0;
  }
  const tree = process.env.BENCH_OSTREE_TREE ?? '/usr/share';
  const runs = envInt('BENCH_RUNS', 3, 1);
  const timeout = envInt('BENCH_TIMEOUT', 0, 0);
  const dir = fs.mkdtempSync(path.join(tmp, 'ostree-'));
  const repo = path.join(dir, 'repo');
  try {
    const stats = treeStats(tree);
    if (!runQuiet(ostree, ['init', `--repo=${repo}`, '--mode=bare-user']).ok) {
      console.error('FAILED: ostree init');
      return 1;
    }
    const commit = runTimed(ostree, ['commit', `--repo=${repo}`, '--branch=bench', '--fsync=false', '--timestamp=@0', '--subject=bench', `--tree=dir=${tree}`], { captureStdout: true, timeout });
    if (!commit) return 1;
    const checksum = commit.stdout.trim();
    console.log(`${tree}: ${stats.entries} entries, ${(stats.bytes / 1e6).toFixed(0)} MB, committed into a bare-user repo in ${commit.seconds.toFixed(1)} s (${loadAvg()})`);

    const node = process.execPath;
    const bin = path.join(PKG_ROOT, 'bin', 'cfs-ostree-convert.js');
    const img = path.join(dir, 'out.img');
    const store = path.join(dir, 'store');
    const checkout = path.join(dir, 'checkout');
    const commands = [
      { label: 'cfs-ostree-convert --base-objects', file: node, args: [bin, '--repo', repo, '--base-objects', checksum, img], after: () => {} },
      { label: 'cfs-ostree-convert --store (empty)', file: node, args: [bin, '--repo', repo, '--store', store, checksum, img], after: () => fs.rmSync(store, { recursive: true, force: true }) },
      { label: 'ostree checkout', file: ostree, args: ['checkout', `--repo=${repo}`, checksum, checkout], after: () => fs.rmSync(checkout, { recursive: true, force: true }) },
    ];
    const times: number[][] = commands.map(() => []);
    let failed = false;
    for (let i = 0; i < runs; i++) {
      commands.forEach((c, k) => {
        const r = runTimed(c.file, c.args, { timeout });
        c.after();
        if (r) times[k].push(r.seconds);
        else failed = true;
      });
    }
    const ref = best(times[2]);
    const rows = [['command', 'best (s)', 'median (s)', 'entries/s', 'vs checkout']];
    commands.forEach((c, k) => {
      const b = best(times[k]);
      rows.push([c.label, secs(b), secs(median(times[k])), b ? Math.round(stats.entries / b).toLocaleString('en-US') : '-', b && ref ? `${(b / ref).toFixed(2)}x` : '-']);
    });
    printTable(rows);
    console.log(`ratio = ours / ostree checkout, best wall times (target < 1.00x); ${runs} run(s), ${loadAvg()}`);
    return failed ? 1 : 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
