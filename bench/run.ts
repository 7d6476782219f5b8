/**
 * Benchmark: cfs-writer / cfs-dump against upstream mkcomposefs / composefs-info.
 *
 *   npm run bench
 *
 * Generates a deterministic rootfs-like composefs-dump(5) file in a fresh temp dir, then times
 * (wall clock, best and median of BENCH_RUNS runs, default 3; node startup included):
 *   node bin/cfs-writer.js --from-file DUMP ours.img      mkcomposefs --from-file DUMP upstream.img
 *   node bin/cfs-dump.js dump ours.img  (stdout ignored)  composefs-info dump upstream.img
 * and prints a table with the ratio ours/upstream (target <= 1.0x) and whether the two images are
 * byte-identical (informative only). Runs of the four commands are interleaved, so drift in machine
 * load affects both sides alike.
 *
 * Environment:
 *   BENCH_ENTRIES   number of dump entries, root included (default 200000)
 *   BENCH_RUNS      runs per command (default 3)
 *   BENCH_SEED      generator seed (default fixed)
 *   BENCH_TIMEOUT   per-invocation timeout in seconds, counted as a failure (default 0: none)
 *   MKCOMPOSEFS     upstream mkcomposefs     (default: on PATH, else /work/upstream/bin/mkcomposefs)
 *   COMPOSEFS_INFO  upstream composefs-info  (default: on PATH, else /work/upstream/bin/composefs-info)
 *
 * Then runs the cfs-cas import benchmark (bench/cas.ts; BENCH_CAS_* settings there), the
 * directory-writer benchmark against mkcomposefs on real trees (bench/dir.ts; BENCH_DIR_*) and the
 * mount benchmark, composefs vs squashfs vs erofs (bench/mount.ts, needs root; BENCH_MOUNT_TREE).
 *
 * The pack section times cfs-pack against mksquashfs -comp zstd, mkfs.erofs and cp -a into ext4
 * (bench/pack.ts, needs root; BENCH_PACK_TREE).
 * The ostree section (bench/ostree.ts; BENCH_OSTREE_TREE) converts a commit of /usr/share in a
 * bare-user repo next to `ostree checkout` of it.
 * The fuse section: cfs-mount --fuse vs squashfuse vs the kernel mount (bench/fuse.ts, needs
 * root; BENCH_FUSE_TREE).
 *
 *   BENCH_ONLY      comma-separated sections to run: dump, dir, mount, cas, json, pack, ostree, oci, fuse (default: all)
 *   BENCH_OCI_MB, BENCH_OCI_LAYERS, BENCH_OCI_FILES   the registry pull benchmark (bench/oci.ts)
 *   BENCH_JSON_ENTRIES, BENCH_JSON_MB   size of the cfs-writer-json TOC and blob (200000, 64)
 *
 * Never fails on slowness; exits non-zero only if a tool invocation fails (or on bad settings).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCasBench } from './cas.js';
import { runDirBench } from './dir.js';
import { generateDump } from './gen-dump.js';
import { runFuseBench } from './fuse.js';
import { runMountBench } from './mount.js';
import { runPackBench } from './pack.js';
import { runOstreeBench } from './ostree.js';
import { runOciBench } from './oci.js';
import { Interrupted, SIGNAL_EXIT, envInt } from './util.js';

/** Package root: this file runs as dist/bench/run.js. */
const PKG_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const UPSTREAM_DIR = '/work/upstream/bin';

interface Command {
  label: string;
  file: string;
  args: string[];
}

interface Timing {
  command: Command;
  /** Wall-clock seconds of each successful run. */
  seconds: number[];
  failed: boolean;
}

interface Settings {
  entries: number;
  runs: number;
  seed: number;
  /** Per-invocation timeout in seconds; 0 = none. */
  timeout: number;
}

function readSettings(): Settings {
  return {
    entries: envInt('BENCH_ENTRIES', 200_000, 1),
    runs: envInt('BENCH_RUNS', 3, 1),
    seed: envInt('BENCH_SEED', 0x5eed1234, 0),
    timeout: envInt('BENCH_TIMEOUT', 0, 0),
  };
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** $ENV if set, else the first match on PATH, else UPSTREAM_DIR/name; undefined if none is usable. */
function findUpstream(name: string, envVar: string): string | undefined {
  const fromEnv = process.env[envVar];
  if (fromEnv) {
    if (isExecutable(fromEnv)) return path.resolve(fromEnv);
    console.log(`${envVar}=${fromEnv} is not an executable file`);
    return undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  const local = path.join(UPSTREAM_DIR, name);
  return isExecutable(local) ? local : undefined;
}

/** Run a command once with stdout discarded; returns wall seconds, or undefined on failure. */
function runOnce(cmd: Command, timeoutSeconds: number): number | undefined {
  const start = process.hrtime.bigint();
  const res = spawnSync(cmd.file, cmd.args, {
    cwd: PKG_ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 16 << 20,
    timeout: timeoutSeconds > 0 ? timeoutSeconds * 1000 : undefined,
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (res.error === undefined && res.status === 0) return seconds;
  // Node's own signal handlers cannot run during spawnSync; a signal that also hit the child shows here.
  if (res.error === undefined && (res.signal === 'SIGINT' || res.signal === 'SIGTERM')) {
    throw new Interrupted(SIGNAL_EXIT[res.signal]);
  }

  const timedOut = (res.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  const how = timedOut
    ? `timed out, BENCH_TIMEOUT=${timeoutSeconds}`
    : res.error
      ? res.error.message
      : res.signal
        ? `killed by ${res.signal}`
        : `exit status ${res.status}`;
  console.error(`FAILED (${how}): ${[cmd.file, ...cmd.args].join(' ')}`);
  const stderr = res.stderr?.toString().trimEnd() ?? '';
  if (stderr) console.error(stderr.split('\n').slice(-20).map((l) => `  | ${l}`).join('\n'));
  return undefined;
}

function best(t: Timing): number | undefined {
  return t.seconds.length ? Math.min(...t.seconds) : undefined;
}

function median(t: Timing): number | undefined {
  const xs = [...t.seconds].sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const mid = xs.length >> 1;
  return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const fmt = (r: string[]): string =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  console.log(fmt(rows[0]));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) console.log(fmt(r));
}

function main({ entries, runs, seed, timeout }: Settings, tmp: string): number {
  const dump = path.join(tmp, 'bench.dump');
  const oursImg = path.join(tmp, 'ours.img');
  const upstreamImg = path.join(tmp, 'upstream.img');

  const genStart = process.hrtime.bigint();
  const stats = generateDump(dump, { entries, seed });
  const genSeconds = Number(process.hrtime.bigint() - genStart) / 1e9;
  console.log(
    `dump: ${stats.entries} entries (${stats.dirs} dirs, ${stats.externalFiles} external files, ` +
      `${stats.inlineFiles} inline files, ${stats.symlinks} symlinks), ` +
      `${(stats.bytes / 1e6).toFixed(1)} MB, generated in ${genSeconds.toFixed(2)} s`,
  );

  const node = process.execPath;
  const writer: Timing = {
    command: { label: 'cfs-writer', file: node, args: [path.join(PKG_ROOT, 'bin/cfs-writer.js'), '--from-file', dump, oursImg] },
    seconds: [],
    failed: false,
  };
  const dumper: Timing = {
    command: { label: 'cfs-dump', file: node, args: [path.join(PKG_ROOT, 'bin/cfs-dump.js'), 'dump', oursImg] },
    seconds: [],
    failed: false,
  };

  const mkcomposefs = findUpstream('mkcomposefs', 'MKCOMPOSEFS');
  const composefsInfo = findUpstream('composefs-info', 'COMPOSEFS_INFO');
  if (!mkcomposefs) console.log('upstream mkcomposefs not found: set MKCOMPOSEFS');
  if (!composefsInfo) console.log('upstream composefs-info not found: set COMPOSEFS_INFO');
  const upWriter: Timing | undefined = mkcomposefs
    ? { command: { label: 'mkcomposefs', file: mkcomposefs, args: ['--from-file', dump, upstreamImg] }, seconds: [], failed: false }
    : undefined;
  const upDumper: Timing | undefined =
    mkcomposefs && composefsInfo
      ? { command: { label: 'composefs-info', file: composefsInfo, args: ['dump', upstreamImg] }, seconds: [], failed: false }
      : undefined;
  console.log(`upstream: ${mkcomposefs ?? '-'}, ${composefsInfo ?? '-'}`);
  console.log(`node ${process.version}, ${os.cpus().length} CPUs, runs per command: ${runs}\n`);

  // Each dumper reads the image its writer produced, so it only runs while that writer succeeds.
  const pairs: [Timing | undefined, Timing | undefined][] = [
    [writer, dumper],
    [upWriter, upDumper],
  ];
  for (let i = 0; i < runs; i++) {
    for (const [w, d] of pairs) {
      for (const t of [w, d]) {
        if (!t || t.failed || (t === d && w?.failed)) continue;
        const s = runOnce(t.command, timeout);
        if (s === undefined) t.failed = true;
        else t.seconds.push(s);
      }
    }
  }

  const secs = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(3));
  const rows: string[][] = [['tool', 'entries', 'best (s)', 'median (s)', 'entries/s', 'upstream (s)', 'ratio']];
  for (const [ours, up] of [
    [writer, upWriter],
    [dumper, upDumper],
  ] as const) {
    const b = ours.failed ? undefined : best(ours);
    const ub = up && !up.failed ? best(up) : undefined;
    rows.push([
      ours.command.label + (up ? ` vs ${up.command.label}` : ''),
      String(entries),
      ours.failed ? 'FAILED' : secs(b),
      ours.failed ? '-' : secs(median(ours)),
      b === undefined ? '-' : Math.round(entries / b).toLocaleString('en-US'),
      up?.failed ? 'FAILED' : secs(ub),
      b !== undefined && ub !== undefined ? `${(b / ub).toFixed(2)}x` : '-',
    ]);
  }
  printTable(rows);
  console.log('ratio = ours / upstream, best wall times (target <= 1.00x)');
  if (upWriter) {
    const med = (t: Timing | undefined): string => (t && !t.failed ? secs(median(t)) : '-');
    console.log(`upstream median (s): mkcomposefs ${med(upWriter)}, composefs-info ${med(upDumper)}`);
  }

  if (upWriter && !writer.failed && !upWriter.failed) {
    const a = sha256(oursImg);
    const b = sha256(upstreamImg);
    console.log(
      a === b
        ? `images byte-identical: yes (sha256 ${a})`
        : `images byte-identical: no (ours ${a}, upstream ${b})`,
    );
  }

  return [writer, dumper, upWriter, upDumper].some((t) => t?.failed) ? 1 : 0;
}

const SECTIONS = ['dump', 'dir', 'mount', 'cas', 'json', 'pack', 'ostree', 'oci', 'fuse'] as const;
type Section = (typeof SECTIONS)[number];

/** BENCH_ONLY: the sections to run (default all). */
function readSections(): Set<Section> {
  const raw = process.env.BENCH_ONLY?.trim();
  if (!raw) return new Set(SECTIONS);
  const chosen = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of chosen) {
    if (!(SECTIONS as readonly string[]).includes(s)) {
      console.error(`bench: BENCH_ONLY must list sections from ${SECTIONS.join('|')}, got ${JSON.stringify(raw)}`);
      process.exit(2);
    }
  }
  return new Set(chosen as Section[]);
}

const sections = readSections();
const settings = readSettings();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-bench-'));
const cleanup = (): void => fs.rmSync(tmp, { recursive: true, force: true });
for (const [sig, code] of Object.entries(SIGNAL_EXIT)) {
  // Only runs between child processes (or after main), when the signal reached node alone.
  process.on(sig, () => {
    cleanup();
    process.exit(code);
  });
}
try {
  if (sections.has('dump')) process.exitCode = main(settings, tmp);
  if (sections.has('cas') && (await runCasBench(tmp)) !== 0) process.exitCode = 1;
  if (sections.has('dir') && runDirBench(tmp) !== 0) process.exitCode = 1;
  if (sections.has('mount') && runMountBench() !== 0) process.exitCode = 1;
  if (sections.has('pack') && runPackBench() !== 0) process.exitCode = 1;
  if (sections.has('oci') && (await runOciBench(tmp)) !== 0) process.exitCode = 1;
  if (sections.has('fuse') && runFuseBench() !== 0) process.exitCode = 1;
  if (sections.has('json')) {
    // cfs-writer-json's own benchmark: TOC entries/s and blob import MB/s next to gzip -dc
    const args = [String(envInt('BENCH_JSON_ENTRIES', 200_000, 1)), String(envInt('BENCH_JSON_MB', 64, 1))];
    const r = spawnSync(process.execPath, [path.join(PKG_ROOT, 'dist/writer-json/bench.js'), ...args], { stdio: 'inherit' });
    if (r.status !== 0) process.exitCode = 1;
  }
  if (sections.has('ostree') && runOstreeBench(tmp) !== 0) process.exitCode = 1;
} catch (e) {
  if (!(e instanceof Interrupted)) throw e;
  console.error('bench: interrupted');
  process.exitCode = e.exitCode;
} finally {
  cleanup();
}
