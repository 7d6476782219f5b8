/**
 * The directory scan's external files: with onExternal the scan keeps no list of them (the
 * caller does), paths are built from the directory and the name when asked for, and stamps
 * (for the digest cache) are only taken when asked for.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ExternalFile, scanDirectory } from '../../writer/from-dir.js';

describe('scanDirectory: external files', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scan-'));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  const odd = Buffer.from([0x66, 0xff, 0x80, 0x2e, 0x62]); // "f\xff\x80.b": not UTF-8
  fs.mkdirSync(path.join(root, 'a/b'), { recursive: true });
  fs.writeFileSync(path.join(root, 'top'), Buffer.alloc(100, 1));
  fs.writeFileSync(path.join(root, 'a/b/deep'), Buffer.alloc(200, 2));
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/a/`), odd]), Buffer.alloc(300, 3));
  fs.writeFileSync(path.join(root, 'a/inline'), Buffer.alloc(64, 4));

  it('hands each file to onExternal in depth-first name order, with its paths, and keeps none', () => {
    const seen: [ExternalFile, number][] = [];
    const scan = scanDirectory(root, { onExternal: (f, i) => seen.push([f, i]) });
    expect(scan.external).toEqual([]);
    expect(scan.files).toBe(3);
    expect(scan.externalBytes).toBe(600);
    expect(seen.map(([, i]) => i)).toEqual([0, 1, 2]);
    const rels = seen.map(([f]) => Buffer.from(f.rel, 'latin1'));
    expect(rels).toEqual([Buffer.from('a/b/deep'), Buffer.concat([Buffer.from('a/'), odd]), Buffer.from('top')]);
    for (const [f] of seen) {
      expect(f.path).toEqual(Buffer.concat([Buffer.from(`${root}/`), Buffer.from(f.rel, 'latin1')]));
      expect(f.pathLatin1).toBe(f.path.toString('latin1'));
      expect(fs.readFileSync(f.path).length).toBe(f.inode.size);
      expect(f.stat).toBeNull();
    }
  });

  it('without onExternal, lists them; with stamps, notes dev, ino, mtime and ctime', () => {
    const scan = scanDirectory(root, { stamps: true });
    expect(scan.external.map((f) => f.name)).toEqual(['deep', Buffer.from(odd).toString('latin1'), 'top']);
    const top = scan.external[2];
    const st = fs.lstatSync(path.join(root, 'top'), { bigint: true });
    expect(top.stat).toEqual({ dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs });
  });
});
