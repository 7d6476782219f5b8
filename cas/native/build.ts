/**
 * Compiles sha256-blocks.c into dist/native/sha256-blocks.so with the system C compiler ($CC,
 * else cc), when the library is missing or older than its source. Without a compiler it says so
 * and exits 0: hashing then runs on OpenSSL, as fast as one block at a time goes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../../../cas/native/sha256-blocks.c', import.meta.url));
const target = fileURLToPath(new URL('../../native/sha256-blocks.so', import.meta.url));

const mtime = (f: string): number => fs.statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? -1;

if (mtime(target) < mtime(source)) {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = `${target}.${process.pid}.tmp`;
  const cc = process.env.CC || 'cc';
  const r = spawnSync(cc, ['-O2', '-shared', '-fPIC', '-Wall', '-o', tmp, source], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status === 0) {
    fs.renameSync(tmp, target);
  } else {
    fs.rmSync(tmp, { force: true });
    const why = r.error ? `${cc} not found` : `${cc} failed`;
    process.stderr.write(`note: ${target} not built (${why}); fs-verity hashing uses OpenSSL one block at a time\n`);
  }
}
