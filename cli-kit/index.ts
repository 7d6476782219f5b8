/** What every command-line tool shares: exit codes, error reporting, input, atomic output. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { CfsError, ErrorCode, isCfsError } from '../format/errors.js';
import { writeAtomic } from '../cas/atomic.js';

export const ExitCode = {
  Ok: 0,
  /** Failure or bad input; no output written. */
  Failure: 1,
  /** Bad command line. */
  Usage: 2,
} as const;

export class UsageError extends Error {}

const debug = (): boolean => !!process.env.CFS_DEBUG;

/** Run a CLI main: one line on stderr for expected errors, a stack only with CFS_DEBUG=1. */
export async function runMain(tool: string, main: () => Promise<number | void>): Promise<void> {
  // A closed pipe (`cfs-dump img | head`) ends the output quietly, as for C tools.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(ExitCode.Ok);
    process.stderr.write(`${tool}: writing output: ${e.message}\n`);
    process.exit(ExitCode.Failure);
  });
  let code: number;
  try {
    code = (await main()) ?? ExitCode.Ok;
  } catch (e) {
    code = reportError(tool, e);
  }
  process.exitCode = code;
}

export function reportError(tool: string, e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`${tool}: ${e.message}\nTry '${tool} --help'.\n`);
    return ExitCode.Usage;
  }
  if (isCfsError(e)) {
    process.stderr.write(`${tool}: ${e.describe()}\n`);
    if (debug()) process.stderr.write(`${e.stack}\n`);
    return e.code === ErrorCode.Usage ? ExitCode.Usage : ExitCode.Failure;
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.syscall) {
    const where = err.path ? `${err.path}: ` : '';
    process.stderr.write(`${tool}: ${where}${describeErrno(err)}\n`);
    if (debug()) process.stderr.write(`${err.stack}\n`);
    return ExitCode.Failure;
  }
  process.stderr.write(`${tool}: internal error: ${(err as Error)?.stack ?? String(e)}\n`);
  return ExitCode.Failure;
}

function describeErrno(err: NodeJS.ErrnoException): string {
  const msg = err.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  return `${msg} (${err.code})`;
}

/**
 * Read a whole input file, or stdin for `-`, refusing files larger than `limit`. `shared`: into
 * a SharedArrayBuffer, for worker threads to read too.
 */
export async function readInput(file: string, limit: number, shared = false): Promise<Buffer> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of process.stdin) {
      total += (chunk as Buffer).length;
      if (total > limit) throw new CfsError(ErrorCode.TooLarge, `input larger than ${limit} bytes`, { input: 'stdin' });
      chunks.push(chunk as Buffer);
    }
    if (!shared) return Buffer.concat(chunks);
    const out = Buffer.from(new SharedArrayBuffer(total));
    let at = 0;
    for (const c of chunks) at += c.copy(out, at);
    return out;
  }
  const st = fs.statSync(file);
  if (st.isDirectory()) throw new CfsError(ErrorCode.Io, 'is a directory', { input: file });
  if (st.size > limit) throw new CfsError(ErrorCode.TooLarge, `file of ${st.size} bytes exceeds the ${limit}-byte limit`, { input: file });
  if (!shared) return fs.readFileSync(file);
  const fd = fs.openSync(file, 'r');
  try {
    // the size at stat time: a file that grows meanwhile is read that far
    const out = Buffer.from(new SharedArrayBuffer(st.size));
    let at = 0;
    while (at < out.length) {
      const n = fs.readSync(fd, out, at, out.length - at, null);
      if (n === 0) break;
      at += n;
    }
    return out.subarray(0, at);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Write a tool's output file atomically: a temp file in the same directory, renamed into place.
 * On any failure the temp file is removed and `dest` is untouched. Not fsynced, as cp and
 * mkcomposefs do not: store writes are the ones that must survive a crash.
 */
export function writeFileAtomic(dest: string, data: Uint8Array, mode = 0o644): void {
  writeAtomic(path.resolve(dest), data, mode, false);
}

/** Write binary output to stdout, refusing a terminal. */
export async function writeStdout(data: Uint8Array, what = 'image'): Promise<void> {
  if (process.stdout.isTTY) throw new UsageError(`refusing to write the ${what} to a terminal: give an output file or redirect stdout`);
  await writeAll(process.stdout, data);
}

export function writeAll(stream: NodeJS.WritableStream, data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    stream.once('error', onError);
    stream.write(data, (e) => {
      stream.removeListener('error', onError);
      if (e) reject(e);
      else resolve();
    });
  });
}

/** Buffered output of latin1 byte strings to stdout, written in chunks of 64 KiB or more. */
export class TextOut {
  private pending = '';
  constructor(private readonly stream: NodeJS.WritableStream = process.stdout) {}
  write = (s: string): void => {
    this.pending += s;
    if (this.pending.length >= 1 << 16) {
      this.stream.write(this.pending, 'latin1');
      this.pending = '';
    }
  };
  async flush(): Promise<void> {
    const rest = this.pending;
    this.pending = '';
    await writeAll(this.stream, Buffer.from(rest, 'latin1'));
  }
}

/**
 * Run a commander program (built with exitOverride) on argv. Returns the exit code when
 * commander ended it (help: 0, bad command line: 2), else null; other errors propagate.
 */
export async function parseCommand(program: Command, argv: string[]): Promise<number | null> {
  try {
    await program.parseAsync(argv, { from: 'user' });
    return null;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.help' || code === 'commander.version') return ExitCode.Ok;
    if (typeof code === 'string' && code.startsWith('commander.')) return ExitCode.Usage;
    throw e;
  }
}

/**
 * mkcomposefs's --min-version/--max-version: defaults 0 and 1, but once either is given the
 * other defaults to 0.
 */
export function versionOptions(opts: { minVersion?: string; maxVersion?: string }): { minVersion: number; maxVersion: number } {
  if (opts.minVersion === undefined && opts.maxVersion === undefined) return { minVersion: 0, maxVersion: 1 };
  return {
    minVersion: opts.minVersion !== undefined ? intOption('--min-version', opts.minVersion, 0, 1) : 0,
    maxVersion: opts.maxVersion !== undefined ? intOption('--max-version', opts.maxVersion, 0, 1) : 0,
  };
}

/** Parse a non-negative integer option. */
export function intOption(name: string, value: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`invalid ${name}: ${JSON.stringify(value)} (expected a number)`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`invalid ${name}: ${n} (expected ${min}..${max})`);
  return n;
}

const MiB = 1024 * 1024;
export const fmtBytes = (n: number): string => (n >= 10 * MiB * 1024 ? `${(n / MiB / 1024).toFixed(1)} GiB` : `${(n / MiB).toFixed(1)} MiB`);

/** A progress line on stderr when it is a terminal. */
export class Progress {
  private readonly on: boolean;
  private last = 0;
  private readonly start = Date.now();
  constructor(enabled: boolean) {
    this.on = enabled && process.stderr.isTTY === true;
  }
  update(text: () => string): void {
    if (!this.on) return;
    const now = Date.now();
    if (now - this.last < 200) return;
    this.show(text());
  }
  /** A new phase: shown at once (not throttled). */
  show(text: string): void {
    if (!this.on) return;
    this.last = Date.now();
    process.stderr.write(`\r\x1b[K${text}`);
  }
  rate(bytes: number): string {
    const s = (Date.now() - this.start) / 1000;
    return s > 0 ? `${fmtBytes(bytes / s)}/s` : '';
  }
  done(): void {
    if (this.on) process.stderr.write('\r\x1b[K');
  }
}
