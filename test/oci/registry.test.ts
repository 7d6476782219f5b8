/**
 * Pull and push through a real registry: Debian's docker-registry on 127.0.0.1 (a temp storage
 * dir, a free port), images built here from tar-stream layers and published with our client.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, imageNeeds } from '../../cas/store.js';
import { importTar } from '../../cas/tar.js';
import { type LayerCompression, type RunningRegistry, freePort, pushTarImage, registryMissing, startRegistry } from '../../test-support/registry.js';
import { type TarEntry, bytes, makeTar } from '../cas/helpers.js';
import { cas, objectSet, run, startProxy, visible } from './helpers.js';

const reason = registryMissing();
if (reason) console.log(`registry tests skipped: ${reason}`);
const hasZstd = !spawnSync('zstd', ['--version']).error;
if (!hasZstd) console.log('zstd(1) not found: the zstd layer is pushed gzip-compressed instead');

const t = (s: number): Date => new Date(s * 1000);
const dir = (name: string, mtime: number, mode = 0o755): TarEntry => ({ header: { name, type: 'directory', mode, mtime: t(mtime) } });
const file = (name: string, data: Buffer | string, mtime = 100, mode = 0o644): TarEntry => ({ header: { name, mode, mtime: t(mtime) }, data });
const link = (name: string, target: string): TarEntry => ({ header: { name, type: 'link', linkname: target, mtime: t(100) } });
const symlink = (name: string, target: string): TarEntry => ({ header: { name, type: 'symlink', linkname: target, mtime: t(100) } });
const whiteout = (name: string): TarEntry => file(name, '', 100);

const passwd1 = bytes(1, 100);
const passwd2 = bytes(2, 150);
const tool = bytes(3, 5000);
const x = bytes(4, 100);

const L1: TarEntry[] = [
  dir('etc', 10), file('etc/passwd', passwd1), file('etc/hosts', 'localhost\n'), file('etc/gone', bytes(5, 200)), symlink('etc/link', 'passwd'),
  dir('usr', 10), dir('usr/bin', 10), file('usr/bin/tool', tool, 100, 0o755), link('usr/bin/tool-link', 'usr/bin/tool'),
  dir('opq', 10, 0o700), file('opq/old1', bytes(6, 300)), dir('opq/sub', 10), file('opq/sub/old2', 'small'),
  dir('olddir', 10), file('olddir/f', bytes(7, 100)),
];
const L2: TarEntry[] = [
  dir('etc', 20), whiteout('etc/.wh.gone'), file('etc/passwd', passwd2),
  dir('opq', 20, 0o750), whiteout('opq/.wh..wh..opq'), file('opq/new', bytes(8, 400)),
  whiteout('.wh.olddir'),
  dir('usr', 10), dir('usr/bin', 20), file('usr/bin/x', x), link('usr/bin/x-link', 'usr/bin/x'),
];
const L3: TarEntry[] = [
  dir('etc', 30), whiteout('etc/.wh.link'),
  dir('olddir', 30), file('olddir/g', bytes(9, 1000)),
  dir('usr', 10), dir('usr/bin', 30), whiteout('usr/bin/.wh.tool-link'),
];
/** The merged tree as one archive, each directory with the metadata of its topmost entry. */
const MERGED: TarEntry[] = [
  dir('etc', 30), file('etc/passwd', passwd2), file('etc/hosts', 'localhost\n'),
  dir('usr', 10), dir('usr/bin', 30), file('usr/bin/tool', tool, 100, 0o755), file('usr/bin/x', x), link('usr/bin/x-link', 'usr/bin/x'),
  dir('opq', 20, 0o750), file('opq/new', bytes(8, 400)),
  dir('olddir', 30), file('olddir/g', bytes(9, 1000)),
];

describe.skipIf(reason !== null)('registry', () => {
  let reg: RunningRegistry;
  let layers: { tar: Buffer; compression: LayerCompression }[];
  /** A store with app:v1 pulled, pushed as app-cfs:v1 (small packs) and one-pack:v1. */
  let a: string;
  /** Every test's stores live under here, removed after the last test. */
  let root: string;
  const tmpDir = (): string => fs.mkdtempSync(path.join(root, 't-'));
  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-oci-'));
    reg = await startRegistry();
    layers = [
      { tar: await makeTar(L1), compression: 'none' },
      { tar: await makeTar(L2), compression: 'gzip' },
      { tar: await makeTar(L3), compression: hasZstd ? 'zstd' : 'gzip' },
    ];
    await pushTarImage(`${reg.host}/test/app:v1`, layers, { index: true });
    a = path.join(tmpDir(), 'store');
    for (const args of [
      ['pull', '--plain-http', `${reg.host}/test/app:v1`],
      ['push', '--plain-http', '--pack-size', '1000', 'app:v1', `${reg.host}/test/app-cfs:v1`],
      ['push', '--plain-http', 'app:v1', `${reg.host}/test/one-pack:v1`],
    ]) {
      const r = await cas(a, args);
      if (r.code !== 0) throw new Error(`cfs-cas ${args[0]}: ${r.stderr}`);
    }
  });
  afterAll(async () => {
    await reg?.stop();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  const newStore = (): string => path.join(tmpDir(), 'store');
  const imageOf = (store: string, ref: string): Buffer => fs.readFileSync(path.join(store, 'refs', ref));

  it('pulls a multi-layer image: whiteouts, an opaque dir and hardlinks give the merged tree', async () => {
    const store = newStore();
    const r = await cas(store, ['pull', '--plain-http', '--json', `${reg.host}/test/app:v1`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as { name: string; image: string; blobs: { fetched: boolean }[] };
    expect(res.name).toBe('app:v1');
    expect(res.blobs.map((b) => b.fetched)).toEqual([true, true, true]);

    // The expected tree, imported from one archive, gives the identical image.
    const expected = Store.open(path.join(tmpDir(), 'expected'), { create: true });
    const want = await importTar(expected, Readable.from([await makeTar(MERGED)]), { input: 'merged' });
    expected.close();
    expect(res.image).toBe(want.image);
    const dump = (await run(process.execPath, ['bin/cfs-dump.js', 'ls', path.join(store, 'refs', 'app:v1')])).stdout;
    expect(dump).not.toMatch(/gone|etc\/link|tool-link|old1|old2|olddir\/f|\.wh\./);
    expect(dump).toMatch(/usr\/bin\/x-link/);

    // Every object the image needs is there, with the right bytes.
    expect((await cas(store, ['missing', 'app:v1'])).code).toBe(0);
    const objs = objectSet(store);
    expect(objs.size).toBeGreaterThan(0);

    // Pulled again: every layer is already in the store, nothing is transferred.
    const again = JSON.parse((await cas(store, ['pull', '--plain-http', '--json', `${reg.host}/test/app:v1`])).stdout) as { image: string; transferredBytes: number };
    expect(again.image).toBe(res.image);
    expect(again.transferredBytes).toBe(0);
  });

  it('a Docker schema 2 manifest list with gzip layers gives the same image', async () => {
    await pushTarImage(`${reg.host}/test/docker:v1`, layers.map((l) => ({ tar: l.tar, compression: 'gzip' as const })), { index: true, docker: true });
    const store = newStore();
    const r = await cas(store, ['pull', '--plain-http', `${reg.host}/test/docker:v1`]);
    expect(r.code).toBe(0);
    expect(imageOf(store, 'docker:v1').equals(imageOf(a, 'app:v1'))).toBe(true);
    const other = await cas(store, ['pull', '--plain-http', '--platform', 'linux/s390x', `${reg.host}/test/docker:v1`]);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/no manifest for linux\/s390x in the index \(has: linux\/arm64, linux\/amd64\)/);
  });

  it('a second image sharing layers fetches only its new layer', async () => {
    const store = newStore();
    fs.cpSync(a, store, { recursive: true });
    const top = await makeTar([dir('etc', 40), file('etc/extra', bytes(10, 3000))]);
    await pushTarImage(`${reg.host}/test/app:v2`, [layers[0], layers[1], { tar: top, compression: 'gzip' }]);
    const r = await cas(store, ['pull', '--plain-http', '--json', `${reg.host}/test/app:v2`]);
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as { blobs: { fetched: boolean; size: number }[]; transferredBytes: number; newObjects: number };
    expect(res.blobs.map((b) => b.fetched)).toEqual([false, false, true]);
    expect(res.transferredBytes).toBe(res.blobs[2].size);
    expect(res.newObjects).toBe(1);
  });

  it('an interrupted pull resumes: the layers it finished are not fetched again', async () => {
    let blobGets = 0;
    // The config is the first blob, then layers 1, 2, 3: break layer 3.
    const proxy = await startProxy(reg.host, { corrupt: () => ++blobGets === 4 });
    const store = newStore();
    try {
      const r = await cas(store, ['pull', '--plain-http', `${proxy.host}/test/app:v1`]);
      expect(r.stderr).toMatch(/digest mismatch/);
      expect(r.code).toBe(1);
      expect(fs.readdirSync(path.join(store, 'refs'))).toEqual([]);
    } finally {
      await proxy.stop();
    }
    const again = await cas(store, ['pull', '--plain-http', '--json', `${reg.host}/test/app:v1`]);
    expect(JSON.parse(again.stdout).blobs.map((b: { fetched: boolean }) => b.fetched)).toEqual([false, false, true]);
    expect(imageOf(store, 'app:v1').equals(imageOf(a, 'app:v1'))).toBe(true);
  });

  it.skipIf(spawnSync('script', ['--version']).status !== 0)('shows progress per layer on a terminal', async () => {
    const store = newStore();
    const cmd = `${process.execPath} bin/cfs-cas.js --store ${store} pull --plain-http ${reg.host}/test/app:v1`;
    const out = (await run('script', ['-qec', cmd, '/dev/null'], { REGISTRY_AUTH_FILE: '/nonexistent' })).stdout;
    for (const n of [1, 2, 3]) expect(out).toMatch(new RegExp(`layer ${n}/3 [0-9a-f]{12} done \\(\\d+ new objects\\)`));
  });

  it('push → pull into an empty store gives the identical image and objects; --lazy + fetch-missing too', async () => {
    const p = await cas(a, ['push', '--plain-http', '--pack-size', '1000', 'app:v1', `${reg.host}/test/app-cfs:v1`]);
    expect(p.stderr).toMatch(/5 objects in 5 packs; uploaded 0 blobs/);
    expect(p.code).toBe(0);
    // What the image needs (the layers also brought objects of files deleted above them).
    const needed = new Set(imageNeeds(imageOf(a, 'app:v1')).objects);
    const want = new Map([...objectSet(a)].filter(([d]) => needed.has(d)));
    expect(want.size).toBe(5);

    const b = newStore();
    const r = await cas(b, ['pull', '--plain-http', '--name', 'copy', `${reg.host}/test/app-cfs:v1`]);
    expect(r.code).toBe(0);
    expect(imageOf(b, 'copy').equals(imageOf(a, 'app:v1'))).toBe(true);
    expect(objectSet(b)).toEqual(want);

    const c = newStore();
    const lazy = await cas(c, ['pull', '--plain-http', '--lazy', '--json', `${reg.host}/test/app-cfs:v1`]);
    expect(lazy.code).toBe(0);
    expect(JSON.parse(lazy.stdout).missing).toBe(want.size);
    expect(imageOf(c, 'app-cfs:v1').equals(imageOf(a, 'app:v1'))).toBe(true);
    expect(fs.readdirSync(path.join(c, 'objects'))).toEqual([]);
    const f = await cas(c, ['fetch-missing', '--json', 'app-cfs:v1']);
    expect(f.code).toBe(0);
    expect(JSON.parse(f.stdout).fetched).toBe(want.size);
    expect(objectSet(c)).toEqual(want);

  });

  it('pushing a changed image uploads only the packs around the change', async () => {
    const s = newStore();
    const files = (changed: number): TarEntry[] => [dir('d', 10), ...Array.from({ length: 40 }, (_, i) => file(`d/f${String(i).padStart(2, '0')}`, bytes(i === changed ? 1000 : 100 + i, 1000)))];
    const st = Store.open(s, { create: true });
    for (const [name, changed] of [['v1', -1], ['v2', 17]] as const) await importTar(st, Readable.from([await makeTar(files(changed))]), { name, input: name });
    st.close();
    const push = async (name: string): Promise<{ packs: number; uploaded: number }> =>
      JSON.parse((await cas(s, ['push', '--plain-http', '--json', '--pack-size', '5000', name, `${reg.host}/test/changed:${name}`])).stdout);
    const v1 = await push('v1');
    expect(v1.packs).toBeGreaterThanOrEqual(4);
    expect(v1.uploaded).toBe(v1.packs + 2); // packs, image, index
    const v2 = await push('v2');
    expect(v2.uploaded - 2).toBeGreaterThanOrEqual(1);
    expect(v2.uploaded - 2).toBeLessThanOrEqual(2); // the changed pack (and a neighbour if a boundary moved)
  });

  it('fetch-missing reads single objects with Range requests when few of a pack are missing', async () => {
    // Through a proxy that drops Range headers as well: the whole blob comes, the slice is taken.
    const noRange = await startProxy(reg.host, { dropRange: true });
    try {
      for (const host of [reg.host, noRange.host]) {
        const c = newStore();
        await cas(c, ['pull', '--plain-http', '--lazy', `${host}/test/one-pack:v1`]);
        // Give the store all objects but two: those come as two ranged reads of the one pack.
        const all = imageNeeds(imageOf(a, 'app:v1')).objects;
        for (const d of all.slice(2)) {
          fs.mkdirSync(path.join(c, 'objects', d.slice(0, 2)), { recursive: true });
          fs.copyFileSync(path.join(a, 'objects', d.slice(0, 2), d.slice(2)), path.join(c, 'objects', d.slice(0, 2), d.slice(2)));
        }
        const f = await cas(c, ['fetch-missing', '--json', 'one-pack:v1']);
        expect(f.stderr).toBe('');
        expect(JSON.parse(f.stdout)).toMatchObject({ fetched: 2, requests: 2 });
        expect(objectSet(c)).toEqual(new Map([...objectSet(a)].filter(([d]) => all.includes(d))));
      }
      expect(noRange.urls.filter((u) => u.startsWith('GET') && u.includes('/blobs/'))).toHaveLength(4); // index, image, 2 objects
    } finally {
      await noRange.stop();
    }
  });

  it('corrupted blob bytes are detected and nothing is kept', async () => {
    const proxy = await startProxy(reg.host, { corrupt: () => true });
    try {
      const s = newStore();
      for (const ref of [`${proxy.host}/test/app:v1`, `${proxy.host}/test/app-cfs:v1`]) {
        const r = await cas(s, ['pull', '--plain-http', ref]);
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(/digest mismatch/);
        expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
        expect(visible(s)).toEqual([]);
      }
    } finally {
      await proxy.stop();
    }
    // Only the object packs corrupted: the lazy image is fine, fetch-missing keeps nothing.
    const image = fs.readFileSync(path.join(a, 'refs', 'app:v1'));
    const packsOnly = await startProxy(reg.host, { corrupt: () => true });
    const lazyStore = newStore();
    try {
      const imgProxy = await startProxy(reg.host, {});
      expect((await cas(lazyStore, ['pull', '--plain-http', '--lazy', `${imgProxy.host}/test/one-pack:v1`])).code).toBe(0);
      await imgProxy.stop();
      const rec = path.join(lazyStore, 'oci', 'images');
      const [json] = fs.readdirSync(rec);
      const meta = JSON.parse(fs.readFileSync(path.join(rec, json), 'utf8'));
      meta.endpoint = packsOnly.host; // now served through the corrupting proxy
      fs.writeFileSync(path.join(rec, json), JSON.stringify(meta));
      const before = visible(lazyStore);
      const f = await cas(lazyStore, ['fetch-missing', 'one-pack:v1']);
      expect(f.code).toBe(1);
      expect(f.stderr).toMatch(/digest mismatch/);
      expect(visible(lazyStore)).toEqual(before);
      expect(fs.readFileSync(path.join(lazyStore, 'refs', 'one-pack:v1')).equals(image)).toBe(true);
    } finally {
      await packsOnly.stop();
    }
  });

  it('bearer-token and basic auth with credentials from REGISTRY_AUTH_FILE or DOCKER_CONFIG; clear errors without them', async () => {
    const proxy = await startProxy(reg.host, { bearer: { user: 'alice', password: 's3cret' } });
    try {
      const s = newStore();
      const auth = path.join(tmpDir(), 'auth.json');
      const ref = `${proxy.host}/test/app:v1`;
      const none = await cas(s, ['pull', '--plain-http', ref]);
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/authentication failed \(HTTP 401; no credentials for 127\.0\.0\.1:\d+ in /);
      fs.writeFileSync(auth, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:wrong').toString('base64') } } }));
      const wrong = await cas(s, ['pull', '--plain-http', ref], { REGISTRY_AUTH_FILE: auth });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/authentication failed \(HTTP 401; as alice\)/);
      expect(visible(s)).toEqual([]);
      fs.writeFileSync(auth, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
      const ok = await cas(s, ['pull', '--plain-http', ref], { REGISTRY_AUTH_FILE: auth });
      expect(ok.stderr).toMatch(/3 of 3 layers fetched/);
      expect(ok.code).toBe(0);
      expect(proxy.urls.some((u) => u.startsWith('GET /token?') && u.includes('scope=repository%3Atest%2Fapp%3Apull'))).toBe(true);
    } finally {
      await proxy.stop();
    }
    // A registry that asks for Basic auth (htpasswd) gets the same credentials.
    const basic = await startProxy(reg.host, { basic: { user: 'alice', password: 's3cret' } });
    try {
      const s = newStore();
      const auth = path.join(tmpDir(), 'config.json');
      fs.writeFileSync(auth, JSON.stringify({ auths: { [basic.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
      const ok = await cas(s, ['pull', '--plain-http', `${basic.host}/test/app:v1`], { REGISTRY_AUTH_FILE: undefined, DOCKER_CONFIG: path.dirname(auth) });
      expect(ok.stderr).toMatch(/3 of 3 layers fetched/);
      expect(ok.code).toBe(0);
    } finally {
      await basic.stop();
    }
  });

  it.skipIf(spawnSync('openssl', ['version']).error !== undefined)('HTTPS: push and pull with a trusted certificate; a clear error with an untrusted one', async () => {
    const tlsReg = await startRegistry({ tls: true });
    try {
      const trust = { NODE_EXTRA_CA_CERTS: tlsReg.cert };
      const ref = `${tlsReg.host}/test/app-cfs:v1`;
      const p = await cas(a, ['push', 'app:v1', ref], trust);
      expect(p.stderr).toMatch(/uploaded \d+ blobs/);
      expect(p.code).toBe(0);
      const s = newStore();
      const untrusted = await cas(s, ['pull', ref]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toMatch(new RegExp(`^cfs-cas: ${tlsReg.host}/test/app-cfs: CFS_IO: cannot reach ${tlsReg.host}: .*certificate`));
      const ok = await cas(s, ['pull', ref], trust);
      expect(ok.code).toBe(0);
      expect(imageOf(s, 'app-cfs:v1').equals(imageOf(a, 'app:v1'))).toBe(true);
    } finally {
      await tlsReg.stop();
    }
  });

  it('clear errors: missing manifest, unreachable registry, --lazy on a container image', async () => {
    const s = newStore();
    const missing = await cas(s, ['pull', '--plain-http', `${reg.host}/test/nope:v1`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`cfs-cas: ${reg.host}/test/nope:v1: CFS_IO: manifest not found (HTTP 404)\n`);
    const port = await freePort();
    const down = await cas(s, ['pull', '--plain-http', `127.0.0.1:${port}/test/app:v1`]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(new RegExp(`^cfs-cas: 127\\.0\\.0\\.1:${port}/test/app: CFS_IO: cannot reach 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    const lazy = await cas(s, ['pull', '--plain-http', '--lazy', `${reg.host}/test/app:v1`]);
    expect(lazy.code).toBe(2);
    expect(lazy.stderr).toMatch(/--lazy needs a composefs artifact/);
    const badRef = await cas(s, ['pull', 'Not/A/Valid:Ref:x']);
    expect(badRef.code).toBe(2);
    expect(visible(s)).toEqual([]);
  });
});
