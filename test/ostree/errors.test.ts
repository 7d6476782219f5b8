/**
 * Hostile and broken repos, built here from a recipe (test/ostree/make-repo.ts): corrupt,
 * truncated and missing objects, wrong types, huge GVariant offsets, cycles and tree bombs give
 * one clear error line and write nothing; mutated objects never crash the converter (seeded,
 * CFS_FUZZ_SEED / CFS_FUZZ_CASES). Needs neither root nor ostree.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CfsError, decodeImage, dumpToString, fsverityDigest } from '../../format/index.js';
import { Store } from '../../cas/store.js';
import { convertCommit } from '../../ostree-convert/convert.js';
import { parseCommit } from '../../ostree-convert/objects.js';
import { Repo } from '../../ostree-convert/repo.js';
import { mutate, prng } from '../../test-support/fuzz.js';
import { runBin } from '../cli/run.js';
import { type SynthEntry, commitObject, dirmetaObject, dirtreeObject, filezObject, makeArchiveRepo, sha256hex } from './make-repo.js';

const TREE: Record<string, SynthEntry> = {
  'hello.txt': { content: Buffer.from('hello\n') },
  'big.bin': { content: Buffer.alloc(300_000, 7), mode: 0o100755, xattrs: [['user.k', 'v']] },
  empty: { content: Buffer.alloc(0) },
  link: { target: '../hello.txt' },
  sub: { dir: { 'a.txt': { content: Buffer.from('a'.repeat(100)) }, deeper: { dir: {} } }, mode: 0o40700 },
};

const objectFiles = (repo: string, ext: string): string[] =>
  fs.readdirSync(path.join(repo, 'objects')).flatMap((d) => fs.readdirSync(path.join(repo, 'objects', d)).filter((f) => f.endsWith(`.${ext}`)).map((f) => path.join(repo, 'objects', d, f)));
const bySize = (repo: string): string[] => objectFiles(repo, 'filez').sort((a, b) => fs.statSync(b).size - fs.statSync(a).size);
const checksumOf = (file: string): string => path.basename(path.dirname(file)) + path.basename(file).split('.')[0];
const putObject = (repo: string, data: Buffer, ext: string, checksum = sha256hex(data)): string => {
  fs.mkdirSync(path.join(repo, 'objects', checksum.slice(0, 2)), { recursive: true });
  fs.writeFileSync(path.join(repo, 'objects', checksum.slice(0, 2), `${checksum.slice(2)}.${ext}`), data);
  return checksum;
};

describe('broken and hostile repos', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-ostree-bad-'));
  let n = 0;
  /** A fresh copy of the synthetic repo. */
  const fresh = (): { repo: string; commit: string } => {
    const repo = path.join(tmp, `repo-${n++}`);
    return { repo, commit: makeArchiveRepo(repo, TREE) };
  };
  let good: { repo: string; commit: string };
  beforeAll(() => {
    good = fresh();
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** Run the CLI expecting failure: one stderr line with `code`, no image, no image in the store. */
  const fails = (args: string[], code: string, exit = 1): string => {
    const img = path.join(tmp, `out-${n++}.img`);
    const store = path.join(tmp, `store-${n++}`);
    const r = runBin('cfs-ostree-convert', [...args, '--store', store, img]);
    expect(r.code, r.stderr).toBe(exit);
    expect(r.stderr.trim().split('\n').length).toBeLessThanOrEqual(exit === 2 ? 2 : 1); // command-line errors add "Try --help"
    expect(r.stderr).toContain(code);
    expect(fs.existsSync(img)).toBe(false);
    expect(fs.existsSync(path.join(store, 'images')) ? fs.readdirSync(path.join(store, 'images')) : []).toEqual([]);
    return r.stderr;
  };

  it('the synthetic repo converts', () => {
    const img = path.join(tmp, 'good.img');
    const r = runBin('cfs-ostree-convert', ['--repo', good.repo, '--store', path.join(tmp, 'good-store'), 'main', img]);
    expect(r.code, r.stderr).toBe(0);
    const lines = dumpToString(decodeImage(fs.readFileSync(img)).root).trimEnd().split('\n');
    const patterns = [
      /^\/ \d+ 40755 3 0 0 0 0\.0 - - -$/,
      /^\/big\.bin 300000 100755 1 0 0 0 0\.0 ([0-9a-f]{2})\/([0-9a-f]{62}) - \1\2 user\.k=v$/,
      /^\/empty 0 100644 1 0 0 0 0\.0 - - -$/,
      /^\/hello\.txt 6 100644 1 0 0 0 0\.0 9c\/76eecc7b\S+ - 9c76eecc7b\S+$/,
      /^\/link 12 120777 1 0 0 0 0\.0 \.\.\/hello\.txt - -$/,
      /^\/sub \d+ 40700 3 0 0 0 0\.0 - - -$/,
      /^\/sub\/a\.txt 100 100644 1 0 0 0 0\.0 \S+ - \S+$/,
      /^\/sub\/deeper \d+ 40755 2 0 0 0 0\.0 - - -$/,
    ];
    expect(lines).toHaveLength(patterns.length);
    lines.forEach((l, i) => expect(l).toMatch(patterns[i]));
  });

  it('a corrupt dirtree is a checksum error naming it; --no-verify reads what is there', () => {
    const { repo, commit } = fresh();
    const sub = objectFiles(repo, 'dirtree').find((f) => fs.readFileSync(f).includes('a.txt'))!;
    const bytes = fs.readFileSync(sub);
    fs.writeFileSync(sub, Buffer.from(bytes.toString('latin1').replace('a.txt', 'b.txt'), 'latin1'));
    expect(fails(['--repo', repo, commit], 'CFS_BAD_CHECKSUM')).toContain(`dirtree ${checksumOf(sub)}`);
    const img = path.join(tmp, 'noverify.img');
    const r = runBin('cfs-ostree-convert', ['--repo', repo, '--no-verify', '--store', path.join(tmp, 'nv-store'), commit, img]);
    expect(r.code, r.stderr).toBe(0);
    expect(dumpToString(decodeImage(fs.readFileSync(img)).root)).toContain('/sub/b.txt 100 ');
  });

  it('missing, truncated and oversized objects', () => {
    let { repo, commit } = fresh();
    const victim = bySize(repo)[0];
    fs.rmSync(victim);
    expect(fails(['--repo', repo, commit], 'CFS_IO')).toContain(`missing object objects/${path.relative(path.join(repo, 'objects'), victim)}`);

    ({ repo, commit } = fresh());
    const big = bySize(repo)[0];
    fs.truncateSync(big, fs.statSync(big).size - 3);
    fails(['--repo', repo, commit], 'CFS_BAD_OBJECT');
    fs.truncateSync(big, 20); // inside the header
    fails(['--repo', repo, commit], 'CFS_BAD_OBJECT');

    // content longer than the header says, written under the same name
    ({ repo, commit } = fresh());
    const helloSum = sha256hex(filezObject({ mode: 0o100644, content: Buffer.from('hello\n') }));
    const hello = path.join(repo, 'objects', helloSum.slice(0, 2), `${helloSum.slice(2)}.filez`);
    const h = fs.readFileSync(hello);
    const header = h.subarray(0, 8 + h.readUInt32BE(0));
    const inflated = Buffer.concat([header, filezObject({ mode: 0o100644, content: Buffer.from('hello\nand more\n') }).subarray(header.length)]);
    fs.writeFileSync(hello, inflated);
    expect(fails(['--repo', repo, commit], 'CFS_BAD_OBJECT')).toMatch(/larger than the \d+ bytes its header says/);

    // a commit ostree marks as partial
    ({ repo, commit } = fresh());
    fs.mkdirSync(path.join(repo, 'state'));
    fs.writeFileSync(path.join(repo, 'state', `${commit}.commitpartial`), '');
    expect(fails(['--repo', repo, commit], 'CFS_IO')).toContain('is partial');

    // a commit object too large to be one
    ({ repo, commit } = fresh());
    const f = path.join(repo, 'objects', commit.slice(0, 2), `${commit.slice(2)}.commit`);
    fs.truncateSync(f, 200 << 20);
    fails(['--repo', repo, commit], 'CFS_TOO_LARGE');
  });

  it('large archive objects are streamed: same digest, truncation and excess still caught', async () => {
    const data = randomBytes(5 << 20); // incompressible: over the one-call inflate limit
    const repo = path.join(tmp, 'repo-large');
    const commit = makeArchiveRepo(repo, { 'large.bin': { content: data } });
    const stores: Store[] = [];
    const convert = (): ReturnType<typeof convertCommit> => {
      const store = Store.open(path.join(tmp, `large-store-${stores.length}`), { create: true });
      stores.push(store);
      return convertCommit(Repo.open(repo), commit, { payloads: 'store', store });
    };
    try {
      const r = await convert();
      const digest = fsverityDigest(data).toString('hex');
      expect(dumpToString(decodeImage(r.image).root)).toContain(`/large.bin 5242880 100644 1 0 0 0 0.0 ${digest.slice(0, 2)}/${digest.slice(2)} - ${digest}\n`);
      expect(fs.readFileSync(stores[0].objectPath(digest)).equals(data)).toBe(true);
      const obj = bySize(repo)[0];
      const whole = fs.readFileSync(obj);
      fs.writeFileSync(obj, whole.subarray(0, whole.length - 1000));
      await expect(convert()).rejects.toThrow(/corrupt compressed content/);
      // a header that claims one byte less than the stream holds
      const len = whole.readUInt32BE(0);
      const header = Buffer.from(whole.subarray(0, 8 + len));
      header.writeUInt32BE((5 << 20) - 1, 8 + 4);
      fs.writeFileSync(obj, Buffer.concat([header, whole.subarray(8 + len)]));
      await expect(convert()).rejects.toThrow(/larger than the 5242879 bytes/);
      // nothing reached the stores of the failed conversions
      for (const st of stores.slice(1)) expect(fs.readdirSync(st.objectsDir)).toEqual([]);
    } finally {
      for (const st of stores) st.close();
    }
  });

  it('wrong object types and modes', () => {
    const { repo, commit } = fresh();
    // a dirtree checksum given as the commit
    const tree = checksumOf(objectFiles(repo, 'dirtree')[0]);
    expect(fails(['--repo', repo, tree], 'CFS_IO')).toContain('.commit');
    // a commit whose root dirmeta says "regular file"
    const meta = putObject(repo, dirmetaObject(0o100644), 'dirmeta');
    const c = fs.readFileSync(path.join(repo, 'objects', commit.slice(0, 2), `${commit.slice(2)}.commit`));
    const { rootTree } = parseCommit(c, 'commit');
    const bad = putObject(repo, commitObject({ rootTree, rootMeta: meta }), 'commit');
    expect(fails(['--repo', repo, bad], 'CFS_BAD_OBJECT')).toContain('invalid directory mode 0100644');
    // a content object that is a device
    const dev = putObject(repo, filezObject({ mode: 0o20644 }), 'filez');
    const t = putObject(repo, dirtreeObject([['dev', dev]], []), 'dirtree');
    const withDev = putObject(repo, commitObject({ rootTree: t, rootMeta: putObject(repo, dirmetaObject(0o40755), 'dirmeta') }), 'commit');
    expect(fails(['--repo', repo, withDev], 'CFS_BAD_OBJECT')).toContain('invalid file mode 020644');
  });

  it('huge GVariant offsets, cycles and tree bombs end in an error, not a hang', async () => {
    const { repo } = fresh();
    const meta = putObject(repo, dirmetaObject(0o40755), 'dirmeta');
    const commitFor = (tree: string): string => putObject(repo, commitObject({ rootTree: tree, rootMeta: meta }), 'commit');
    // a dirtree whose framing offsets point far outside it (4-byte offsets in a 64 KiB+ object)
    const huge = Buffer.concat([dirtreeObject([['x'.repeat(200), 'a'.repeat(64)]], []), Buffer.alloc(70000)]);
    huge.writeUInt32LE(0xfffffff0, huge.length - 4);
    expect(fails(['--repo', repo, commitFor(putObject(repo, huge, 'dirtree'))], 'CFS_BAD_OBJECT')).toMatch(/framing offset|outside/);
    // a dirtree containing itself (possible only with made-up names, hence --no-verify)
    const self = 'c'.repeat(64);
    putObject(repo, dirtreeObject([], [['loop', self, meta]]), 'dirtree', self);
    expect(fails(['--repo', repo, '--no-verify', commitFor(self)], 'CFS_TOO_LARGE')).toContain('deeper than');
    // a valid DAG of 3 names per level, 14 levels: 3^14 directories from a few hundred bytes
    // (the default cap is 2^21 entries; a lower one keeps the test fast)
    let level = putObject(repo, dirtreeObject([], []), 'dirtree');
    for (let i = 0; i < 14; i++) level = putObject(repo, dirtreeObject([], ['a', 'b', 'c'].map((d) => [d, level, meta] as [string, string, string])), 'dirtree');
    await expect(convertCommit(Repo.open(repo), commitFor(level), { payloads: 'store', store: Store.open(path.join(tmp, 'bomb'), { create: true }), maxEntries: 50_000 })).rejects.toThrow(/more than 50000 entries/);
  });

  it('command line: modes that cannot work are usage errors; refs cannot leave refs/', () => {
    fails(['--repo', good.repo, '--base-objects', 'main'], 'choose one of --store and --base-objects', 2);
    const r = runBin('cfs-ostree-convert', ['--repo', good.repo, 'main', path.join(tmp, 'x.img')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('use --store');
    fs.writeFileSync(path.join(tmp, 'evil'), `${good.commit}\n`);
    fails(['--repo', good.repo, '../../evil'], 'no ref or commit', 2);
    expect(runBin('cfs-ostree-convert', ['--repo', good.repo, '--name', 'x', 'main']).code).toBe(2);
    expect(runBin('cfs-ostree-convert', ['--repo', path.join(tmp, 'nowhere'), '--store', path.join(tmp, 's'), 'main']).stderr).toContain('not an OSTree repository');
  });

  it('batch: a broken commit is reported and the others convert', () => {
    const { repo, commit } = fresh();
    const bad = putObject(repo, commitObject({ rootTree: 'd'.repeat(64), rootMeta: 'e'.repeat(64) }), 'commit');
    const out = path.join(tmp, 'batch-out');
    const r = runBin('cfs-ostree-convert', ['--repo', repo, '--store', path.join(tmp, 'batch-store'), '--out', out, bad, 'main']);
    expect(r.code).toBe(1);
    const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { commit: string; status: string; error?: string });
    expect(lines.map((l) => [l.commit, l.status])).toEqual([
      [bad, 'failed'],
      [commit, 'converted'],
    ]);
    expect(lines[0].error).toContain('missing object');
    expect(fs.readdirSync(out)).toEqual([`${commit}.img`]);
  });

  it('fuzz: mutated objects fail only with CfsError', async () => {
    const { repo, commit } = fresh();
    const files = ['commit', 'dirtree', 'dirmeta', 'filez'].flatMap((e) => objectFiles(repo, e));
    const store = Store.open(path.join(tmp, 'fuzz-store'), { create: true });
    const rnd = prng(Number(process.env.CFS_FUZZ_SEED ?? 11));
    const seen = new Map<string, number>();
    try {
      for (let i = 0, cases = Number(process.env.CFS_FUZZ_CASES ?? 200); i < cases; i++) {
        const file = files[Math.floor(rnd() * files.length)];
        const orig = fs.readFileSync(file);
        fs.writeFileSync(file, mutate(orig, rnd));
        try {
          await convertCommit(Repo.open(repo, { verify: false }), commit, { payloads: 'store', store });
          seen.set('ok', (seen.get('ok') ?? 0) + 1);
        } catch (e) {
          if (!(e instanceof CfsError)) throw new Error(`case ${i} (${path.basename(file)}): ${(e as Error).stack}`);
          seen.set(e.code, (seen.get(e.code) ?? 0) + 1);
        } finally {
          fs.writeFileSync(file, orig);
        }
      }
    } finally {
      store.close();
    }
    expect(seen.get('ok')).toBeGreaterThan(5);
    expect(seen.get('CFS_BAD_OBJECT')).toBeGreaterThan(100);
  });
});
