/** Several real cfs-cas processes at once: SIGKILL during import, gc racing imports, racing puts. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../support/vectors.js';
import { bytes, makeTar, tmpDir, type TarEntry } from './helpers.js';

const BIN = path.join(PROJECT_ROOT, 'bin', 'cfs-cas.js');
const WRITER = path.join(PROJECT_ROOT, 'bin', 'cfs-writer.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cas(args: string[], opts: { killAfterMs?: number } = {}): Promise<Run> {
  return run(BIN, args, opts);
}

function run(bin: string, args: string[], opts: { killAfterMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, CFS_DEBUG: undefined } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = opts.killAfterMs !== undefined ? setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs) : null;
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** `gc --grace 0` over and over until stopped; stop() gives the number of runs. */
function gcLoop(store: string): { stop: () => Promise<number> } {
  let stop = false;
  const runs = (async () => {
    let n = 0;
    while (!stop) {
      const r = await cas(['gc', '--grace', '0', '--store', store]);
      expect(r.code, r.stderr).toBe(0);
      n++;
    }
    return n;
  })();
  return {
    stop: () => {
      stop = true;
      return runs;
    },
  };
}

async function treeTar(seed: number, files: number, size: number): Promise<string> {
  const entries: TarEntry[] = [];
  for (let i = 0; i < files; i++) {
    // one in four files repeats content, to exercise dedup inside the archive
    entries.push({ header: { name: `d${i % 7}/f${i}`, type: 'file', mode: 0o644 }, data: bytes(seed * 1000 + (i % 4 === 3 ? i - 1 : i), size + i) });
  }
  const file = path.join(tmpDir(), `t${seed}.tar`);
  fs.writeFileSync(file, await makeTar(entries));
  return file;
}

describe('cfs-cas processes', () => {
  it('SIGKILL at random points during import leaves a clean store; re-import succeeds', async () => {
    const store = path.join(tmpDir(), 'store');
    const tar = await treeTar(1, 120, 40_000);
    expect((await cas(['init', '--store', store])).code).toBe(0);
    const t0 = Date.now();
    const full = await cas(['import-tar', tar, '--name', 'probe', '--store', store]);
    expect(full.code, full.stderr).toBe(0);
    const span = Date.now() - t0;
    expect((await cas(['rm-ref', 'probe', '--store', store])).code).toBe(0);
    expect((await cas(['gc', '--grace', '0', '--store', store])).code).toBe(0);

    let killed = 0;
    for (let i = 0; i < 10; i++) {
      // --no-cache: an earlier complete run would otherwise make this one instant
      const r = await cas(['import-tar', '--no-cache', tar, '--name', 'base', '--store', store], { killAfterMs: Math.floor(Math.random() * span * 0.8) });
      if (r.signal === 'SIGKILL') killed++;
      else expect(r.code, r.stderr).toBe(0);
      const f = await cas(['fsck', '--json', '--store', store]);
      expect(f.code, f.stdout + f.stderr).toBe(0);
      expect(JSON.parse(f.stdout).problems).toEqual([]);
    }
    expect(killed).toBeGreaterThanOrEqual(3);
    const again = await cas(['import-tar', tar, '--name', 'base', '--store', store]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(full.stdout.trim());
    expect((await cas(['missing', 'base', '--store', store])).code).toBe(0);
    // Litter from the killed runs goes with gc.
    expect((await cas(['gc', '--grace', '0', '--store', store])).code).toBe(0);
    const f = JSON.parse((await cas(['fsck', '--json', '--store', store])).stdout);
    expect(f).toMatchObject({ problems: [], litter: [] });
  });

  it('gc running concurrently with imports never deletes what a registered image needs', async () => {
    const store = path.join(tmpDir(), 'store');
    const tar = await treeTar(2, 60, 20_000);
    expect((await cas(['init', '--store', store])).code).toBe(0);
    const collector = gcLoop(store);
    const writer = async (name: string): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        const r = await cas(['import-tar', tar, '--name', name, '--store', store]);
        expect(r.code, r.stderr).toBe(0);
        const m = await cas(['missing', name, '--store', store]);
        expect(m.stdout, `round ${i}`).toBe('');
        expect(m.code, m.stderr).toBe(0);
        const rm = await cas(['rm-ref', name, '--store', store]);
        expect(rm.code, rm.stderr).toBe(0);
      }
    };
    await Promise.all([writer('w1'), writer('w2')]);
    expect(await collector.stop()).toBeGreaterThan(1);
  });

  it('gc running concurrently with cfs-writer --snapshot (digest cache hits) never deletes what its image needs', async () => {
    const store = path.join(tmpDir(), 'store');
    const tree = path.join(tmpDir(), 'tree');
    for (let i = 0; i < 40; i++) {
      fs.mkdirSync(path.join(tree, `d${i % 5}`), { recursive: true });
      fs.writeFileSync(path.join(tree, `d${i % 5}`, `f${i}`), bytes(i, 5000 + i));
    }
    expect((await cas(['init', '--store', store])).code).toBe(0);
    await new Promise((r) => setTimeout(r, 1100)); // older than a second: the digest cache takes them
    const collector = gcLoop(store);
    // rounds 1-3: the other ref keeps the objects (and their cache rows); rounds 4-5: no ref at all between runs
    for (let i = 0; i < 6; i++) {
      const name = `snap${i % 2}`;
      const r = await run(WRITER, ['--snapshot', '--store', store, '--name', name, tree]);
      expect(r.code, r.stderr).toBe(0);
      if (i > 0 && i < 4) expect(r.stderr).toMatch(/40 unchanged files not read again/);
      const m = await cas(['missing', name, '--store', store]);
      expect(m.stdout, `round ${i}`).toBe('');
      expect(m.code, m.stderr).toBe(0);
      if (i >= 3) expect((await cas(['rm-ref', name, '--store', store])).code).toBe(0);
      if (i === 2) expect((await cas(['rm-ref', 'snap0', '--store', store])).code).toBe(0);
      await new Promise((r) => setTimeout(r, 50)); // let a gc run
    }
    expect(await collector.stop()).toBeGreaterThan(1);
  });

  it('parallel puts of the same content all succeed and leave one object', async () => {
    const dir = tmpDir();
    const store = path.join(dir, 'store');
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, bytes(3, 3 << 20));
    expect((await cas(['init', '--store', store])).code).toBe(0);
    const runs = await Promise.all([1, 2, 3, 4].map(() => cas(['put', file, '--store', store])));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    expect(new Set(runs.map((r) => r.stdout)).size).toBe(1);
    const digest = runs[0].stdout.slice(0, 64);
    expect(fs.readdirSync(path.join(store, 'objects', digest.slice(0, 2)))).toEqual([digest.slice(2)]);
  });
});
