/**
 * cfs-writer-json with eStargz blobs built here (estargz.ts): the TOC found through the footer,
 * contents decompressed into a cfs-cas store under their fs-verity names (chunked files, small
 * files sharing a member, dedup, inline small files), digests checked, zstd:chunked refused,
 * and (as root, with erofs + overlayfs) the mounted image shows the real contents.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CfsError, decodeImage, dumpToString, fsverityDigest, type Inode } from '../../format/index.js';
import { blobFromBuffer, readTocFromBlob } from '../../writer-json/blob.js';
import { convertToc } from '../../writer-json/convert.js';
import { Store, objectRelPath } from '../../cas/store.js';
import koffi from 'koffi';
import { kernelHas } from '../../mount/kernel.js';
import { overlayOptions, parseComposefsOptions } from '../../mount/options.js';
import { runBinAsync } from './helpers.js';
import { type BlobFile, buildEstargz } from '../../writer-json/estargz-build.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-writer-json-blob-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const big = randomBytes(300_000);
const medium = randomBytes(200);
const FILES: BlobFile[] = [
  { name: './', type: 'dir' },
  { name: 'etc/', type: 'dir' },
  { name: 'etc/a', type: 'reg', data: Buffer.from('alpha\n'), shareMember: true },
  { name: 'etc/b', type: 'reg', data: Buffer.from('bravo\n'), shareMember: true },
  { name: 'etc/c', type: 'reg', data: medium, shareMember: true },
  { name: 'etc/empty', type: 'reg' },
  { name: 'usr/lib/big.bin', type: 'reg', data: big, chunkSize: 100_000, mode: 0o755 },
  { name: 'usr/lib/big-link', type: 'hardlink', linkName: 'usr/lib/big.bin' },
  { name: 'usr/lib/copy.bin', type: 'reg', data: big },
  { name: 'bin', type: 'symlink', linkName: 'usr/bin' },
  { name: '.prefetch.landmark', type: 'reg', data: Buffer.from([0x0f]) },
];
const CONTENT: Record<string, Buffer> = { 'etc/a': Buffer.from('alpha\n'), 'etc/b': Buffer.from('bravo\n'), 'etc/c': medium, 'etc/empty': Buffer.alloc(0), 'usr/lib/big.bin': big, 'usr/lib/big-link': big, 'usr/lib/copy.bin': big };

const built = buildEstargz(FILES);
const blobFile = path.join(tmp, 'layer.estargz');
const tocFile = path.join(tmp, 'toc.json');
beforeAll(() => {
  fs.writeFileSync(blobFile, built.blob);
  fs.writeFileSync(tocFile, JSON.stringify(built.toc));
});

function lookup(root: Inode, p: string): Inode {
  let n = root;
  for (const part of p.split('/')) n = n.children!.find((d) => d.name === part)!.inode;
  return n;
}
const hex = (b: Buffer): string => fsverityDigest(b).toString('hex');

describe('eStargz blob → image', () => {
  it('the blob checks out: chunk entries, shared members, landmark', () => {
    const types = built.toc.entries.map((e) => e.type);
    expect(types.filter((t) => t === 'chunk').length).toBe(2);
    expect(built.toc.entries.filter((e) => (e.innerOffset as number) > 0).length).toBe(3);
  });

  it('--store: contents go into the store under fs-verity names, the image is registered', async () => {
    const store = path.join(tmp, 'store');
    const img = path.join(tmp, 'with-store.img');
    const r = await runBinAsync('cfs-writer-json', ['--store', store, '--name', 'app', blobFile, img]);
    expect(r.stderr).toMatch(/13 entries, 5 files with content .*, 2 inline/);
    expect(r.stderr).toMatch(/objects: 2 new .*, 1 deduplicated/);
    expect(r.code).toBe(0);
    const image = fs.readFileSync(img);
    const root = decodeImage(image).root;
    const dump = dumpToString(root);
    expect(dump).not.toContain('landmark');
    for (const [p, data] of Object.entries(CONTENT)) {
      const n = lookup(root, p);
      expect(n.size, p).toBe(data.length);
      if (data.length === 0) expect(n.payload, p).toBeNull();
      else if (data.length <= 64) expect(n.content, p).toBe(data.toString('latin1'));
      else {
        expect(n.digest, p).toBe(hex(data));
        expect(n.payload, p).toBe(objectRelPath(hex(data)));
        expect(fs.readFileSync(path.join(store, 'objects', n.payload!)).equals(data), p).toBe(true);
      }
    }
    expect(lookup(root, 'usr/lib/big.bin').nlink).toBe(2);
    expect(lookup(root, 'usr/lib/big.bin').mode).toBe(0o100755);
    const s = Store.open(store);
    try {
      expect(s.readRef('app')).toBe(hex(image));
    } finally {
      s.close();
    }
    // Same image from the TOC JSON plus --blob, and from the blob on stdin.
    const [viaToc, viaStdin] = await Promise.all([
      runBinAsync('cfs-writer-json', ['--store', store, '--blob', blobFile, tocFile, '-']),
      runBinAsync('cfs-writer-json', ['--store', store, '-', '-'], { input: built.blob }),
    ]);
    expect(viaToc.code).toBe(0);
    expect(viaToc.stderr).toMatch(/objects: 0 new .*, 3 deduplicated/);
    expect(viaToc.stdout.equals(image)).toBe(true);
    expect(viaStdin.code).toBe(0);
    expect(viaStdin.stdout.equals(image)).toBe(true);
  });

  it('without --store: the TOC is read from the blob and payloads come from the sha256 digests', async () => {
    const r = await runBinAsync('cfs-writer-json', [blobFile]);
    expect(r.code).toBe(0);
    const root = decodeImage(r.stdout).root;
    const entry = built.toc.entries.find((e) => e.name === 'usr/lib/big.bin')!;
    const sha = (entry.digest as string).slice(7);
    expect(lookup(root, 'usr/lib/big.bin').payload).toBe(`${sha.slice(0, 2)}/${sha.slice(2)}`);
    expect(lookup(root, 'usr/lib/big.bin').digest).toBeNull();
  });

  it('content that does not match the TOC digest is refused; the store gains nothing', async () => {
    const store = path.join(tmp, 'store-bad');
    const toc = structuredClone(built.toc);
    const e = toc.entries.find((x) => x.name === 'usr/lib/copy.bin')!;
    e.digest = `sha256:${'0'.repeat(64)}`;
    const bad = path.join(tmp, 'bad-digest.json');
    fs.writeFileSync(bad, JSON.stringify(toc));
    const img = path.join(tmp, 'bad.img');
    const r = await runBinAsync('cfs-writer-json', ['--store', store, '--blob', blobFile, bad, img]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/entry \d+ "usr\/lib\/copy.bin": content in the blob does not match the entry's sha256 digest/);
    expect(fs.existsSync(img)).toBe(false);
    expect(fs.readdirSync(path.join(store, 'objects'))).toEqual([]);
    expect(fs.readdirSync(path.join(store, 'tmp'))).toEqual([]);
  });

  it('a corrupt member or an offset past the data is an error naming the entry', async () => {
    const toc = structuredClone(built.toc);
    const e = toc.entries.find((x) => x.name === 'etc/c')!;
    e.offset = built.tocOffset + 5;
    const bad = path.join(tmp, 'bad-offset.json');
    fs.writeFileSync(bad, JSON.stringify(toc));
    const r = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-off'), '--blob', blobFile, bad, path.join(tmp, 'x.img')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/entry \d+ "etc\/c": blob offset \d+ is not before the TOC/);
    const cut = Buffer.from(built.blob);
    const big0 = built.toc.entries.find((x) => x.name === 'usr/lib/big.bin')!.offset as number;
    cut.fill(0x55, big0 + 20, big0 + 60);
    const cutFile = path.join(tmp, 'corrupt.estargz');
    fs.writeFileSync(cutFile, cut);
    const r2 = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-cut'), cutFile, path.join(tmp, 'y.img')]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/entry \d+ "usr\/lib\/big.bin": (cannot decompress|.*does not match)/);
  });

  it('files with x-payload keep it under --store, and their members still bound the others', async () => {
    const small = randomBytes(100);
    const b = buildEstargz([
      { name: 'small', type: 'reg', data: small },
      { name: 'huge', type: 'reg', data: Buffer.alloc(24 << 20) }, // beyond the decompression slack
    ]);
    const t = structuredClone(b.toc);
    t.entries.find((e) => e.name === 'huge')!['x-payload'] = 'elsewhere/huge';
    const blob = path.join(tmp, 'xp.estargz');
    const tocPath = path.join(tmp, 'xp.json');
    fs.writeFileSync(blob, b.blob);
    fs.writeFileSync(tocPath, JSON.stringify(t));
    const r = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-xp'), '--blob', blob, tocPath, '-']);
    expect(r.stderr).toMatch(/1 objects named by x-payload are not in the store|objects: 1 new/);
    expect(r.code).toBe(0);
    const root = decodeImage(r.stdout).root;
    expect(lookup(root, 'huge').payload).toBe('elsewhere/huge');
    expect(lookup(root, 'small').payload).toBe(objectRelPath(hex(small)));
  });

  it('reads the older 47-byte CRFS stargz footer too', async () => {
    const crfs = Buffer.alloc(47);
    Buffer.from([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]).copy(crfs, 0);
    crfs.writeUInt16LE(22, 10);
    crfs.write(`${built.tocOffset.toString(16).padStart(16, '0')}STARGZ`, 12, 'latin1');
    Buffer.from([1, 0, 0, 0xff, 0xff]).copy(crfs, 34);
    const file = path.join(tmp, 'layer.stargz');
    fs.writeFileSync(file, Buffer.concat([built.blob.subarray(0, built.blob.length - 51), crfs]));
    const [a, b] = await Promise.all([runBinAsync('cfs-writer-json', [file]), runBinAsync('cfs-writer-json', [blobFile])]);
    expect(a.code).toBe(0);
    expect(a.stdout.equals(b.stdout)).toBe(true);
  });

  it('chunk lists that do not tile the file are refused', async () => {
    const toc = structuredClone(built.toc);
    const chunk = toc.entries.find((x) => x.type === 'chunk')!;
    chunk.chunkOffset = (chunk.chunkOffset as number) + 1;
    const bad = path.join(tmp, 'bad-chunks.json');
    fs.writeFileSync(bad, JSON.stringify(toc));
    const r = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-chunks'), '--blob', blobFile, bad, path.join(tmp, 'z.img')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/entry \d+ "usr\/lib\/big.bin": chunk 0 at 0 has chunkSize 100000, but the next chunk starts 100001 bytes later/);
  });

  it('zstd:chunked blobs are refused as not supported yet, gzip without a footer is refused; usage errors exit 2', async () => {
    const zfooter = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(60), Buffer.from('GnUlInUx')]);
    const z = path.join(tmp, 'layer.zst');
    fs.writeFileSync(z, zfooter);
    const nofooter = path.join(tmp, 'no-footer.gz');
    fs.writeFileSync(nofooter, built.blob.subarray(0, built.blob.length - 51));
    const [r, u1, u2, nf] = await Promise.all([
      runBinAsync('cfs-writer-json', [z, path.join(tmp, 'z.img')]),
      runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-u'), tocFile]),
      runBinAsync('cfs-writer-json', ['--blob', blobFile, tocFile]),
      runBinAsync('cfs-writer-json', [nofooter]),
    ]);
    expect(nf.code).toBe(1);
    expect(nf.stderr).toMatch(/CFS_BAD_MAGIC: gzip data that is neither an eStargz blob \(no footer found\) nor a gzipped TOC JSON/);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CFS_UNSUPPORTED: zstd:chunked blobs are not supported yet/);
    expect(u1.code).toBe(2);
    expect(u1.stderr).toMatch(/--store needs the eStargz blob/);
    expect(u2.code).toBe(2);
  });
});

describe('mutated blobs', () => {
  it('truncated or bit-flipped blobs fail only with CfsError', () => {
    const small = buildEstargz([
      { name: 'a', type: 'reg', data: randomBytes(5000), chunkSize: 2000 },
      { name: 'b', type: 'reg', data: Buffer.from('hi'), shareMember: true },
      { name: 'c', type: 'reg', data: randomBytes(100), shareMember: true },
    ]);
    const store = Store.open(path.join(tmp, 'store-fuzz'), { create: true });
    let seed = 1;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    try {
      for (let i = 0; i < 600; i++) {
        const m = Buffer.from(small.blob);
        let data = m;
        if (i % 3 === 0) data = m.subarray(0, rand(m.length));
        else for (let j = 0; j <= i % 5; j++) m[rand(m.length)] ^= 1 << (i % 8);
        const blob = blobFromBuffer(data, `case ${i}`);
        try {
          const { toc, tocOffset } = readTocFromBlob(blob);
          convertToc(toc, { input: `case ${i}`, store, blob, dataEnd: tocOffset });
        } catch (e) {
          if (!(e instanceof CfsError)) throw new Error(`case ${i}: ${(e as Error).stack}`);
        }
      }
    } finally {
      store.close();
    }
  });
});

const isRoot = process.getuid?.() === 0;
const noMount = !isRoot ? 'not root' : !kernelHas('erofs') || !kernelHas('overlay') ? 'kernel lacks erofs or overlay' : null;

/**
 * The image is mounted the way cfs-mount does (erofs, then overlayfs with the store's objects as
 * a data-only lower layer), but the erofs mount goes straight from the file through mount(2)
 * (file-backed erofs, Linux 6.12+) instead of a loop device: test/mount counts loop devices to
 * catch leaks, and this file may run at the same time.
 */
function mountImage(image: string, objects: string, mnt: string): (() => void) | string {
  const lib = koffi.load('libc.so.6');
  const mount = lib.func('int mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data)');
  const umount = lib.func('int umount2(const char *target, int flags)');
  const lower = fs.mkdtempSync(path.join(tmp, 'lower-'));
  if (mount(image, lower, 'erofs', 1 /* MS_RDONLY */, null) !== 0) return `file-backed erofs mount failed (errno ${koffi.errno()})`;
  const o = parseComposefsOptions('none', `descriptor=${image},base=${objects}`);
  const ov = spawnSync('mount', ['-t', 'overlay', 'composefs', '-o', overlayOptions(o, lower), '--', mnt], { encoding: 'utf8' });
  if (ov.status !== 0) {
    umount(lower, 0);
    return `overlay mount failed: ${ov.stderr}`;
  }
  return () => {
    umount(mnt, 0);
    umount(lower, 0);
  };
}

describe.runIf(!noMount)('mounting an image made from an eStargz blob', () => {
  it('shows the real file contents', async (ctx) => {
    const store = path.join(tmp, 'store-mount');
    const img = path.join(tmp, 'mount.img');
    const r = await runBinAsync('cfs-writer-json', ['--store', store, '--name', 'layer', blobFile, img]);
    expect(r.code).toBe(0);
    const mnt = fs.mkdtempSync(path.join(tmp, 'mnt-'));
    const done = mountImage(img, path.join(store, 'objects'), mnt);
    if (typeof done === 'string') {
      console.log(`mount test skipped: ${done}`);
      ctx.skip();
      return;
    }
    try {
      for (const [p, data] of Object.entries(CONTENT)) expect(fs.readFileSync(path.join(mnt, p)).equals(data), p).toBe(true);
      expect(fs.readlinkSync(path.join(mnt, 'bin'))).toBe('usr/bin');
      expect(fs.statSync(path.join(mnt, 'usr/lib/big.bin')).nlink).toBe(2);
      expect(fs.statSync(path.join(mnt, 'usr/lib/big.bin')).mode & 0o7777).toBe(0o755);
      expect(fs.existsSync(path.join(mnt, '.prefetch.landmark'))).toBe(false);
    } finally {
      done();
    }
  });
});
