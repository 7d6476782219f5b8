/** Shared by the cfs-writer-json tests: fixture paths and a parallel bin runner. */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { PROJECT_ROOT, SHARED } from '../support/vectors.js';

export const TOC_FIXTURES = path.join(SHARED, 'fixtures', 'toc');
export const BAD = path.join(TOC_FIXTURES, 'bad');

export interface Result {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Like test/cli/run.ts runBin, but async so several runs can go in parallel. */
export function runBinAsync(bin: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', `${bin}.js`), ...args], {
      env: { ...process.env, CFS_DEBUG: undefined, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }));
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}
