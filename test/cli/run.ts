import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { PROJECT_ROOT } from '../support/vectors.js';

export interface Result {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Run one of our bins (built by `npm test`'s tsc step) the way a user does. */
export function runBin(bin: string, args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Result {
  const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'bin', `${bin}.js`), ...args], {
    input: opts.input,
    env: { ...process.env, CFS_PARSE_STRICT: undefined, CFS_DEBUG: undefined, ...opts.env },
    cwd: opts.cwd,
    maxBuffer: 1 << 30,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}
