/**
 * Property test: random trees built on disk → directory scan → image → decode must describe
 * exactly what lstat/readlink/getfattr/an independent fs-verity tool say about the files.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeImage, type Inode, S_IFMT, S_IFREG, S_IFLNK } from '../../format/index.js';
import { prng } from '../../test-support/fuzz.js';
import { buildFromDirectory } from '../../writer/build.js';
import { SHARED } from '../support/vectors.js';

const hasSetfattr = spawnSync('sh', ['-c', 'command -v setfattr && command -v getfattr']).status === 0;
const hasPython = spawnSync('python3', ['--version']).status === 0;

function makeRandomTree(root: string, seed: number): void {
  const rnd = prng(seed);
  const pick = (n: number): number => Math.floor(rnd() * n);
  const dirs = [root];
  let made = 0;
  const names = new Set<string>();
  const name = (): string => {
    const chars = 'abcdefghijklmnopqrstuvwxyz0123456789._- ';
    for (;;) {
      let s = '';
      const len = 1 + pick(20);
      for (let i = 0; i < len; i++) s += chars[pick(chars.length)];
      s = s.trim();
      if (s && s !== '.' && s !== '..' && !names.has(s)) {
        names.add(s);
        return s;
      }
    }
  };
  while (made < 60) {
    const parent = dirs[pick(dirs.length)];
    const p = path.join(parent, name());
    const kind = pick(10);
    if (kind < 2) {
      fs.mkdirSync(p);
      dirs.push(p);
    } else if (kind < 8) {
      const size = [0, 1, 63, 64, 65, 4096, 5000, 70000][pick(8)];
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i++) data[i] = pick(256);
      fs.writeFileSync(p, data, { mode: 0o600 + pick(0o177) });
    } else {
      fs.symlinkSync(name().repeat(1 + pick(3)), p);
    }
    if (hasSetfattr && kind < 8 && pick(3) === 0) {
      execFileSync('setfattr', ['-n', `user.k${pick(5)}`, '-v', `v${pick(1000)}`, p]);
    }
    const t = 1_600_000_000 + pick(100_000_000);
    fs.lutimesSync(p, t, t + pick(1000) / 1000);
    made++;
  }
}

function getfattr(p: string): Map<string, string> {
  const m = new Map<string, string>();
  if (!hasSetfattr) return m;
  const out = spawnSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', p], { encoding: 'utf8' }).stdout;
  for (const line of out.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0 && !line.startsWith('#')) m.set(line.slice(0, eq), Buffer.from(line.slice(eq + 3), 'hex').toString('latin1'));
  }
  return m;
}

describe('random trees: the image describes what the file system says', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-prop-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}`, async () => {
      const root = path.join(tmp, `t${seed}`);
      fs.mkdirSync(root);
      makeRandomTree(root, seed);
      const { image } = await buildFromDirectory(root, { threads: 0 }); // hash on this thread: vitest runs the TS sources
      const tree = decodeImage(image).root;
      let checked = 0;
      const walk = (dir: Inode, rel: string): void => {
        const names = fs.readdirSync(path.join(root, rel)).sort();
        expect(dir.children!.map((d) => d.name).sort()).toEqual(names.map((n) => Buffer.from(n).toString('latin1')).sort());
        for (const d of dir.children!) {
          const p = path.join(root, rel, Buffer.from(d.name, 'latin1').toString());
          const st = fs.lstatSync(p, { bigint: true });
          const n = d.inode;
          expect(n.mode).toBe(Number(st.mode));
          expect([n.uid, n.gid]).toEqual([Number(st.uid), Number(st.gid)]);
          expect(n.mtimeSec * 1_000_000_000n + BigInt(n.mtimeNsec)).toBe(st.mtimeNs);
          const type = n.mode & S_IFMT;
          if (type === S_IFLNK) expect(n.payload).toBe(fs.readlinkSync(p, { encoding: 'buffer' }).toString('latin1'));
          if (type === S_IFREG) {
            expect(n.size).toBe(Number(st.size));
            if (n.size > 0 && n.size <= 64) expect(n.content).toBe(fs.readFileSync(p).toString('latin1'));
            if (n.size > 64 && hasPython) {
              const out = execFileSync('python3', [path.join(SHARED, 'fixtures/fsverity_digest.py'), p], { encoding: 'utf8' });
              expect(`sha256:${n.digest}`).toBe(out.trim().split(/\s+/)[0]);
              expect(n.payload).toBe(`${n.digest!.slice(0, 2)}/${n.digest!.slice(2)}`);
            }
          }
          const want = getfattr(p);
          expect(new Map(n.xattrs.map((x) => [x.key, x.value]))).toEqual(want);
          checked++;
          if (n.children) walk(n, path.join(rel, Buffer.from(d.name, 'latin1').toString()));
        }
      };
      walk(tree, '');
      expect(checked).toBe(60);
    });
  }
});
