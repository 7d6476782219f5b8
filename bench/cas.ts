/**
 * cfs-cas benchmark: import a generated tree (as a tar, and as a directory with
 * `cfs-writer --snapshot`) into a fresh store, then import it again (all dedup), and compare MB/s
 * with `sha256sum` over the same files in the same run. The second import of an unchanged tar file
 * is registered from the store's record of the first (the tar is not read); a directory is
 * scanned again but unchanged files are not re-hashed (the digest cache).
 *
 * Environment:
 *   BENCH_CAS_FILES  number of files (default 20000, the issue's example; 0 skips this benchmark)
 *   BENCH_CAS_MB     total content in MiB (default 2048)
 *   BENCH_CAS_DUP    percent of files that repeat an earlier file's content (default 30)
 *
 * Targets (issue 4): first import >= 80% of the sha256sum figure; second import >= 5x faster.
 */
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar-stream';

const PKG_ROOT = fileURLToPath(new URL('../../', import.meta.url));

function envNum(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`bench: invalid ${name}=${raw}`);
  return n;
}

/** Deterministic bytes: an AES-CTR keystream. */
export function stream(seed: number, size: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32LE(seed, 0);
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Sizes spread from tiny (inline) to several MiB, summing to about `total`. */
function sizes(files: number, total: number): number[] {
  const out: number[] = [];
  let weight = 0;
  for (let i = 0; i < files; i++) {
    const w = i % 10 === 0 ? 40 : i % 3 === 0 ? 0.01 : 1 + (i % 7);
    out.push(w);
    weight += w;
  }
  return out.map((w) => Math.max(1, Math.round((w / weight) * total)));
}

async function generate(dir: string, tarFile: string, files: number, total: number, dupPercent: number): Promise<{ bytes: number }> {
  const pack = tar.pack();
  const out = fs.createWriteStream(tarFile);
  const done = new Promise<void>((res, rej) => {
    out.on('finish', () => res());
    out.on('error', rej);
  });
  pack.pipe(out);
  const list = sizes(files, total);
  const contents: Buffer[] = [];
  let bytes = 0;
  for (let i = 0; i < files; i++) {
    const dup = i > 0 && (i * 37) % 100 < dupPercent;
    const data = dup ? contents[(i * 7919) % contents.length] : stream(i + 1, list[i]);
    if (!dup && data.length < 8 << 20) contents.push(data);
    const rel = `d${i % 50}/s${i % 7}/f${i}`;
    fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), data);
    await new Promise<void>((res, rej) => pack.entry({ name: rel, size: data.length, mode: 0o644, mtime: new Date(0) }, data, (e) => (e ? rej(e) : res())));
    bytes += data.length;
  }
  pack.finalize();
  await done;
  return { bytes };
}

function timed(file: string, args: string[], opts: { cwd?: string; shell?: boolean } = {}): number | undefined {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(file, args, { cwd: opts.cwd, shell: opts.shell, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  if (r.status !== 0) {
    console.log(`  ${file} ${args.join(' ')} failed: ${r.stderr?.toString().trim() || r.error?.message || `status ${r.status}`}`);
    return undefined;
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Run the benchmark in `tmp`; returns 1 if an invocation failed. */
export async function runCasBench(tmp: string): Promise<number> {
  const files = Math.floor(envNum('BENCH_CAS_FILES', 20000));
  if (files === 0) return 0;
  const total = Math.floor(envNum('BENCH_CAS_MB', 2048) * (1 << 20));
  const dup = envNum('BENCH_CAS_DUP', 30);
  const tree = path.join(tmp, 'cas-tree');
  const tarFile = path.join(tmp, 'cas-tree.tar');
  const store = path.join(tmp, 'cas-store');
  fs.mkdirSync(tree, { recursive: true });
  const { bytes } = await generate(tree, tarFile, files, total, dup);
  const mb = bytes / 1e6;
  console.log(`\ncas: ${files} files, ${mb.toFixed(1)} MB (${dup}% duplicate content), tar ${(fs.statSync(tarFile).size / 1e6).toFixed(1)} MB`);

  // the generated files are still being written back: flush them, or the first import's syncs pay for it
  spawnSync('sync');
  const cas = path.join(PKG_ROOT, 'bin/cfs-cas.js');
  const sha = timed('find . -type f -print0 | xargs -0 sha256sum', [], { cwd: tree, shell: true });
  const first = timed(process.execPath, [cas, 'import-tar', tarFile, '--name', 'bench', '--store', store]);
  const second = first === undefined ? undefined : timed(process.execPath, [cas, 'import-tar', tarFile, '--name', 'bench2', '--store', store]);
  // the same tree imported from the directory (cfs-writer --snapshot) into its own store
  await new Promise((r) => setTimeout(r, 1100)); // the digest cache ignores files changed in the last second
  const writer = path.join(PKG_ROOT, 'bin/cfs-writer.js');
  const dirStore = path.join(tmp, 'cas-store-dir');
  const dirFirst = timed(process.execPath, [writer, '--snapshot', '--store', dirStore, '--name', 'bench', tree]);
  const dirSecond = dirFirst === undefined ? undefined : timed(process.execPath, [writer, '--snapshot', '--store', dirStore, '--name', 'bench2', tree]);

  const rate = (s: number | undefined): string => (s === undefined ? '-' : `${(mb / s).toFixed(0)} MB/s`);
  const secs = (s: number | undefined): string => (s === undefined ? 'FAILED' : `${s.toFixed(2)} s`);
  console.log(`  sha256sum over the files      ${secs(sha).padStart(9)}  ${rate(sha)}`);
  console.log(`  cfs-cas import-tar (new)      ${secs(first).padStart(9)}  ${rate(first)}` + (sha && first ? `  = ${((sha / first) * 100).toFixed(0)}% of sha256sum (target >= 80%)` : ''));
  console.log(`  cfs-cas import-tar (dedup)    ${secs(second).padStart(9)}  ${rate(second)}` + (first && second ? `  = ${(first / second).toFixed(1)}x the first (target >= 5x)` : ''));
  console.log(`  cfs-writer --snapshot (new)   ${secs(dirFirst).padStart(9)}  ${rate(dirFirst)}` + (sha && dirFirst ? `  = ${((sha / dirFirst) * 100).toFixed(0)}% of sha256sum (target >= 80%)` : ''));
  console.log(`  cfs-writer --snapshot (again) ${secs(dirSecond).padStart(9)}  ${rate(dirSecond)}` + (dirFirst && dirSecond ? `  = ${(dirFirst / dirSecond).toFixed(1)}x the first (target >= 5x; digest cache)` : ''));
  return [first, second, dirFirst, dirSecond].includes(undefined) ? 1 : 0;
}
