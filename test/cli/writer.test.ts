import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VECTORS } from '../support/vectors.js';
import { runBin } from './run.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-writer-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const gen = (name: string, ext: string): string => path.join(VECTORS, 'generated', `${name}.${ext}`);
const expected = (name: string): string => fs.readFileSync(gen(name, 'sha256'), 'utf8').trim().split(/\s+/)[0];
/** fs-verity digest of generated/bigdir.img as printed by upstream `mkcomposefs --print-digest`. */
const BIGDIR_IMAGE_DIGEST = '2cf0783e31c4371795c7485c4ec971971b37f280c7fd000b90be698432f8a6e0';

describe('cfs-writer --from-file', () => {
  it('writes the image to a file, to -o, and to stdout', () => {
    const out = path.join(tmp, 'a.img');
    expect(runBin('cfs-writer', ['--from-file', gen('bigdir', 'dump'), out]).code).toBe(0);
    expect(sha(fs.readFileSync(out))).toBe(expected('bigdir'));
    const out2 = path.join(tmp, 'b.img');
    expect(runBin('cfs-writer', ['--from-file', gen('bigdir', 'dump'), '-o', out2]).code).toBe(0);
    expect(sha(fs.readFileSync(out2))).toBe(expected('bigdir'));
    const r = runBin('cfs-writer', ['--from-file', gen('bigdir', 'dump')]);
    expect(r.code).toBe(0);
    expect(sha(r.stdout)).toBe(expected('bigdir'));
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
  it('reads the dump from stdin with -', () => {
    const r = runBin('cfs-writer', ['--from-file', '-', '-'], { input: fs.readFileSync(gen('hardlinks', 'dump')) });
    expect(r.code).toBe(0);
    expect(sha(r.stdout)).toBe(expected('hardlinks'));
  });
  it('prints the fs-verity digest of the image as mkcomposefs does', () => {
    const only = runBin('cfs-writer', ['--from-file', '--print-digest-only', gen('bigdir', 'dump')]);
    expect(only.code).toBe(0);
    expect(only.stdout.toString()).toBe(`${BIGDIR_IMAGE_DIGEST}\n`);
    const out = path.join(tmp, 'c.img');
    const both = runBin('cfs-writer', ['--from-file', '--print-digest', gen('bigdir', 'dump'), out]);
    expect(both.stdout.toString()).toBe(`${BIGDIR_IMAGE_DIGEST}\n`);
    expect(sha(fs.readFileSync(out))).toBe(expected('bigdir'));
    // with the image on stdout the digest goes to stderr
    const piped = runBin('cfs-writer', ['--from-file', '--print-digest', gen('bigdir', 'dump')]);
    expect(sha(piped.stdout)).toBe(expected('bigdir'));
    expect(piped.stderr).toBe(`${BIGDIR_IMAGE_DIGEST}\n`);
  });
  it('takes --min-version/--max-version like mkcomposefs', () => {
    const v0 = runBin('cfs-writer', ['--from-file', '--min-version=0', '--max-version=0', gen('whiteouts-v0', 'dump')]);
    expect(sha(v0.stdout)).toBe(expected('whiteouts-v0'));
    const v1 = runBin('cfs-writer', ['--from-file', '--min-version', '1', gen('no-whiteouts-v1', 'dump')]);
    expect(sha(v1.stdout)).toBe(expected('no-whiteouts-v1'));
    expect(runBin('cfs-writer', ['--from-file', '--max-version=2', gen('empty-root', 'dump')]).code).toBe(2);
  });
  it('uses strict parsing when CFS_PARSE_STRICT is set', () => {
    const input = path.join(VECTORS, 'upstream/no-newline.dump');
    expect(runBin('cfs-writer', ['--from-file', input], { env: { CFS_PARSE_STRICT: '1' } }).code).toBe(1);
    expect(runBin('cfs-writer', ['--from-file', input]).code).toBe(0);
  });
  it('fails on bad input with one line, exit 1, and leaves no output behind', () => {
    const out = path.join(tmp, 'never.img');
    const r = runBin('cfs-writer', ['--from-file', path.join(VECTORS, 'upstream/should-fail-dir-hardlink.dump'), out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cfs-writer: .*should-fail-dir-hardlink\.dump:\d+: CFS_DUMP_SYNTAX: Directories can't be hardlinked\n$/);
    expect(fs.existsSync(out)).toBe(false);
    // an existing output stays untouched
    fs.writeFileSync(out, 'keep');
    expect(runBin('cfs-writer', ['--from-file', path.join(VECTORS, 'upstream/should-fail-too-big.dump'), out]).code).toBe(1);
    expect(fs.readFileSync(out, 'utf8')).toBe('keep');
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const missing = runBin('cfs-writer', ['--from-file', path.join(tmp, 'nope.dump'), out]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nope\.dump: no such file or directory \(ENOENT\)\n$/);
    expect(missing.stderr).not.toMatch(/\n\s+at /);
  });
  it('rejects bad command lines with exit 2', () => {
    expect(runBin('cfs-writer', ['--from-file']).code).toBe(2);
    expect(runBin('cfs-writer', ['--skip-xattrs', '--user-xattrs', '.']).code).toBe(2);
    expect(runBin('cfs-writer', ['--bogus']).code).toBe(2);
    expect(runBin('cfs-writer', ['--from-file', '--print-digest-only', gen('bigdir', 'dump'), 'x.img']).code).toBe(2);
    expect(runBin('cfs-writer', ['--help']).code).toBe(0);
  });
  const hasScript = spawnSync('script', ['--version']).status === 0;
  it.runIf(hasScript)('refuses to write an image to a terminal', () => {
    const bin = path.resolve(__dirname, '../../bin/cfs-writer.js');
    const cmd = `${process.execPath} ${bin} --from-file ${gen('empty-root', 'dump')}; echo rc=$?`;
    const out = execFileSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'latin1' });
    expect(out).toMatch(/refusing to write the image to a terminal/);
    expect(out).toMatch(/rc=2/);
  });
  it.runIf(hasScript)('on a terminal, says when it syncs objects and encodes; quiet otherwise', () => {
    const tree = path.join(tmp, 'progress-tree');
    fs.mkdirSync(tree);
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(tree, `f${i}`), `content ${i} `.repeat(20));
    const store = path.join(tmp, 'progress-store');
    const bin = path.resolve(__dirname, '../../bin/cfs-writer.js');
    const out = execFileSync('script', ['-qec', `${process.execPath} ${bin} --snapshot --store ${store} ${tree}`, '/dev/null'], { encoding: 'latin1' });
    expect(out).toContain(`\r\x1b[Ksyncing: 20 files into ${store}`);
    expect(out).toContain('\r\x1b[Kencoding the image');
    expect(out).toMatch(/cfs-writer: 21 entries/);
    const quiet = runBin('cfs-writer', ['--snapshot', '--store', store, tree]);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).not.toMatch(/syncing|encoding/);
  });
});
