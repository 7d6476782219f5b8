import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fsck, gc, missingObjects } from '../../cas/gc.js';
import { Store, objectRelPath } from '../../cas/store.js';
import { importTar } from '../../cas/tar.js';
import { bytes, chunks, makeTar, tmpStore } from './helpers.js';

const shared = bytes(10, 50_000);

async function twoImages(store: Store): Promise<{ a: string; b: string; sharedDigest: string; onlyA: string }> {
  const ta = await makeTar([
    { header: { name: 'shared', type: 'file' }, data: shared },
    { header: { name: 'only-a', type: 'file' }, data: bytes(11, 70_000) },
  ]);
  const tb = await makeTar([
    { header: { name: 'shared', type: 'file' }, data: shared },
    { header: { name: 'only-b', type: 'file' }, data: bytes(12, 30_000) },
  ]);
  const a = (await importTar(store, chunks(ta, 1 << 16), { name: 'a', input: 'a.tar' })).image;
  const b = (await importTar(store, chunks(tb, 1 << 16), { name: 'b', input: 'b.tar' })).image;
  const sharedDigest = store.putBuffer(shared).digest;
  const onlyA = store.putBuffer(bytes(11, 70_000)).digest;
  return { a, b, sharedDigest, onlyA };
}

/** Make everything in the store look old, beyond any grace period used here. */
function age(store: Store): void {
  const old = new Date(Date.now() - 86_400_000);
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      fs.lutimesSync(p, old, old);
      if (fs.lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(store.root);
}

describe('gc', () => {
  it('keeps what refs need, sweeps the rest, honours --dry-run and the grace period', async () => {
    const store = tmpStore();
    const { a, b, sharedDigest, onlyA } = await twoImages(store);
    const loose = store.putBuffer(bytes(13, 9000)).digest;
    age(store);
    expect(gc(store, { graceSeconds: 60 })).toMatchObject({ images: [], objects: [loose] });
    expect(store.has(loose)).toBe(false);

    store.removeRef('a');
    const dry = gc(store, { dryRun: true, graceSeconds: 60 });
    expect(dry.images).toEqual([a]);
    expect(dry.objects).toEqual([onlyA]);
    expect(store.has(onlyA)).toBe(true);

    // Young objects and images survive even unreferenced.
    const young = store.putBuffer(bytes(14, 9000)).digest;
    const r = gc(store, { graceSeconds: 60 });
    expect(r.images).toEqual([a]);
    expect(r.objects).toEqual([onlyA]);
    expect(store.has(young) && store.has(sharedDigest)).toBe(true);
    expect(missingObjects(store, 'b')).toEqual([]);
    expect(fs.existsSync(path.join(store.imagesDir, b))).toBe(true);
    expect(fsck(store).problems).toEqual([]);
    store.close();
  });

  it('a reused object gets a fresh mtime, so the grace period covers it', async () => {
    const store = tmpStore();
    const d = store.putBuffer(bytes(15, 5000)).digest;
    age(store);
    expect(store.putBuffer(bytes(15, 5000)).added).toBe(false);
    expect(gc(store, { graceSeconds: 60 }).objects).toEqual([]);
    store.close();
    void d;
  });
});

describe('fsck', () => {
  it('finds truncated and altered objects, litter and dangling refs; repair quarantines', async () => {
    const store = tmpStore();
    const { a, b, sharedDigest, onlyA } = await twoImages(store);
    expect(fsck(store)).toMatchObject({ problems: [], litter: [] });

    const sharedPath = path.join(store.objectsDir, objectRelPath(sharedDigest));
    const onlyAPath = path.join(store.objectsDir, objectRelPath(onlyA));
    fs.truncateSync(sharedPath, 4096);
    const data = fs.readFileSync(onlyAPath);
    data[12345] ^= 1;
    fs.writeFileSync(onlyAPath, data);
    fs.writeFileSync(path.join(path.dirname(sharedPath), '.tmp-123-x-0'), 'partial');
    fs.symlinkSync('../images/' + 'e'.repeat(64), path.join(store.refsDir, 'gone'));

    const r = fsck(store);
    const byPath = new Map(r.problems.map((p) => [p.path, p]));
    expect(byPath.get(sharedPath)).toMatchObject({ kind: 'bad-object', images: [a, b].sort() });
    expect(byPath.get(sharedPath)!.message).toMatch(/truncated or altered/);
    expect(byPath.get(onlyAPath)).toMatchObject({ kind: 'bad-object', images: [a] });
    expect(byPath.get(path.join(store.refsDir, 'gone'))).toMatchObject({ kind: 'dangling-ref' });
    expect(r.litter).toEqual([path.join(path.dirname(sharedPath), '.tmp-123-x-0')]);

    const fixed = fsck(store, { repair: true });
    expect(fixed.repaired.filter((x) => x.startsWith('quarantined'))).toHaveLength(2);
    expect(fs.readdirSync(path.join(store.root, 'quarantine'))).toHaveLength(2);
    const after = fsck(store);
    expect(after.litter).toEqual([]);
    expect(after.problems.filter((p) => p.kind === 'missing-object').map((p) => p.path).sort()).toEqual([sharedPath, onlyAPath].sort());
    expect(missingObjects(store, 'a')).toEqual([objectRelPath(onlyA), objectRelPath(sharedDigest)].sort());
    store.close();
  });

  it('reports an image whose bytes do not match its name', async () => {
    const store = tmpStore();
    const { b } = await twoImages(store);
    const file = path.join(store.imagesDir, b);
    const img = fs.readFileSync(file);
    img[img.length - 1] ^= 0xff;
    fs.writeFileSync(file, img);
    expect(fsck(store).problems).toMatchObject([{ kind: 'bad-image', path: file }]);
    store.close();
  });
});

describe('index', () => {
  it('reindex after deleting index.sqlite gives the same stats', async () => {
    const store = tmpStore();
    await twoImages(store);
    store.putBuffer(bytes(16, 1234));
    const before = store.index.stats();
    expect(before).toMatchObject({ objects: 4, images: 2, refs: 2, bytes: 50_000 + 70_000 + 30_000 + 1234, logicalBytes: 2 * 50_000 + 70_000 + 30_000 });
    store.close();
    for (const f of fs.readdirSync(store.root)) if (f.startsWith('index.sqlite')) fs.rmSync(path.join(store.root, f));
    const again = Store.open(store.root);
    expect(again.index.stats()).toEqual(before);
    again.reindex();
    expect(again.index.stats()).toEqual(before);
    again.close();
  });
});
