/**
 * cfs-writer-json against ../shared/fixtures/toc: every valid TOC's image dumps to its
 * .expected.dump, every hostile TOC in bad/MANIFEST.tsv is refused (entry index and name, exit 1,
 * no image), and the generated large inputs (gen-large.py's three cases, generated here in TS).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { CfsError, decodeImage, dumpToString } from '../../format/index.js';
import { convertToc } from '../../writer-json/convert.js';
import { BAD, TOC_FIXTURES, runBinAsync } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-writer-json-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const valid = fs.readdirSync(TOC_FIXTURES).filter((f) => f.endsWith('.json')).sort();
const dumpOf = (img: Buffer): string => dumpToString(decodeImage(img).root);
const expected = (f: string): string => fs.readFileSync(path.join(TOC_FIXTURES, f.replace(/\.json$/, '.expected.dump')), 'latin1');

/** bad/MANIFEST.tsv rows: file, expected outcome, reason. */
const manifest = fs
  .readFileSync(path.join(BAD, 'MANIFEST.tsv'), 'utf8')
  .split('\n')
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const [file, outcome, reason] = l.split('\t');
    return { file, outcome, reason };
  });
const badFiles = manifest.filter((r) => r.file.endsWith('.json'));

/** What the message must name for each hostile file: the entry, or the document-level problem. */
const BAD_MESSAGE: Record<string, RegExp> = {
  'absolute-name.json': /^entry 0 ".*": name is absolute/,
  'bad-base64-xattr.json': /^entry 0 "x": xattr "user.bad": value is not valid base64/,
  'digest-bad-hex.json': /^entry 0 ".*": digest: must be "sha256:"/,
  'digest-not-sha256.json': /^entry 0 ".*": digest: must be "sha256:"/,
  'digest-traversal.json': /^entry 0 ".*": digest: must be "sha256:"/,
  'duplicate-entry.json': /^entry 1 "\.\/dup": duplicate entry: same path as entry 0/,
  'entries-not-array.json': /"entries" must be an array/,
  'hardlink-missing-target.json': /^entry 0 "h": hardlink target "does\/not\/exist" is not an earlier entry/,
  'hardlink-to-dir.json': /^entry 1 "h": hardlink target "d" is a directory/,
  'huge-size.json': /^entry 0 "huge": size: must be at most 2\^53-1/,
  'invalid-type.json': /^entry 0 "sock": type: must be one of/,
  'invalid-utf8.json': /not valid UTF-8/,
  'mode-negative.json': /^entry 0 "m": mode: must not be negative/,
  'mode-string.json': /^entry 0 "m": mode: must be a number/,
  'negative-size.json': /^entry 0 "neg": size: must not be negative/,
  'not-json.json': /not valid JSON/,
  'nul-in-name.json': /^entry 0 "evil\\u0000name": name contains a NUL byte/,
  'path-traversal-middle.json': /^entry 1 "a\/\.\.\/\.\.\/x": name has a "\.\." component/,
  'path-traversal.json': /^entry 0 "\.\.\/\.\.\/etc\/passwd": name has a "\.\." component/,
  'reg-under-file.json': /^entry 1 "f\/child": parent "f" is not a directory \(entry 0\)/,
  'truncated.json': /not valid JSON/,
  'version-2.json': /unsupported TOC version/,
};

describe('valid TOC fixtures', () => {
  it('has fixtures to test', () => expect(valid.length).toBeGreaterThanOrEqual(10));
  for (const f of valid) {
    it(`${f}: the image dumps to ${f.replace(/\.json$/, '.expected.dump')}`, () => {
      const r = convertToc(fs.readFileSync(path.join(TOC_FIXTURES, f)), { input: f });
      expect(dumpOf(r.image)).toBe(expected(f));
    });
  }
  it('the CLI writes the same images (file, -o, stdout, stdin) and cfs-dump shows the expected dumps', async () => {
    const runs = await Promise.all(
      valid.map(async (f) => {
        const out = path.join(tmp, `${f}.img`);
        const r = await runBinAsync('cfs-writer-json', [path.join(TOC_FIXTURES, f), out]);
        // cfs-dump is decodeImage + dumpToString; it is spawned once below.
        return { f, r, dump: r.code === 0 ? dumpOf(fs.readFileSync(out)) : undefined };
      }),
    );
    for (const { f, r, dump } of runs) {
      expect(r.stderr, f).toBe('');
      expect(r.code, f).toBe(0);
      expect(dump, f).toBe(expected(f));
    }
    const toc = fs.readFileSync(path.join(TOC_FIXTURES, 'all-types.json'));
    const [cfsDump, viaO, viaStdout, viaStdin] = await Promise.all([
      runBinAsync('cfs-dump', [path.join(tmp, 'hardlinks.json.img')]),
      runBinAsync('cfs-writer-json', ['-o', path.join(tmp, 'o.img'), path.join(TOC_FIXTURES, 'all-types.json')]),
      runBinAsync('cfs-writer-json', [path.join(TOC_FIXTURES, 'all-types.json')]),
      runBinAsync('cfs-writer-json', ['-', '-'], { input: toc }),
    ]);
    expect(cfsDump.stdout.toString('latin1')).toBe(expected('hardlinks.json'));
    const ref = fs.readFileSync(path.join(tmp, 'all-types.json.img'));
    expect(viaO.code).toBe(0);
    expect(fs.readFileSync(path.join(tmp, 'o.img')).equals(ref)).toBe(true);
    expect(viaStdout.stdout.equals(ref)).toBe(true);
    expect(viaStdin.stdout.equals(ref)).toBe(true);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
  it('reads a gzipped TOC (upstream composefs test assets: 8761 entries, one hardlink)', () => {
    const file = path.join(TOC_FIXTURES, 'upstream', 'composefs-config-with-hard-link.json.gz');
    const text = zlib.gunzipSync(fs.readFileSync(file));
    const dump = dumpOf(convertToc(text, { input: file }).image);
    const lines = dump.split('\n').filter(Boolean);
    expect(lines.length).toBe(8763); // 8761 entries, the hardlink's extra name, the root
    const ls = lines.find((l) => l.startsWith('/usr/bin/ls '))!;
    const hard = lines.find((l) => l.startsWith('/usr/bin/ls-hardlink '))!;
    expect(ls.split(' ')[3]).toBe('2'); // nlink
    expect(hard.split(' ')[2]).toBe(`@${ls.split(' ')[2]}`);
    expect(hard.split(' ')[8]).toBe('/usr/bin/ls');
  });
});

describe('hostile TOCs (bad/MANIFEST.tsv)', () => {
  it('lists every bad/*.json file, and each has an expected message here', () => {
    const files = fs.readdirSync(BAD).filter((f) => f.endsWith('.json')).sort();
    expect(badFiles.map((r) => r.file).sort()).toEqual(files);
    for (const r of badFiles) expect(r.outcome, r.file).toBe('reject');
    expect(Object.keys(BAD_MESSAGE).sort()).toEqual(files);
  });
  for (const { file, reason } of badFiles) {
    it(`${file}: rejected (${reason})`, () => {
      let err: unknown;
      try {
        convertToc(fs.readFileSync(path.join(BAD, file)), { input: file });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CfsError);
      expect((err as CfsError).message).toMatch(BAD_MESSAGE[file]);
    });
  }
  // Every rejection above is a CfsError, which the CLI turns into exit 1; spawning is slow, so the
  // CLI runs one case of each kind: document level, entry level, text level, parse level, version.
  const CLI_CASES = ['entries-not-array.json', 'duplicate-entry.json', 'hardlink-to-dir.json', 'invalid-utf8.json', 'truncated.json', 'version-2.json', 'reg-under-file.json'];
  it('the CLI exits 1 with one line naming the input, and writes no image', async () => {
    const runs = await Promise.all(
      badFiles.filter(({ file }) => CLI_CASES.includes(file)).map(async ({ file }) => {
        const out = path.join(tmp, `bad-${file}.img`);
        return { file, out, r: await runBinAsync('cfs-writer-json', [path.join(BAD, file), out]) };
      }),
    );
    for (const { file, out, r } of runs) {
      expect(r.code, file).toBe(1);
      expect(r.stderr, file).toMatch(new RegExp(`^cfs-writer-json: ${path.join(BAD, file).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: CFS_\\w+: .+\\n$`));
      expect(r.stderr.split('\n').length, file).toBe(2);
      expect(fs.existsSync(out), file).toBe(false);
    }
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
  it('an existing image is left untouched when the TOC is refused', async () => {
    const out = path.join(tmp, 'keep.img');
    fs.writeFileSync(out, 'old');
    const r = await runBinAsync('cfs-writer-json', [path.join(BAD, 'duplicate-entry.json'), out]);
    expect(r.code).toBe(1);
    expect(fs.readFileSync(out, 'utf8')).toBe('old');
  });
});

describe('generated inputs (bad/gen-large.py cases)', () => {
  it('deep-json: JSON nested 10000 levels is refused without a stack overflow', () => {
    const depth = 10000;
    const text = Buffer.from('{"version":1,"entries":' + '['.repeat(depth) + ']'.repeat(depth) + '}\n');
    expect(() => convertToc(text, { input: 'deep-json' })).toThrow(/nested deeper than 64 levels/);
    // Deeper still, and nested objects rather than arrays.
    const objs = Buffer.from('{"version":1,"entries":[' + '{"a":'.repeat(200000) + '1' + '}'.repeat(200000) + ']}');
    expect(() => convertToc(objs, { input: 'deep-obj' })).toThrow(/nested deeper/);
  });
  it('deep-path: one file under 10000 directories is refused (path > PATH_MAX)', () => {
    const name = Array(10000).fill('d').join('/') + '/file';
    const toc = { version: 1, entries: [{ name, type: 'reg', size: 1, mode: 0o644, offset: 1, digest: `sha256:${'2d'.repeat(32)}` }] };
    expect(() => convertToc(Buffer.from(JSON.stringify(toc)), { input: 'deep-path' })).toThrow(/^entry 0 "d\/d\/.*….*\/file": name is 20004 bytes long/);
  });
  it('the deepest tree a path allows (2047 levels, built from implicit parents) converts', () => {
    const name = Array(2047).fill('d').join('/');
    const toc = { version: 1, entries: [{ name, type: 'dir', mode: 0o700 }] };
    const root = decodeImage(convertToc(Buffer.from(JSON.stringify(toc)), { input: 'deep-ok' }).image).root;
    let depth = 0;
    for (let n = root; n.children && n.children.length; n = n.children[0].inode) depth++;
    expect(depth).toBe(2047);
  });
  it('many-entries: 100000 reg entries in 100 dirs convert in bounded time', () => {
    const ents: object[] = [];
    for (let d = 0; d < 100; d++) ents.push({ name: `dir${String(d).padStart(3, '0')}/`, type: 'dir', mode: 0o755 });
    for (let i = 0; i < 100000; i++) {
      const h = (i * 2654435761 >>> 0).toString(16).padStart(8, '0').repeat(8);
      ents.push({ name: `dir${String(i % 100).padStart(3, '0')}/file${String(i).padStart(6, '0')}`, type: 'reg', size: (i % 4096) + 1, mode: 0o644, offset: 1000 + i, digest: `sha256:${h}` });
    }
    const text = Buffer.from(JSON.stringify({ version: 1, entries: ents }));
    const t0 = Date.now();
    const r = convertToc(text, { input: 'many-entries' });
    const ms = Date.now() - t0;
    expect(r.entries).toBe(100100);
    const root = decodeImage(r.image).root;
    expect(root.children!.length).toBe(100);
    expect(root.children!.every((d) => d.inode.children!.length === 1000)).toBe(true);
    const first = root.children![0].inode.children![0];
    expect(first.name).toBe('file000000');
    expect(first.inode.payload).toBe(`00/${'00000000'.repeat(8).slice(2)}`);
    expect(ms).toBeLessThan(20000);
  }, 30000);
});
