/**
 * cfs-writer-json with eStargz blobs built here (estargz.ts): the TOC found through the footer,
 * contents decompressed into a cfs-cas store under their fs-verity names (chunked files, small
 * files sharing a member, dedup, inline small files), digests checked, the same for zstd:chunked,
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
import { kernelHas } from '../../mount/kernel.js';
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

  it('gzip without a footer and a zstd file without a zstd:chunked footer are refused; usage errors exit 2', async () => {
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
    expect(r.stderr).toMatch(/CFS_BAD_MAGIC: zstd:chunked footer: no 40- or 64-byte footer/);
    expect(fs.existsSync(path.join(tmp, 'z.img'))).toBe(false);
    expect(u1.code).toBe(2);
    expect(u1.stderr).toMatch(/--store needs the blob/);
    expect(u2.code).toBe(2);
  });
});

const noZstd = spawnSync('zstd', ['--version']).status === 0 ? null : 'no zstd CLI to build the blob with (apt zstd)';
if (noZstd) console.log(`zstd:chunked tests skipped: ${noZstd}`);
const zstdCli = (data: Buffer): Buffer => spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 28 }).stdout;
const zbuilt = noZstd ? null : buildEstargz(FILES, { zstd: zstdCli });
const zblobFile = path.join(tmp, 'layer.zstd-chunked');

describe.runIf(!noZstd)('zstd:chunked blob → image', () => {
  beforeAll(() => fs.writeFileSync(zblobFile, zbuilt!.blob));

  it('converts to the same image, objects and store as the eStargz blob of the same files', async () => {
    const gz = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-gz'), blobFile, path.join(tmp, 'gz.img')]);
    const zs = await runBinAsync('cfs-writer-json', ['--store', path.join(tmp, 'store-zs'), zblobFile, path.join(tmp, 'zs.img')]);
    expect(gz.code, gz.stderr).toBe(0);
    expect(zs.code, zs.stderr).toBe(0);
    expect(zs.stderr).toMatch(/objects: 2 new .*, 1 deduplicated/);
    expect(fs.readFileSync(path.join(tmp, 'zs.img')).equals(fs.readFileSync(path.join(tmp, 'gz.img')))).toBe(true);
    const root = decodeImage(fs.readFileSync(path.join(tmp, 'zs.img'))).root;
    for (const [p, data] of Object.entries(CONTENT)) {
      const n = lookup(root, p);
      if (data.length > 64) expect(fs.readFileSync(path.join(tmp, 'store-zs', 'objects', objectRelPath(hex(data)))).equals(data), p).toBe(true);
      else if (data.length) expect(n.content, p).toBe(data.toString('latin1'));
    }
  });

  it('the containers/storage footer (64 bytes, "GNUlInUx") is read too', () => {
    const b = zbuilt!.blob;
    const head = b.subarray(0, b.length - 48);
    const f = Buffer.alloc(64);
    b.copy(f, 0, b.length - 40, b.length - 8); // offset, sizes, type
    f.write('GNUlInUx', 56, 'latin1');
    const frame = Buffer.alloc(8);
    frame.writeUInt32LE(0x184d2a50, 0);
    frame.writeUInt32LE(64, 4);
    const { toc } = readTocFromBlob(blobFromBuffer(Buffer.concat([head, frame, f]), 'c-storage'));
    expect(JSON.parse(toc.toString())).toEqual(zbuilt!.toc);
  });

  it('hostile frames: a member declaring 4 GiB, a TOC larger than the footer says, truncation', () => {
    const b = Buffer.from(zbuilt!.blob);
    // the first data frame: claim a 4 GiB content size (single-segment, 8-byte FCS field)
    const first = zbuilt!.toc.entries.find((e) => e.type === 'reg' && (e.size as number) > 64)!;
    const at = first.offset as number;
    const bomb = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0]), Buffer.from([0, 0, 0, 0, 1, 0, 0, 0]), Buffer.from([1, 0, 0])]);
    bomb.copy(b, at);
    const store = Store.open(path.join(tmp, 'store-zbad'), { create: true });
    try {
      const blob = blobFromBuffer(b, 'bomb');
      const { toc, dataEnd } = readTocFromBlob(blob);
      expect(() => convertToc(toc, { input: 'bomb', store, blob, dataEnd })).toThrow(/cannot decompress the zstd frames at offset \d+: frames declare 4294967296 bytes/);
      const lying = Buffer.from(zbuilt!.blob);
      lying.writeBigUInt64LE(5n, lying.length - 40 + 16); // uncompressed TOC size
      expect(() => readTocFromBlob(blobFromBuffer(lying, 'lying'))).toThrow(/TOC at \d+ is \d+ bytes, the footer says 5|frames declare/);
      expect(() => readTocFromBlob(blobFromBuffer(zbuilt!.blob.subarray(0, zbuilt!.blob.length - 60), 'cut'))).toThrow(CfsError);
    } finally {
      store.close();
    }
  });
});

describe('mutated blobs', () => {
  it('truncated or bit-flipped blobs (eStargz and zstd:chunked) fail only with CfsError', () => {
    const files: BlobFile[] = [
      { name: 'a', type: 'reg', data: randomBytes(5000), chunkSize: 2000 },
      { name: 'b', type: 'reg', data: Buffer.from('hi'), shareMember: true },
      { name: 'c', type: 'reg', data: randomBytes(100), shareMember: true },
    ];
    const small = buildEstargz(files);
    const store = Store.open(path.join(tmp, 'store-fuzz'), { create: true });
    let seed = 1;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    try {
      const zsmall = noZstd ? null : buildEstargz(files, { zstd: zstdCli });
      for (let i = 0; i < 600; i++) {
        const m = Buffer.from(zsmall && i % 2 ? zsmall.blob : small.blob);
        let data = m;
        if (i % 3 === 0) data = m.subarray(0, rand(m.length));
        else for (let j = 0; j <= i % 5; j++) m[rand(m.length)] ^= 1 << (i % 8);
        const blob = blobFromBuffer(data, `case ${i}`);
        try {
          const { toc, dataEnd } = readTocFromBlob(blob);
          convertToc(toc, { input: `case ${i}`, store, blob, dataEnd });
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

describe.runIf(!noMount)('mounting an image made from an eStargz blob', () => {
  it('shows the real file contents', async () => {
    const store = path.join(tmp, 'store-mount');
    const img = path.join(tmp, 'mount.img');
    const r = await runBinAsync('cfs-writer-json', ['--store', store, '--name', 'layer', blobFile, img]);
    expect(r.code).toBe(0);
    const mnt = fs.mkdtempSync(path.join(tmp, 'mnt-'));
    const m = await runBinAsync('cfs-mount', ['--store', store, img, mnt]);
    expect(m.code, m.stderr).toBe(0);
    try {
      for (const [p, data] of Object.entries(CONTENT)) expect(fs.readFileSync(path.join(mnt, p)).equals(data), p).toBe(true);
      expect(fs.readlinkSync(path.join(mnt, 'bin'))).toBe('usr/bin');
      expect(fs.statSync(path.join(mnt, 'usr/lib/big.bin')).nlink).toBe(2);
      expect(fs.statSync(path.join(mnt, 'usr/lib/big.bin')).mode & 0o7777).toBe(0o755);
      expect(fs.existsSync(path.join(mnt, '.prefetch.landmark'))).toBe(false);
    } finally {
      await runBinAsync('cfs-mount', ['umount', mnt]);
    }
  });
});
