import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { importTar } from '../../cas/tar.js';
import { objectRelPath } from '../../cas/store.js';
import { CfsError, S_IFBLK, S_IFCHR, S_IFIFO, S_IFLNK, S_IFMT, decodeImage, dumpToString, fsverityDigest, type Inode } from '../../format/index.js';
import { bytes, chunks, makeTar, patchSize, snapshot, tmpStore, type TarEntry } from './helpers.js';

const big = bytes(1, 200_000);
const longName = 'd/' + 'x'.repeat(150) + '/' + 'y'.repeat(200);

const tree: TarEntry[] = [
  { header: { name: './', type: 'directory', mode: 0o755 } },
  { header: { name: 'd', type: 'directory', mode: 0o750, uid: 7, gid: 8 } },
  { header: { name: 'd/empty', type: 'file', mode: 0o644 }, data: '' },
  { header: { name: 'd/small', type: 'file', mode: 0o600 }, data: 'x'.repeat(64) },
  { header: { name: 'd/just-over', type: 'file', mode: 0o644 }, data: 'y'.repeat(65) },
  { header: { name: 'd/big', type: 'file', mode: 0o755, pax: { 'SCHILY.xattr.user.k': 'v1', mtime: '1700000000.123456789' } }, data: big },
  { header: { name: 'd/big-again', type: 'file', mode: 0o644 }, data: big },
  { header: { name: 'd/hard', type: 'link', linkname: 'd/big' } },
  { header: { name: 'd/sym', type: 'symlink', linkname: '../outside/ok' } },
  { header: { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 } },
  { header: { name: 'dev/sda', type: 'block-device', mode: 0o660, devmajor: 8, devminor: 0 } },
  { header: { name: 'dev/fifo', type: 'fifo', mode: 0o644 } },
  { header: { name: longName, type: 'file', mode: 0o644 }, data: 'long' },
];

function find(root: Inode, p: string): Inode {
  let cur = root;
  for (const part of p.split('/')) cur = cur.children!.find((c) => c.name === part)!.inode;
  return cur;
}

describe('import-tar', () => {
  it('builds the image of the archive tree and stores large contents as objects', async () => {
    const store = tmpStore();
    const archive = await makeTar(tree);
    const r = await importTar(store, chunks(archive, 1 << 16), { name: 'base', input: 't.tar' });
    expect(r).toMatchObject({ newObjects: 2, newBytes: 200_065, dedupObjects: 1, dedupBytes: 200_000, missing: [] });
    const digest = fsverityDigest(big).toString('hex');
    const just = fsverityDigest(Buffer.from('y'.repeat(65))).toString('hex');
    expect(store.has(digest) && store.has(just)).toBe(true);
    const img = fs.readFileSync(path.join(store.refsDir, 'base'));
    expect(fsverityDigest(img).toString('hex')).toBe(r.image);
    const { root } = decodeImage(img);
    const bigInode = find(root, 'd/big');
    expect(bigInode).toMatchObject({ size: 200_000, payload: objectRelPath(digest), nlink: 2, mtimeSec: 1700000000n, mtimeNsec: 123456789 });
    expect(bigInode.xattrs).toEqual([{ key: 'user.k', value: 'v1' }]);
    expect(find(root, 'd/hard')).toBe(bigInode);
    expect(find(root, 'd/empty')).toMatchObject({ size: 0, payload: null, content: null });
    expect(find(root, 'd/small')).toMatchObject({ size: 64, content: 'x'.repeat(64), payload: null });
    expect(find(root, 'd/just-over').payload).toBe(objectRelPath(just));
    expect(find(root, 'd')).toMatchObject({ mode: 0o40750, uid: 7, gid: 8 });
    expect(find(root, 'd/sym')).toMatchObject({ mode: S_IFLNK | 0o777, payload: '../outside/ok' });
    expect(find(root, 'dev/null').mode & S_IFMT).toBe(S_IFCHR);
    expect(find(root, 'dev/null').rdev).toBe(0x103);
    expect(find(root, 'dev/sda').mode & S_IFMT).toBe(S_IFBLK);
    expect(find(root, 'dev/fifo').mode & S_IFMT).toBe(S_IFIFO);
    expect(find(root, longName).content).toBe('long');
    store.close();
  });

  it('gives the same image however the input is chunked, and dedups a second import', async () => {
    const archive = await makeTar(tree);
    const store = tmpStore();
    const first = await importTar(store, chunks(archive, archive.length), { input: 't' });
    for (const size of [1, 7, 321]) {
      const r = await importTar(store, chunks(archive, size), { input: 't' });
      expect(r.image).toBe(first.image);
      expect(r.newObjects).toBe(0);
    }
    store.close();
  });

  it('keeps non-UTF-8 names as bytes', async () => {
    const store = tmpStore();
    const name = Buffer.from([0x61, 0xff, 0xfe]).toString('latin1');
    const archive = await makeTar([{ header: { name: 'ok', type: 'file' }, data: 'a' }]);
    // Patch the name bytes in place (same length as "ok" plus one byte of padding is NUL).
    const b = Buffer.from(archive);
    b.write(name, 0, 'latin1');
    const fixed = patchSize(b, 0, 1);
    const r = await importTar(store, chunks(fixed, 512), { name: 'n', input: 't' });
    const { root } = decodeImage(fs.readFileSync(path.join(store.imagesDir, r.image)));
    expect(root.children!.map((c) => c.name)).toEqual([name]);
    expect(dumpToString(root)).toContain('/a\\xff\\xfe');
    store.close();
  });
});

describe('hostile archives are rejected and leave the store as it was', () => {
  const cases: [string, () => Promise<Buffer>, RegExp][] = [
    ['dot-dot', () => makeTar([{ header: { name: 'a/../../etc/passwd', type: 'file' }, data: 'x'.repeat(100) }]), /escapes the archive root/],
    ['absolute', () => makeTar([{ header: { name: '/etc/passwd', type: 'file' }, data: 'x' }]), /absolute path/],
    [
      'symlinked parent',
      () =>
        makeTar([
          { header: { name: 'link', type: 'symlink', linkname: '/etc' } },
          { header: { name: 'link/passwd', type: 'file' }, data: 'x'.repeat(100) },
        ]),
      /parent "link" is a symlink/,
    ],
    [
      'hardlink to nothing',
      () => makeTar([{ header: { name: 'h', type: 'link', linkname: 'nope' } }]),
      /hardlink to "nope"/,
    ],
    [
      'truncated data',
      async () => {
        const t = await makeTar([
          { header: { name: 'a', type: 'file' }, data: bytes(2, 100_000) },
          { header: { name: 'b', type: 'file' }, data: bytes(3, 100_000) },
        ]);
        return t.subarray(0, 512 + 100_352 + 512 + 5000);
      },
      /truncated|unexpected end/i,
    ],
    [
      'huge size',
      async () => patchSize(await makeTar([{ header: { name: 'a', type: 'file' }, data: bytes(4, 1000) }]), 0, 2 ** 33 - 1),
      /truncated|unexpected end/i,
    ],
    ['not a tar', async () => Buffer.alloc(2048, 0x41), /bad tar/],
  ];
  for (const [name, make, msg] of cases) {
    it(name, async () => {
      const store = tmpStore();
      await importTar(store, chunks(await makeTar(tree), 4096), { name: 'keep', input: 'ok.tar' });
      const before = snapshot(store.root);
      const stats = store.index.stats();
      const err = await importTar(store, chunks(await make(), 4096), { name: 'evil', input: 'evil.tar' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CfsError);
      expect((err as CfsError).describe()).toMatch(/^evil\.tar: /);
      expect((err as CfsError).message).toMatch(msg);
      expect(snapshot(store.root)).toEqual(before);
      expect(store.index.stats()).toEqual(stats);
      store.close();
    });
  }
});
