/**
 * A tree big enough for hash helpers: the files that may share content (same size) are hashed
 * before the layout, the others while the image is encoded, and filled in after. The image must
 * be the one made with every digest known first.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeImage, fsverityDigest, cryptoBlockHasher, S_IFMT, S_IFREG, type Inode } from '../../format/index.js';

// The built module: its helper processes run dist/cas/hash-worker.js (npm test builds first).
const { buildFromDirectory } = (await import(new URL('../../dist/writer/build.js', import.meta.url).href)) as typeof import('../../writer/build.js');

describe('cfs-writer DIR: digests filled in after the layout', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-late-'));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  const write = (rel: string, data: Buffer): void => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
  };
  // ~40 MiB: unique sizes (laid out late), identical copies (shared xattrs), same size but
  // different content, small and inline files
  for (let i = 0; i < 24; i++) write(`big/u${i}`, Buffer.alloc((1 << 20) + i * 4099, i + 1));
  for (let i = 0; i < 4; i++) write(`copies/c${i}`, Buffer.alloc(3 << 20, 0xcc));
  for (let i = 0; i < 3; i++) write(`samesize/s${i}`, Buffer.alloc(2 << 20, 0x40 + i));
  for (let i = 0; i < 300; i++) write(`small/d${i % 7}/f${i}`, Buffer.alloc(65 + i * 37, i & 0xff));
  write('inline', Buffer.from('tiny'));
  fs.symlinkSync('big/u0', path.join(root, 'link'));

  it('gives the image of the classic order, with each digest right', async () => {
    const late = await buildFromDirectory(root, { threads: 2 });
    const classic = await buildFromDirectory(root, { threads: 1 }); // no helpers: all digests first
    expect(late.files).toBe(24 + 4 + 3 + 300);
    expect(late.image.equals(classic.image)).toBe(true);
    let checked = 0;
    const walk = (dir: Inode, rel: string): void => {
      for (const d of dir.children!) {
        const p = path.join(rel, d.name);
        if (d.inode.children) walk(d.inode, p);
        else if ((d.inode.mode & S_IFMT) === S_IFREG && d.inode.size > 64) {
          expect(d.inode.digest, p).toBe(fsverityDigest(fs.readFileSync(path.join(root, p)), cryptoBlockHasher).toString('hex'));
          checked++;
        }
      }
    };
    walk(decodeImage(late.image).root, '');
    expect(checked).toBe(late.files);
  });

  it('reports what went wrong with a file, hashed before or while encoding', async () => {
    const size = (1 << 20) + 23 * 4099; // big/u23: a size no other file has
    const onDigest = (f: { inode: Inode }): void => {
      if (f.inode.size === size) throw new Error('store full');
    };
    await expect(buildFromDirectory(root, { threads: 2, onDigest })).rejects.toThrow('store full');
  });
});
