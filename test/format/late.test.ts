import { describe, expect, it } from 'vitest';
import { CfsError, S_IFDIR, S_IFMT, S_IFREG, encodeImage, encodeImageLate, newInode, parseDump, type Inode } from '../../format/index.js';
import { loadVectors } from '../support/vectors.js';

/** Every inode of a tree once (hardlink names skipped). */
function inodes(root: Inode): Inode[] {
  const out: Inode[] = [root];
  for (let i = 0; i < out.length; i++) for (const d of out[i].children ?? []) if (!d.link) out.push(d.inode);
  return out;
}

const objectPath = (d: string): string => `${d.slice(0, 2)}/${d.slice(2)}`;
const digestOf = (i: number): string => (i * 2654435761).toString(16).padStart(8, '0').repeat(8).slice(0, 64);

describe('encodeImageLate', () => {
  // Files whose digest and object path no other inode has are laid out before their digest is
  // known; filled in, the image must be the vector's bytes.
  const vectors = loadVectors().filter((v) => v.set === 'generated' && v.sha256 !== null);
  let lateTotal = 0;
  for (const v of vectors) {
    it(`${v.name}: late digests filled in give the same image`, () => {
      const root = parseDump(v.input, { strict: v.strict });
      const all = inodes(root);
      const uses = new Map<string, number>();
      for (const n of all) for (const k of [n.digest, n.payload]) if (k !== null) uses.set(k, (uses.get(k) ?? 0) + 1);
      const late = new Map<Inode, { index: number; digest: string }>();
      for (const n of all) {
        const d = n.digest;
        if ((n.mode & S_IFMT) !== S_IFREG || n.content !== null || n.size === 0 || d === null || n.payload !== objectPath(d)) continue;
        if (uses.get(d) !== 1 || uses.get(n.payload) !== 1) continue;
        late.set(n, { index: late.size * 7 + 3, digest: d });
        n.digest = n.payload = null;
      }
      const opts = { minVersion: v.minVersion, maxVersion: v.maxVersion };
      const out = encodeImageLate(root, { ...opts, late: (n) => late.get(n)?.index ?? -1 });
      expect(out.unfilled).toBe(late.size);
      lateTotal += late.size;
      if (late.size > 0) expect(() => out.image()).toThrow(/not filled in/);
      for (const { index, digest } of late.values()) out.fill(index, digest);
      expect(out.unfilled).toBe(0);
      expect(out.image().equals(v.image!)).toBe(true);
      // the same tree with its digests back encodes to the same bytes the usual way
      for (const [n, { digest }] of late) [n.digest, n.payload] = [digest, objectPath(digest)];
      expect(encodeImage(root, opts).equals(v.image!)).toBe(true);
    });
  }
  it('found such files in the vectors', () => expect(lateTotal).toBeGreaterThan(20));

  const tree = (sizes: number[]): { root: Inode; files: Inode[] } => {
    const root = newInode(0o40755);
    const files = sizes.map((size, i) => {
      const f = newInode(S_IFREG | 0o644, { size, digest: digestOf(i + 1), payload: objectPath(digestOf(i + 1)) });
      root.children!.push({ name: `f${i}`, inode: f, link: false });
      return f;
    });
    return { root, files };
  };

  it('fills in a digest shared by no other file, and checks what it is given', () => {
    const { root, files } = tree([100, 5000, 70_000]);
    const want = encodeImage(root);
    const d = files[1].digest!;
    files[1].digest = files[1].payload = null;
    const out = encodeImageLate(root, { late: (n) => (n === files[1] ? 0 : -1) });
    expect(() => out.fill(1, d)).toThrow(/no late file 1/);
    expect(() => out.fill(0, d.toUpperCase())).toThrow(/invalid digest/);
    out.fill(0, d);
    expect(() => out.fill(0, d)).toThrow(/filled in already/);
    expect(out.image().equals(want)).toBe(true);
  });

  it('refuses a late index given twice and a late file kept inline', () => {
    const { root, files } = tree([100, 5000]);
    for (const f of files) f.digest = f.payload = null;
    expect(() => encodeImageLate(root, { late: () => 0 })).toThrow(CfsError);
    const small = tree([10]);
    small.files[0].content = 'x'.repeat(10);
    expect(() => encodeImageLate(small.root, { late: () => 0 })).toThrow(/only a file kept outside the image/);
  });
});

describe('encodeImage: the copy it works on', () => {
  const snapshot = (root: Inode): string => JSON.stringify(root, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));

  it('leaves the tree as it was without consume, and calls afterCopy, then afterRewrite', () => {
    for (const v of loadVectors().filter((x) => x.set === 'generated' && x.sha256 !== null)) {
      const root = parseDump(v.input, { strict: v.strict });
      const before = snapshot(root);
      const calls: string[] = [];
      const opts = { minVersion: v.minVersion, maxVersion: v.maxVersion, afterCopy: () => calls.push('copy'), afterRewrite: () => calls.push('rewrite') };
      const once = encodeImage(root, opts);
      expect(snapshot(root)).toBe(before);
      expect(calls).toEqual(['copy', 'rewrite']);
      // consumed: the same bytes again from a fresh parse
      expect(encodeImage(parseDump(v.input, { strict: v.strict }), { ...opts, consume: true }).equals(once)).toBe(true);
    }
  });
});

describe('encodeImage: redirectToObject', () => {
  it('redirects a file with a digest and no payload to its object, as if the payload were set', () => {
    let dropped = 0;
    for (const v of loadVectors().filter((x) => x.set === 'generated' && x.sha256 !== null)) {
      const opts = { minVersion: v.minVersion, maxVersion: v.maxVersion };
      // what it should give: every file with a digest redirected to its object
      const full = parseDump(v.input, { strict: v.strict });
      for (const f of inodes(full)) if (f.digest !== null && f.payload === null) f.payload = objectPath(f.digest);
      const want = encodeImage(full, opts);
      const root = parseDump(v.input, { strict: v.strict });
      let n = 0;
      for (const f of inodes(root)) {
        if (f.digest === null || f.payload !== objectPath(f.digest)) continue;
        f.payload = null;
        n++;
      }
      dropped += n;
      expect(encodeImage(root, { ...opts, redirectToObject: true }).equals(want), v.name).toBe(true);
      if (n > 0) expect(encodeImage(root, opts).equals(want), v.name).toBe(false);
    }
    expect(dropped).toBeGreaterThan(20);
  });
});

describe('encodeImage: errors name the node', () => {
  /** /d/e/NAME, a file with `fields`, and a sibling before it. */
  function tree(name: string, fields: Partial<Inode>): Inode {
    const root = newInode(S_IFDIR | 0o755);
    const d = newInode(S_IFDIR | 0o755);
    const e = newInode(S_IFDIR | 0o755);
    root.children = [{ name: 'd', inode: d, link: false }];
    d.children = [{ name: 'e', inode: e, link: false }];
    e.children = [
      { name: 'a', inode: newInode(S_IFREG | 0o644), link: false },
      { name, inode: newInode(S_IFREG | 0o644, fields), link: false },
    ];
    return root;
  }

  it('by its path, found through its parents (nodes keep no names)', () => {
    const big = 'v'.repeat(20000);
    for (const consume of [false, true]) {
      expect(() => encodeImage(tree('f', { mode: 0o170644 }), { consume })).toThrow('/d/e/f: invalid mode');
      const t = tree('g', { xattrs: [{ key: 'user.a', value: big }, { key: 'user.b', value: big }] });
      expect(() => encodeImage(t, { consume })).toThrow('/d/e/g: xattrs exceed the per-inode size limit');
    }
  });
});
