/**
 * Helpers shared by the benchmark sections (bench/dir.ts, bench/mount.ts): running and timing
 * commands, finding tools, environment settings, tables.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Package root: these files run as dist/bench/*.js. */
export const PKG_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const UPSTREAM_DIR = '/work/upstream/bin';
/** GNU time, for peak RSS (`-f %M`). */
const TIME_BIN = '/usr/bin/time';

export const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

/** The benchmark was interrupted (the child died of SIGINT/SIGTERM, e.g. Ctrl-C): stop everything. */
export class Interrupted extends Error {
  constructor(readonly exitCode: number) {
    super('interrupted');
  }
}

/** A non-negative integer from the environment; exits with status 2 on a bad value. */
export function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`bench: ${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** First `name` on PATH, then in the sbin directories (often not on a non-login PATH). */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

/** $ENV if set, else the first match on PATH, else UPSTREAM_DIR/name; undefined if none is usable. */
export function findUpstream(name: string, envVar: string): string | undefined {
  const fromEnv = process.env[envVar];
  if (fromEnv) {
    if (isExecutable(fromEnv)) return path.resolve(fromEnv);
    console.log(`${envVar}=${fromEnv} is not an executable file`);
    return undefined;
  }
  const onPath = which(name);
  if (onPath) return onPath;
  const local = path.join(UPSTREAM_DIR, name);
  return isExecutable(local) ? local : undefined;
}

let timeUsable: boolean | undefined;
/** Whether GNU time works here (`/usr/bin/time -f %M -o FILE true`). */
export function haveGnuTime(): boolean {
  if (timeUsable === undefined) {
    const r = spawnSync(TIME_BIN, ['-f', '%M', '--', 'true'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    timeUsable = r.status === 0 && /^\d+\s*$/.test(r.stderr ?? '');
  }
  return timeUsable;
}

export interface RunOptions {
  cwd?: string;
  /** Seconds; 0 or undefined = none. */
  timeout?: number;
  /** Measure peak RSS with GNU time, writing its report to this file (ignored without GNU time). */
  rssFile?: string;
  /** Capture stdout (else it goes to /dev/null). */
  captureStdout?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  /** Wall-clock seconds, including process startup. */
  seconds: number;
  /** Peak RSS in KiB, when measured. */
  rssKiB?: number;
  stdout: string;
}

function describe(file: string, args: string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/**
 * Run a command once; returns its wall time, or undefined on failure (reported on stderr with the
 * last lines of the command's stderr). Throws Interrupted when the child died of SIGINT/SIGTERM.
 */
export function runTimed(file: string, args: string[], opts: RunOptions = {}): RunResult | undefined {
  const timed = opts.rssFile !== undefined && haveGnuTime();
  // Under GNU time a timeout must kill the command itself, not time (which would orphan it):
  // coreutils timeout --foreground stays in our process group, so Ctrl-C still reaches the command.
  const limit = timed && opts.timeout ? ['timeout', '--foreground', '-s', 'KILL', String(opts.timeout)] : [];
  const [cmd, argv] = timed ? [TIME_BIN, ['-f', '%M', '-o', opts.rssFile!, '--', ...limit, file, ...args]] : [file, args];
  if (timed) fs.rmSync(opts.rssFile!, { force: true });
  const start = process.hrtime.bigint();
  const res = spawnSync(cmd, argv, {
    cwd: opts.cwd ?? PKG_ROOT,
    env: opts.env,
    stdio: ['ignore', opts.captureStdout ? 'pipe' : 'ignore', 'pipe'],
    maxBuffer: 64 << 20,
    timeout: opts.timeout && !timed ? opts.timeout * 1000 : undefined,
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // Node's own signal handlers cannot run during spawnSync; a signal that also hit the child shows here.
  if (res.error === undefined && (res.signal === 'SIGINT' || res.signal === 'SIGTERM')) {
    throw new Interrupted(SIGNAL_EXIT[res.signal]);
  }
  // GNU time ignores SIGINT itself and exits 128+N when its child died of signal N.
  if (timed && res.error === undefined && (res.status === 130 || res.status === 143)) throw new Interrupted(res.status);
  if (res.error === undefined && res.status === 0) {
    let rssKiB: number | undefined;
    if (timed) {
      const m = /(\d+)\s*$/.exec(fs.readFileSync(opts.rssFile!, 'utf8'));
      if (m) rssKiB = Number(m[1]);
    }
    return { seconds, rssKiB, stdout: res.stdout?.toString() ?? '' };
  }
  const timedOut =
    (res.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT' || (limit.length > 0 && res.status === 137);
  const how = timedOut
    ? `timed out after ${opts.timeout} s`
    : res.error
      ? res.error.message
      : res.signal
        ? `killed by ${res.signal}`
        : `exit status ${res.status}`;
  console.error(`FAILED (${how}): ${describe(file, args)}`);
  const stderr = res.stderr?.toString().trimEnd() ?? '';
  if (stderr) console.error(stderr.split('\n').slice(-20).map((l) => `  | ${l}`).join('\n'));
  return undefined;
}

/** Run `sh -c SCRIPT sh ARGS...` timed (for pipelines); arguments are passed as $1, $2, ... */
export function runShellTimed(script: string, args: string[], opts: RunOptions = {}): RunResult | undefined {
  return runTimed('/bin/sh', ['-c', script, 'sh', ...args], opts);
}

/** Run a command quietly; true on success. Never throws for a failed command. */
export function runQuiet(file: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return { ok: r.error === undefined && r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() || (r.error?.message ?? '') };
}

/**
 * Entries under `root` (root included) and the bytes of its regular files, not descending into
 * other file systems (as the directory writers do by default: a mount point inside the tree
 * stays an empty directory).
 */
export function treeStats(root: string): { entries: number; bytes: number } {
  const dev = fs.lstatSync(root).dev;
  let entries = 1;
  let bytes = 0;
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop()!;
    let ents: fs.Dirent[];
    try {
      ents = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    entries += ents.length;
    for (const e of ents) {
      const p = path.join(dir, e.name);
      if (e.isFile()) bytes += fs.lstatSync(p, { throwIfNoEntry: false })?.size ?? 0;
      else if (e.isDirectory() && fs.lstatSync(p, { throwIfNoEntry: false })?.dev === dev) stack.push(p);
    }
  }
  return { entries, bytes };
}

export function best(xs: number[]): number | undefined {
  return xs.length ? Math.min(...xs) : undefined;
}

export function median(xs: number[]): number | undefined {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** "load 1.23 0.98 0.50" (1, 5, 15 minutes), to judge how noisy the timings are. */
export function loadAvg(): string {
  return `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`;
}

export const secs = (x: number | undefined, digits = 3): string => (x === undefined ? '-' : x.toFixed(digits));

/** Left-aligned first column, right-aligned others. */
export function printTable(rows: string[][], indent = ''): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const fmt = (r: string[]): string =>
    indent + r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  console.log(fmt(rows[0]));
  console.log(indent + widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) console.log(fmt(r));
}
