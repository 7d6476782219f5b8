import { describe, expect, it } from 'vitest';
import { ALL_STRUCTS, CFS_HEADER, DIRENT, INODE_COMPACT, INODE_EXTENDED, SUPERBLOCK, XATTR_ENTRY, XATTR_IBODY_HEADER } from '../../format/layout.js';

describe('layout: struct sizes (our BUILD_BUG_ON)', () => {
  it('matches the kernel and composefs sizes', () => {
    expect(CFS_HEADER.SIZE).toBe(32);
    expect(SUPERBLOCK.SIZE).toBe(128);
    expect(INODE_COMPACT.SIZE).toBe(32);
    expect(INODE_EXTENDED.SIZE).toBe(64);
    expect(XATTR_IBODY_HEADER.SIZE).toBe(12);
    expect(XATTR_ENTRY.SIZE).toBe(4);
    expect(DIRENT.SIZE).toBe(12);
  });
  for (const s of ALL_STRUCTS) {
    it(`${s.name}: fields tile the struct with no gap or overlap`, () => {
      const fields = Object.entries(s.fields).sort((a, b) => a[1].offset - b[1].offset);
      let at = 0;
      for (const [name, f] of fields) {
        expect(f.offset, `${s.name}.${name}`).toBe(at);
        at += f.width;
      }
      expect(at).toBe(s.SIZE);
    });
  }
});
