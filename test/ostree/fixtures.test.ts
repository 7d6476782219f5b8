/**
 * Real repos built by ostree itself (../shared/fixtures/ostree/make-repos.sh: archive, bare,
 * bare-user, bare-user-only, two commits each): every commit converts, `cfs-dump` of the image
 * matches the recorded `ostree ls` listings and file digests, mounting the image shows what
 * `ostree checkout` shows, and a killed batch run finishes when rerun. Needs root and ostree.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S_IFLNK, S_IFMT, S_IFREG, decodeImage, dumpToString } from '../../format/index.js';
import { Store, objectRelPath } from '../../cas/store.js';
import { kernelHas, mountComposefs, unmount } from '../../mount/kernel.js';
import { convertCommit } from '../../ostree-convert/convert.js';
import { Repo } from '../../ostree-convert/repo.js';
import { runBin } from '../cli/run.js';
import { SHARED } from '../support/vectors.js';

const FIXTURES = path.join(SHARED, 'fixtures', 'ostree');
const EXPECTED = path.join(FIXTURES, 'expected');
const MODES = ['archive', 'bare', 'bare-user', 'bare-user-only'] as const;
const BARE_MODES = MODES.filter((m) => m !== 'archive');
const hasOstree = spawnSync('ostree', ['--version']).status === 0;
const isRoot = process.getuid?.() === 0;
const reason = !isRoot ? 'not root (make-repos.sh chowns files)' : !hasOstree ? 'ostree is not installed' : null;
if (reason) console.log(`ostree fixture tests skipped: ${reason}`);
const mountReason = reason ?? (!kernelHas('erofs') || !kernelHas('overlay') ? 'kernel lacks erofs or overlay' : null);
if (!reason && mountReason) console.log(`ostree mount tests skipped: ${mountReason}`);

const commits = fs
  .readFileSync(path.join(EXPECTED, 'commits.tsv'), 'utf8')
  .trim()
  .split('\n')
  .map((l) => l.split('\t') as [string, string, string]);

/** What both sides describe of one path: type, permissions, owner, size, link target, xattrs, digest, payload. */
interface Entry {
  type: string;
  perm: number;
  uid: number;
  gid: number;
  size: number | null;
  target: string | null;
  xattrs: string;
  digest: string | null;
  payload: string | null;
}

const unescape = (s: string): string => s.replace(/\\x([0-9a-f]{2})|\\\\/g, (m, h: string | undefined) => (h ? String.fromCharCode(parseInt(h, 16)) : '\\'));
const utf8 = (latin1: string): string => Buffer.from(latin1, 'latin1').toString('utf8');
const hexOf = (latin1: string): string => Buffer.from(latin1, 'latin1').toString('hex');

/** cfs-dump of an image file (the bin) or image bytes (its library call). */
function dumpText(img: string | Buffer): string {
  if (typeof img !== 'string') return dumpToString(decodeImage(img).root);
  const r = runBin('cfs-dump', [img]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.toString('latin1');
}

/** Dump lines by path. Checks what every line must hold (mtime 0, never inline, nlink 1 for files). */
function fromDump(img: string | Buffer): Map<string, Entry> {
  const out = new Map<string, Entry>();
  for (const line of dumpText(img).trimEnd().split('\n')) {
    const [p, size, mode, nlink, uid, gid, rdev, mtime, payload, content, digest, ...xattrs] = line.split(' ');
    const m = parseInt(mode, 8);
    const type = (m & S_IFMT) === S_IFREG ? '-' : (m & S_IFMT) === S_IFLNK ? 'l' : 'd';
    expect(mtime, p).toBe('0.0');
    expect(rdev).toBe('0');
    expect(content, `${p}: never inline`).toBe('-');
    if (type !== 'd') expect(nlink, `${p}: no hardlinks`).toBe('1');
    out.set(utf8(unescape(p)), {
      type,
      perm: m & 0o7777,
      uid: Number(uid),
      gid: Number(gid),
      size: type === '-' ? Number(size) : null,
      target: type === 'l' ? utf8(unescape(payload)) : null,
      xattrs: xattrs
        .map((x) => {
          const [k, v] = unescape(x).split(/=(.*)/s);
          return `${k}=${hexOf(v)}`;
        })
        .sort()
        .join(' '),
      digest: digest === '-' ? null : digest,
      payload: type === '-' && payload !== '-' ? unescape(payload) : null,
    });
  }
  return out;
}

/** The recorded `ostree ls -R -X -C` listing and files-V.tsv, as Entries for payload mode `payloads`. */
function expected(mode: string, v: string, payloads: 'base-objects' | 'store'): Map<string, Entry> {
  const digests = new Map<string, string>();
  for (const l of fs.readFileSync(path.join(EXPECTED, `files-${v}.tsv`), 'utf8').trim().split('\n').slice(1)) {
    const f = l.split('\t');
    digests.set(f[0], f[3]);
  }
  const out = new Map<string, Entry>();
  const re = /^([-dl])(\d{5}) (\d+) (\d+) +(\d+) ([0-9a-f]{64})(?: [0-9a-f]{64})? \{ (.*) \} (\/.*?)(?: -> (.*))?$/;
  for (const line of fs.readFileSync(path.join(EXPECTED, `ls-${mode}-${v}.txt`), 'utf8').trimEnd().split('\n')) {
    const m = re.exec(line);
    if (!m) throw new Error(`unparsed ls line: ${line}`);
    const [, type, perm, uid, gid, size, checksum, xattrText, p, target] = m;
    const xattrs = [...xattrText.matchAll(/\(b'([^']*)', (?:\[(?:byte )?([^\]]*)\]|b'([^']*)')\)/g)].map(([, k, list, str]) => {
      const v = list !== undefined ? list.split(', ').filter(Boolean).map((h) => h.replace(/^0x/, '')).join('') : Buffer.from(str + '\0').toString('hex');
      return `${k}=${v}`;
    });
    const n = Number(size);
    const digest = type === '-' && n > 0 ? digests.get(p)! : null;
    out.set(p, {
      type,
      perm: parseInt(perm, 8),
      uid: Number(uid),
      gid: Number(gid),
      size: type === '-' ? n : null,
      target: target ?? null,
      xattrs: xattrs.sort().join(' '),
      digest,
      payload: digest === null ? null : payloads === 'store' ? objectRelPath(digest) : `${checksum.slice(0, 2)}/${checksum.slice(2)}.file`,
    });
  }
  return out;
}

/** Everything a user sees of a mounted tree: type, mode, owner, size (not of directories), link target, user xattrs, content hash. */
function listing(root: string): string {
  const sh = (script: string): string => execFileSync('sh', ['-c', script, 'sh', root], { encoding: 'latin1', maxBuffer: 1 << 28 });
  const entries = sh('cd "$1" && find . -mindepth 1 -printf "%p %y %m %U:%G %s %l\\n" | LC_ALL=C sort').replace(/^(.* d \S+ \S+) \d+ /gm, '$1 - ');
  const hashes = sh('cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum');
  const xattrs = sh('cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m "^user\\." 2>/dev/null || true');
  return `${entries}\n${hashes}\n${xattrs}`;
}

describe.runIf(!reason)('cfs-ostree-convert on repos made by ostree', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-ostree-'));
  const repos = path.join(tmp, 'repos');
  const repo = (mode: string): string => path.join(repos, `repo-${mode}`);
  beforeAll(() => {
    const r = spawnSync('bash', [path.join(FIXTURES, 'make-repos.sh'), repos], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    // make-repos.sh promises the same checksums on every run
    expect(fs.readFileSync(path.join(repos, 'commits.tsv'), 'utf8')).toBe(fs.readFileSync(path.join(EXPECTED, 'commits.tsv'), 'utf8'));
  });
  const stores = new Map<string, Store>();
  afterAll(() => {
    for (const st of stores.values()) st.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  /** Convert in-process (the CLI is exercised by the first case and the batch tests). */
  const convert = async (mode: string, commit: string, o: { store?: string; deployment?: boolean; dropSelinux?: boolean } = {}): Promise<Buffer> => {
    let store: Store | undefined;
    if (o.store) {
      store = stores.get(o.store) ?? Store.open(o.store, { create: true });
      stores.set(o.store, store);
    }
    const r = await convertCommit(Repo.open(repo(mode)), commit, { payloads: store ? 'store' : 'base-objects', store, name: store ? `ostree-${commit}` : undefined, deployment: o.deployment, dropSelinux: o.dropSelinux });
    return r.image;
  };

  it('cfs-ostree-convert and cfs-dump (the bins): the dump matches the ostree listing', () => {
    const [mode, v, commit] = commits.find(([m, v]) => m === 'bare-user' && v === 'v2')!;
    const img = path.join(tmp, 'cli.img');
    const r = runBin('cfs-ostree-convert', ['--repo', repo(mode), '--base-objects', 'fixtures/main', img]);
    expect(r.code, r.stderr).toBe(0);
    expect(fromDump(img)).toEqual(expected(mode, v, 'base-objects'));
    expect(fs.readFileSync(img)).toEqual(runBin('cfs-ostree-convert', ['--repo', repo(mode), commit]).stdout);
  });

  it.each(commits.filter(([m]) => m !== 'archive'))('%s %s with --base-objects: the dump matches the ostree listing', async (mode, v, commit) => {
    expect(fromDump(await convert(mode, commit))).toEqual(expected(mode, v, 'base-objects'));
  });

  it.each(commits)('%s %s with --store: the dump matches, the store has every object', async (mode, v, commit) => {
    const store = path.join(tmp, `store-${mode}`);
    const img = await convert(mode, commit, { store });
    const dump = fromDump(img);
    expect(dump).toEqual(expected(mode, v, 'store'));
    for (const e of dump.values()) if (e.payload) expect(fs.existsSync(path.join(store, 'objects', e.payload)), e.payload).toBe(true);
    // registered under ostree-COMMIT, byte-identical to the image file
    const ref = fs.readlinkSync(path.join(store, 'refs', `ostree-${commit}`));
    expect(fs.readFileSync(path.join(store, 'refs', ref))).toEqual(img);
  });

  it('the same commit gives the same image from archive, bare and bare-user repos; --deployment and --drop-selinux', async () => {
    const [, , commit] = commits.find(([m, v]) => m === 'bare' && v === 'v2')!;
    const images: Buffer[] = [];
    for (const mode of ['archive', 'bare', 'bare-user']) images.push(await convert(mode, commit, { store: path.join(tmp, 'store-same') }));
    expect(images[1]).toEqual(images[0]);
    expect(images[2]).toEqual(images[0]);
    const a = fromDump(await convert('bare', commit));
    const b = fromDump(await convert('bare', commit, { deployment: true, dropSelinux: true }));
    for (const d of ['/usr', '/etc', '/boot', '/var', '/sysroot']) {
      expect(a.has(d)).toBe(false);
      expect(b.get(d)).toEqual({ type: 'd', perm: 0o755, uid: 0, gid: 0, size: null, target: null, xattrs: '', digest: null, payload: null });
      b.delete(d);
    }
    expect(b).toEqual(a);
  });

  it('resolves refs and checksum prefixes; v2 adds only its changed objects to the store', () => {
    const [, , v1] = commits.find(([m, v]) => m === 'archive' && v === 'v1')!;
    const [, , v2] = commits.find(([m, v]) => m === 'archive' && v === 'v2')!;
    const store = path.join(tmp, 'store-dedup');
    const out = path.join(tmp, 'out-dedup');
    const r = runBin('cfs-ostree-convert', ['--repo', repo('archive'), '--store', store, '--out', out, v1.slice(0, 10), 'fixtures/main']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { commit: string; refs: string[]; status: string; objects: { unique: number; new: number; dedup: number } });
    expect(lines.map((l) => [l.commit, l.refs, l.status])).toEqual([
      [v1, [v1.slice(0, 10)], 'converted'],
      [v2, ['fixtures/main'], 'converted'],
    ]);
    expect(lines[0].objects.new).toBeGreaterThan(15);
    // v2 changes the content of hello.txt and adds added/new.bin; mode and xattr changes reuse objects
    expect(lines[1].objects.new).toBe(2);
    expect(lines[1].objects.dedup).toBe(lines[1].objects.unique - 2);
  });

  it('a batch killed midway finishes when rerun: every image complete, none twice, no temp files', async () => {
    // A repo with several branches, each with 16 MiB of its own content, so a kill lands midway.
    const r = repo('batch');
    execFileSync('ostree', ['init', `--repo=${r}`, '--mode=bare-user']);
    for (let i = 0; i < 5; i++) {
      const src = path.join(tmp, `batch-src-${i}`);
      fs.cpSync(path.join(repos, 'src', 'v1'), src, { recursive: true });
      fs.writeFileSync(path.join(src, 'data.bin'), Buffer.alloc(16 << 20, i + 1));
      execFileSync('ostree', ['commit', `--repo=${r}`, `--branch=b${i}`, '--fsync=false', '--timestamp=@0', '--subject=batch', src], { stdio: 'ignore' });
    }
    const out = path.join(tmp, 'batch-out');
    const args = [path.join(process.cwd(), 'bin', 'cfs-ostree-convert.js'), '--repo', r, '--all-refs', '--out', out];
    const child = spawn(process.execPath, args, { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        const done = fs.existsSync(out) ? fs.readdirSync(out).filter((f) => f.endsWith('.img')).length : 0;
        if (done >= 2 || child.exitCode !== null) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 5);
    });
    await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)));
    const before = fs.readdirSync(out).filter((f) => f.endsWith('.img'));
    expect(before.length).toBeLessThan(5); // the kill landed midway
    const rerun = runBin('cfs-ostree-convert', args.slice(1));
    expect(rerun.code, rerun.stderr).toBe(0);
    const lines = rerun.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { commit: string; status: string; refs: string[] });
    expect(lines).toHaveLength(5);
    expect(lines.filter((l) => l.status === 'skipped').map((l) => `${l.commit}.img`).sort()).toEqual(before.sort());
    expect(lines.filter((l) => l.status === 'converted')).toHaveLength(5 - before.length);
    expect(fs.readdirSync(out).sort()).toEqual(lines.map((l) => `${l.commit}.img`).sort());
    // each image is the one a single conversion makes
    for (const l of lines) {
      const single = await convert('batch', l.commit);
      expect(fs.readFileSync(path.join(out, `${l.commit}.img`)).equals(single), l.commit).toBe(true);
    }
    const again = runBin('cfs-ostree-convert', args.slice(1));
    expect(again.code).toBe(0);
    expect(again.stdout.toString().trim().split('\n').every((l) => (JSON.parse(l) as { status: string }).status === 'skipped')).toBe(true);
  });

  describe.runIf(!mountReason)('mounted', () => {
    const mnt = path.join(tmp, 'mnt');
    afterAll(() => {
      spawnSync('umount', [mnt]);
    });
    it.each(commits.map(([m, v, c]) => [m, v, m === 'archive' ? 'store' : 'base-objects', c] as const).concat([['bare-user', 'v2', 'store', commits.find(([m, v]) => m === 'bare-user' && v === 'v2')![2]]]))(
      '%s %s (%s payloads) shows what ostree checkout shows',
      async (mode, v, payloads, commit) => {
        fs.mkdirSync(mnt, { recursive: true });
        const img = path.join(tmp, `mount-${mode}-${v}-${payloads}.img`);
        const store = path.join(tmp, `mount-store-${mode}`);
        fs.writeFileSync(img, await convert(mode, commit, payloads === 'store' ? { store } : {}));
        const checkout = path.join(tmp, `checkout-${mode}-${v}-${payloads}`);
        execFileSync('ostree', ['checkout', `--repo=${repo(mode)}`, commit, checkout]);
        const basedirs = [payloads === 'store' ? path.join(store, 'objects') : path.join(repo(mode), 'objects')];
        mountComposefs({ image: img, basedirs, verity: false, readOnly: true, legacy: false }, mnt, { check: true });
        try {
          expect(listing(mnt)).toBe(listing(checkout));
        } finally {
          unmount(mnt);
        }
      },
    );
  });
});
