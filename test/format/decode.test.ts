/** Hostile images, built with our own encoder and then corrupted field by field. */
import { describe, expect, it } from 'vitest';
import {
  BLOCK_SIZE,
  CFS_HEADER,
  CfsError,
  DIRENT,
  INODE_COMPACT,
  SLOT_SIZE,
  SUPERBLOCK,
  SUPERBLOCK_OFFSET,
  decodeImage,
  encodeImage,
  parseDump,
} from '../../format/index.js';

const ROOT = '/ 4096 40755 2 0 0 0 1700000000.0 - - -\n';
function makeImage(lines: string[]): Buffer {
  return encodeImage(parseDump(Buffer.from(ROOT + lines.map((l) => l + '\n').join('')), { strict: true }));
}
const sb = (field: keyof typeof SUPERBLOCK.off): number => SUPERBLOCK_OFFSET + SUPERBLOCK.off[field];
const rootNid = (img: Buffer): number => img.readUInt16LE(sb('rootNid'));
const inodeAt = (img: Buffer, nid: number): number => nid * SLOT_SIZE;

function reject(img: Buffer, code: string, message?: RegExp): CfsError {
  let caught: unknown;
  try {
    decodeImage(img, { input: 'bad.img' });
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(CfsError);
  const e = caught as CfsError;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  expect(e.describe()).toMatch(/^bad\.img: CFS_/);
  return e;
}

/** nid of the entry `name` in the root directory (root's first directory block). */
function findDirent(img: Buffer, name: string): number {
  const root = inodeAt(img, rootNid(img));
  const block = img.readUInt32LE(root + INODE_COMPACT.off.u) * BLOCK_SIZE;
  const first = img.readUInt16LE(block + DIRENT.off.nameoff);
  for (let i = 0; i < first / DIRENT.SIZE; i++) {
    const at = block + i * DIRENT.SIZE;
    const off = img.readUInt16LE(at + DIRENT.off.nameoff);
    if (img.toString('latin1', block + off, block + off + name.length) === name) return at;
  }
  throw new Error(`no dirent ${name}`);
}

describe('decoder rejects hostile images with one clear error', () => {
  const base = makeImage(['/d 4096 40755 2 0 0 0 1700000000.0 - - -', '/d/f 3 100644 1 0 0 0 1700000000.0 - abc - user.a=b', '/l 3 120777 1 0 0 0 1700000000.0 abc - -']);

  it('decodes the unmodified image', () => {
    expect(decodeImage(base).root.children!.map((d) => d.name)).toEqual(['d', 'l']);
  });
  it('bad magics and versions', () => {
    const a = Buffer.from(base);
    a.writeUInt32LE(0, CFS_HEADER.off.magic);
    reject(a, 'CFS_BAD_MAGIC');
    const b = Buffer.from(base);
    b.writeUInt32LE(2, CFS_HEADER.off.version);
    reject(b, 'CFS_UNSUPPORTED', /header version 2/);
    const c = Buffer.from(base);
    c.writeUInt32LE(0x1234, sb('magic'));
    reject(c, 'CFS_BAD_MAGIC', /superblock/);
    const d = Buffer.from(base);
    d[sb('blkszbits')] = 9;
    reject(d, 'CFS_UNSUPPORTED', /block size/);
    const e = Buffer.from(base);
    e.writeUInt32LE(0x10, sb('featureIncompat'));
    reject(e, 'CFS_UNSUPPORTED', /incompatible features/);
  });
  it('truncated images', () => {
    reject(base.subarray(0, 100), 'CFS_OUT_OF_BOUNDS', /too small/);
    for (const len of [4096, 8192, base.length - 4096]) {
      expect(() => decodeImage(base.subarray(0, len))).toThrow(CfsError);
    }
  });
  it('root nid past the end', () => {
    const a = Buffer.from(base);
    a.writeUInt16LE(0xffff, sb('rootNid'));
    reject(a, 'CFS_OUT_OF_BOUNDS', /nid 65535/);
  });
  it('a directory that contains its own ancestor (cycle)', () => {
    const a = Buffer.from(base);
    const dDirent = findDirent(a, 'd');
    const dNid = Number(a.readBigUInt64LE(dDirent + DIRENT.off.nid));
    // point /d's entry for f at the root directory
    const dInode = inodeAt(a, dNid);
    const tail = dInode + INODE_COMPACT.SIZE; // /d has no xattrs: its entries follow the inode
    const first = a.readUInt16LE(tail + DIRENT.off.nameoff);
    for (let i = 0; i < first / DIRENT.SIZE; i++) {
      const at = tail + i * DIRENT.SIZE;
      const off = a.readUInt16LE(at + DIRENT.off.nameoff);
      if (a[tail + off] === 0x66 /* f */) {
        a.writeBigUInt64LE(BigInt(rootNid(a)), at + DIRENT.off.nid);
        a[at + DIRENT.off.fileType] = 2;
      }
    }
    reject(a, 'CFS_CYCLE');
  });
  it('dirent file type that does not match the inode', () => {
    const a = Buffer.from(base);
    a[findDirent(a, 'l') + DIRENT.off.fileType] = 1;
    reject(a, 'CFS_BAD_DIRENT', /file type/);
  });
  it('absurd sizes do not allocate', () => {
    const a = Buffer.from(base);
    const lNid = Number(a.readBigUInt64LE(findDirent(a, 'd') + DIRENT.off.nid));
    a.writeUInt32LE(0xfffff010, inodeAt(a, lNid) + INODE_COMPACT.off.size);
    const e = reject(a, 'CFS_OUT_OF_BOUNDS');
    expect(e.offset).toBeDefined();
  });
  it('xattr counts past the end of the image', () => {
    const a = Buffer.from(base);
    a.writeUInt16LE(0xffff, inodeAt(a, rootNid(a)) + INODE_COMPACT.off.xattrIcount);
    reject(a, 'CFS_OUT_OF_BOUNDS', /xattr area/);
  });
  it('a shared xattr reference past the end', () => {
    const img = makeImage(['/a 0 100644 1 0 0 0 1700000000.0 - - - user.s=1', '/b 0 100644 1 0 0 0 1700000000.0 - - - user.s=1']);
    const aNid = Number(img.readBigUInt64LE(findDirent(img, 'a') + DIRENT.off.nid));
    const ref = inodeAt(img, aNid) + INODE_COMPACT.SIZE + 12;
    img.writeUInt32LE(0x3fffffff, ref);
    reject(img, 'CFS_OUT_OF_BOUNDS');
  });
  it('names with a slash', () => {
    const a = Buffer.from(base);
    const at = findDirent(a, 'l');
    const block = at - (at % BLOCK_SIZE);
    a[block + a.readUInt16LE(at + DIRENT.off.nameoff)] = 0x2f;
    reject(a, 'CFS_BAD_DIRENT', /invalid entry name/);
  });
  it('compressed data layouts', () => {
    const a = Buffer.from(base);
    const nid = Number(a.readBigUInt64LE(findDirent(a, 'l') + DIRENT.off.nid));
    a.writeUInt16LE(1 << 1, inodeAt(a, nid) + INODE_COMPACT.off.format);
    reject(a, 'CFS_UNSUPPORTED', /data layout 1/);
  });
});

describe('decoder: hardlink ownership', () => {
  const img = makeImage(['/a 0 @100644 1 0 0 0 0.0 /z/late - -', '/z 4096 40755 2 0 0 0 1700000000.0 - - -', '/z/late 0 100644 2 0 0 0 1700000000.0 - - -']);
  it("owner 'first' is the first name depth first (composefs-info)", () => {
    const { root } = decodeImage(img);
    expect(root.children![0].link).toBe(false);
    expect(root.children![1].inode.children![0].link).toBe(true);
  });
  it("owner 'image' keeps the image's inode order", () => {
    const { root } = decodeImage(img, { owner: 'image' });
    expect(root.children![0].link).toBe(true);
    expect(root.children![1].inode.children![0].link).toBe(false);
  });
});

describe('encoder limits for trees built in code', () => {
  it('rejects xattr values over 65535 bytes and oversized xattr sets with CfsError', async () => {
    const { newInode, addChild } = await import('../../format/index.js');
    const root = newInode(0o040755);
    const f = newInode(0o100644);
    f.xattrs.push({ key: 'user.big', value: 'x'.repeat(70000) });
    addChild(root, { name: 'f', inode: f, link: false });
    expect(() => encodeImage(root)).toThrow(/at most 65535/);
    f.xattrs = [{ key: 'user.a', value: 'x'.repeat(20000) }, { key: 'user.b', value: 'y'.repeat(20000) }];
    expect(() => encodeImage(root)).toThrow(/per-inode size limit/);
    f.xattrs = [{ key: '', value: 'x' }];
    expect(() => encodeImage(root)).toThrow(CfsError);
  });
});
