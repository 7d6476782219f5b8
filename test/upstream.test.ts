/**
 * Differential test against the real mkcomposefs / composefs-info on random trees, when they
 * are installed (MKCOMPOSEFS / COMPOSEFS_INFO, or on PATH). The vectors hold their answers for
 * everything else, so CI without them loses nothing the vectors do not cover.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeImage, dumpToString, encodeImage, parseDump } from '../format/index.js';
import { runBin } from './cli/run.js';
import { VECTORS } from './support/vectors.js';

function find(env: string, name: string): string | null {
  if (process.env[env]) return process.env[env]!;
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}
const mkcomposefs = find('MKCOMPOSEFS', 'mkcomposefs');
const info = find('COMPOSEFS_INFO', 'composefs-info');
const python = spawnSync('python3', ['--version']).status === 0;
const reason = !mkcomposefs || !info ? 'mkcomposefs/composefs-info not found (set MKCOMPOSEFS and COMPOSEFS_INFO)' : !python ? 'python3 not found' : null;
if (reason) console.log(`upstream differential test skipped: ${reason}`);

describe.runIf(!reason)('against upstream mkcomposefs on random trees', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-upstream-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const count = Number(process.env.UPSTREAM_CASES ?? 60);
  const seed = Number(process.env.UPSTREAM_SEED ?? 4242);
  if (!reason) spawnSync('python3', [path.join(VECTORS, 'gen-dumps.py'), 'random', tmp, '--seed', String(seed), '--count', String(count)]);
  const dumps = fs.readdirSync(tmp).filter((f) => f.endsWith('.dump'));

  it(`generated ${count} random dumps (seed ${seed})`, () => expect(dumps.length).toBe(count));
  for (const f of dumps) {
    it(f, () => {
      const input = path.join(tmp, f);
      const theirs = path.join(tmp, `${f}.img`);
      const u = spawnSync(mkcomposefs!, ['--from-file', input, theirs], { env: { ...process.env, CFS_PARSE_STRICT: '1' } });
      let ours: Buffer | null = null;
      try {
        ours = encodeImage(parseDump(fs.readFileSync(input), { strict: true }));
      } catch {
        ours = null;
      }
      expect(ours === null, `accept/reject agrees (upstream: ${u.stderr})`).toBe(u.status !== 0);
      if (!ours) return;
      const ref = fs.readFileSync(theirs);
      expect(ours.equals(ref)).toBe(true);
      const text = spawnSync(info!, ['dump', theirs], { maxBuffer: 1 << 28 }).stdout.toString('latin1');
      const mine = dumpToString(decodeImage(ref).root);
      const a = mine.split('\n');
      const b = text.split('\n');
      expect(a.length).toBe(b.length);
      for (let i = 0; i < a.length; i++) {
        if (a[i] === b[i]) continue;
        // only the known upstream redirect over-read may differ: our PAYLOAD is a prefix of theirs
        const x = a[i].split(' ');
        const y = b[i].split(' ');
        expect(y[8].startsWith(x[8]) && y.length === x.length, `line ${i + 1}:\n ours: ${a[i]}\n them: ${b[i]}`).toBe(true);
      }
    });
  }
});

/** Real system directories: the same image bytes as mkcomposefs, plain and with a digest store. */
const SYSTEM_DIRS = (process.env.UPSTREAM_DIRS ?? '/etc:/usr/share/doc:/usr/share/zoneinfo').split(':').filter((d) => fs.existsSync(d));
describe.runIf(!!mkcomposefs)('against upstream mkcomposefs on system directories', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-upstream-dirs-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  for (const dir of SYSTEM_DIRS.filter((d) => fs.statSync(d).isDirectory())) {
    it(dir, () => {
      for (const flags of [[], ['--use-epoch', '--digest-store']]) {
        const store = flags.length ? [path.join(tmp, 'store')] : [];
        const theirs = spawnSync(mkcomposefs!, [...flags, ...store, dir, '-'], { maxBuffer: 1 << 30 });
        expect(theirs.status, theirs.stderr?.toString()).toBe(0);
        const ours = runBin('cfs-writer', [...flags, ...(flags.length ? [path.join(tmp, 'store-ours')] : []), dir]);
        expect(ours.code, ours.stderr).toBe(0);
        // a file that changes between the two runs would differ: compare the dumps first for a readable failure
        expect(dumpToString(decodeImage(ours.stdout).root)).toBe(dumpToString(decodeImage(theirs.stdout).root));
        expect(ours.stdout.equals(theirs.stdout)).toBe(true);
      }
    }, 300_000);
  }
});
