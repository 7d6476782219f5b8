/** TOC semantics the shared fixtures don't pin: times, x-payload, chunks, links, limits, our choices. */
import { describe, expect, it } from 'vitest';
import { CfsError, decodeImage, dumpToString } from '../../format/index.js';
import { convertToc } from '../../writer-json/convert.js';
import { parseModtime } from '../../writer-json/toc.js';

const D1 = `sha256:${'ab'.repeat(32)}`;
const D2 = `sha256:${'cd'.repeat(32)}`;
const toc = (entries: unknown[]): Buffer => Buffer.from(JSON.stringify({ version: 1, entries }));
const dump = (entries: unknown[]): string => dumpToString(decodeImage(convertToc(toc(entries), { input: 't' }).image).root);
const refuse = (entries: unknown[] | string): string => {
  try {
    convertToc(typeof entries === 'string' ? Buffer.from(entries) : toc(entries), { input: 't' });
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    return (e as CfsError).message;
  }
  throw new Error('accepted');
};

describe('modtime', () => {
  it('RFC 3339 with offsets and fractions; Go zero time = 0', () => {
    expect(parseModtime('2024-01-02T03:04:05Z')).toBe(1704164645n);
    expect(parseModtime('2024-01-02T05:04:05+02:00')).toBe(1704164645n);
    expect(parseModtime('2024-01-02T01:04:05.999-02:00')).toBe(1704164645n);
    expect(parseModtime('1969-12-31T23:59:59Z')).toBe(-1n);
    expect(parseModtime('1600-03-01T00:00:00Z')).toBe(-11670912000n);
    expect(parseModtime('0001-01-01T00:00:00Z')).toBe(0n);
    expect(parseModtime('2024-02-30T00:00:00Z')).toBeNull();
    expect(parseModtime('2024-01-02 03:04')).toBeNull();
    expect(refuse([{ name: 'f', type: 'fifo', modtime: 'yesterday' }])).toMatch(/^entry 0 "f": modtime "yesterday" is not an RFC 3339 time/);
  });
});

describe('regular files and payloads', () => {
  it('x-payload wins over the digest and is checked like a name', () => {
    expect(dump([{ name: 'f', type: 'reg', size: 3, digest: D1, 'x-payload': './objs//f1' }])).toContain('/f 3 100000 1 0 0 0 0.0 objs/f1 - -');
    expect(refuse([{ name: 'f', type: 'reg', size: 3, 'x-payload': '../escape' }])).toMatch(/x-payload has a ".." component/);
    expect(refuse([{ name: 'f', type: 'reg', size: 3, 'x-payload': '/abs' }])).toMatch(/x-payload is absolute/);
    expect(refuse([{ name: 'f', type: 'reg', size: 3, 'x-payload': './' }])).toMatch(/x-payload is empty/);
  });
  it('a non-empty file needs a digest; an empty one needs none and gets no payload', () => {
    expect(refuse([{ name: 'f', type: 'reg', size: 3 }])).toMatch(/^entry 0 "f": non-empty regular file without digest/);
    expect(dump([{ name: 'e', type: 'reg', digest: D1 }])).toContain('/e 0 100000 1 0 0 0 0.0 - - -');
  });
  it('chunk entries must follow their reg entry', () => {
    expect(refuse([{ name: 'c', type: 'chunk', chunkOffset: 5 }])).toMatch(/^entry 0 "c": chunk entry without a preceding reg entry/);
    expect(refuse([{ name: 'a', type: 'reg', size: 9, digest: D1 }, { name: 'b', type: 'chunk', chunkOffset: 5 }])).toMatch(/^entry 1 "b": chunk entry/);
    expect(refuse([{ name: 'a', type: 'reg', size: 9, digest: D1 }, { name: 'x', type: 'dir' }, { name: 'a', type: 'chunk', chunkOffset: 5 }])).toMatch(/^entry 2 "a": chunk entry/);
    expect(dump([{ name: './a', type: 'reg', size: 9, digest: D1 }, { name: 'a', type: 'chunk', chunkOffset: 5 }]).split('\n').length).toBe(3);
  });
  it('landmarks are skipped only at the root, with their chunks', () => {
    const d = dump([{ name: '.no.prefetch.landmark', type: 'reg', size: 1, digest: D1 }, { name: '.no.prefetch.landmark', type: 'chunk' }, { name: 'x/.no.prefetch.landmark', type: 'reg', size: 1, digest: D1 }]);
    expect(d.split('\n').filter(Boolean).map((l) => l.split(' ')[0])).toEqual(['/', '/x', '/x/.no.prefetch.landmark']);
  });
  it('unknown fields are ignored; names that are UTF-8 stay bytes', () => {
    expect(dump([{ name: 'ü', type: 'fifo', mode: 0o100644, whatever: [1, 2], endOffset: 7 }])).toContain('/\\xc3\\xbc 0 10644 1');
  });
});

describe('paths', () => {
  it('an explicit directory after its children sets their parent\'s metadata', () => {
    expect(dump([{ name: 'a/b/f', type: 'fifo' }, { name: 'a/', type: 'dir', mode: 0o700, uid: 3 }])).toMatch(/\n\/a \d+ 40700 3 3 0 /);
  });
  it('refuses a non-directory where a directory was implied, a second root, a non-dir root', () => {
    expect(refuse([{ name: 'a/f', type: 'fifo' }, { name: 'a', type: 'reg' }])).toMatch(/^entry 1 "a": not a directory, but entry 0 has it as a parent directory/);
    expect(refuse([{ name: './', type: 'dir' }, { name: '.', type: 'dir' }])).toMatch(/^entry 1 ".": duplicate entry: same path as entry 0/);
    expect(refuse([{ name: '', type: 'reg' }])).toMatch(/^entry 0 "": the root must be a directory/);
    expect(refuse([{ name: 'l', type: 'symlink', linkName: 'x' }, { name: 'l/f', type: 'fifo' }])).toMatch(/parent "l" is not a directory/);
  });
  it('refuses over-long components and paths, and lone surrogates', () => {
    expect(refuse([{ name: 'x'.repeat(256), type: 'fifo' }])).toMatch(/component of 256 bytes/);
    expect(refuse([{ name: 'é'.repeat(2048), type: 'fifo' }])).toMatch(/name is 4096 bytes long/);
    expect(refuse('{"version":1,"entries":[{"name":"a\\ud800","type":"fifo"}]}')).toMatch(/not valid Unicode/);
  });
});

describe('links and devices', () => {
  it('hardlinks: chains resolve to one inode, links to symlinks work, later targets do not', () => {
    const d = dump([
      { name: 'b', type: 'reg', size: 1, digest: D1, mode: 0o600 },
      { name: 'a', type: 'hardlink', linkName: 'b' },
      { name: 'c', type: 'hardlink', linkName: './a' },
    ]);
    expect(d).toContain(`/a 1 100600 3 0 0 0 0.0 ${D1.slice(7, 9)}/`);
    expect(d).toContain('/b 1 @100600 3 0 0 0 0.0 /a - -');
    expect(d).toContain('/c 1 @100600 3 0 0 0 0.0 /a - -');
    expect(refuse([{ name: 'a', type: 'hardlink', linkName: 'b' }, { name: 'b', type: 'reg', size: 1, digest: D2 }])).toMatch(/^entry 0 "a": hardlink target "b" is not an earlier entry/);
    expect(refuse([{ name: 'a', type: 'hardlink', linkName: 'a' }])).toMatch(/not an earlier entry/);
    expect(refuse([{ name: 'a', type: 'hardlink', linkName: '../x' }])).toMatch(/hardlink target has a ".." component/);
    expect(refuse([{ name: 'a', type: 'hardlink', linkName: './' }])).toMatch(/is a directory/);
  });
  it('xattrs: values and the per-inode total within libcomposefs limits', () => {
    const b64 = (n: number): string => Buffer.alloc(n, 0x61).toString('base64');
    expect(refuse([{ name: 'f', type: 'fifo', xattrs: { 'user.big': b64(70000) } }])).toMatch(/^entry 0 "f": xattr "user.big": xattr value too long \(70000 bytes\)/);
    expect(refuse([{ name: 'f', type: 'fifo', xattrs: { 'user.a': b64(20000), 'user.b': b64(20000) } }])).toMatch(/^entry 0 "f": xattr "user.b": xattrs exceed the per-inode size limit/);
    expect(dump([{ name: 'f', type: 'fifo', xattrs: { 'user.b': 'Mg==', 'user.a': 'MQ==' } }])).toContain('/f 0 10000 1 0 0 0 0.0 - - - user.a=1 user.b=2');
  });

  it('symlinks need a target; devices must fit a 32-bit rdev; ids must fit u32', () => {
    expect(refuse([{ name: 's', type: 'symlink' }])).toMatch(/symlink without linkName/);
    expect(refuse([{ name: 'd', type: 'char', devMajor: 4096 }])).toMatch(/devMajor 4096 does not fit/);
    expect(refuse([{ name: 'd', type: 'block', devMinor: 1 << 20 }])).toMatch(/devMinor 1048576 does not fit/);
    expect(refuse([{ name: 'd', type: 'fifo', uid: 2 ** 32 }])).toMatch(/uid: must fit in 32 bits/);
    expect(refuse([{ name: 'd', type: 'fifo', gid: 1.5 }])).toMatch(/gid: must be an integer/);
  });
});

describe('document level', () => {
  it('refuses non-object tops, missing entries, non-object entries', () => {
    expect(refuse('[]')).toMatch(/top level must be a JSON object/);
    expect(refuse('{"version":1}')).toMatch(/"entries" is missing/);
    expect(refuse('{"version":1,"entries":[null]}')).toMatch(/^entry 0: not a JSON object/);
    expect(refuse('{"version":"1","entries":[]}')).toMatch(/unsupported TOC version/);
  });
  it('an empty TOC is an empty root', () => {
    expect(dump([])).toBe('/ 4096 40755 2 0 0 0 0.0 - - -\n');
  });
});
