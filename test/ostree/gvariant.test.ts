/**
 * The GVariant reader: bytes from the GVariant specification, round trips through the test-side
 * writer, hostile framing (huge offsets, deep nesting, bad padding), and seeded mutation fuzz of
 * every OSTree object type (errors are fine, CfsError only; CFS_FUZZ_SEED / CFS_FUZZ_CASES).
 */
import { describe, expect, it } from 'vitest';
import { CfsError } from '../../format/index.js';
import { MAX_DEPTH, type GValue, parseType, readGVariant } from '../../ostree-convert/gvariant.js';
import { parseArchiveHeader, parseCommit, parseDirmeta, parseDirtree, parseOstreemeta } from '../../ostree-convert/objects.js';
import { mutate, prng } from '../../test-support/fuzz.js';
import { commitObject, dirmetaObject, dirtreeObject, filezObject, gv } from './make-repo.js';

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e.code;
    throw e;
  }
  return 'ok';
};
const H = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const C1 = 'a'.repeat(64);
const C2 = 'b'.repeat(64);

describe('GVariant reader', () => {
  it('reads the specification examples', () => {
    // "Array of Strings" and "Structure" examples of the GVariant specification
    expect(readGVariant(H('69 00 63 61 6e 00 68 61 73 00 73 74 72 69 6e 67 73 3f 00 02 06 0a 13'), 'as', 't')).toEqual(['i', 'can', 'has', 'strings?']);
    expect(readGVariant(H('66 6f 6f 00 ff ff ff ff 04'), '(si)', 't')).toEqual(['foo', -1]);
    // dict entry {ys}, array of int32 with padding in a tuple
    expect(readGVariant(H('68 65 6c 6c 6f 20 77 6f 72 6c 64 00 04 00 00 00 05 00 00 00 0c'), '(sai)', 't')).toEqual(['hello world', [4, 5]]);
    expect(readGVariant(H('68 65 6c 6c 6f 00 00'), 'ms', 't')).toBe('hello');
    expect(readGVariant(H(''), 'ms', 't')).toBe(null);
  });

  it('round-trips values through the test writer, byte for byte', () => {
    const cases: [string, GValue][] = [
      ['(a{sv}aya(say)sstayay)', [[['version', { type: 's', value: '1.0' }], ['n', { type: 'u', value: 7 }], ['list', { type: 'as', value: ['a', 'bc'] }]], Buffer.alloc(32, 1), [], 'subject', 'body', 12345n, Buffer.alloc(32, 2), Buffer.alloc(32, 3)]],
      ['(a(say)a(sayay))', [[['f', Buffer.alloc(32, 9)]], [['d', Buffer.alloc(32, 8), Buffer.alloc(32, 7)]]]],
      ['a(yt)', [[1, 2n], [3, 4n]]],
      ['(mumsmay)', [5, null, Buffer.from('xy')]],
      ['(nqixtdbh)', [-2, 65535, -7, -9n, 2n ** 63n, 1.5, true, 3]],
      ['aas', [['x'.repeat(300)], [], ['', Buffer.from('é').toString('latin1')]]],
      ['v', { type: '(ya{sv})', value: [9, [['k', { type: 'v', value: { type: 'g', value: 'a{sv}' } }]]] }],
      ['()', []],
      ['a()', [[], [], []]],
    ];
    for (const [type, value] of cases) {
      const bytes = gv(type, value);
      const back = readGVariant(bytes, type, type);
      expect(gv(type, back)).toEqual(bytes);
    }
    // a container over 64 KiB uses 4-byte framing offsets
    const big = Array.from({ length: 3000 }, (_, i) => `name-${i}-${'x'.repeat(20)}`);
    expect(readGVariant(gv('as', big), 'as', 'big')).toEqual(big);
  });

  it('rejects hostile framing with CFS_BAD_OBJECT', () => {
    const as = H('69 00 63 61 6e 00 02 06');
    expect(code(() => readGVariant(Buffer.concat([as.subarray(0, -1), Buffer.from([0xff])]), 'as', 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => readGVariant(H('61 00 62 00 05 02'), 'as', 't'))).toBe('CFS_BAD_OBJECT'); // offsets out of order
    // 8-byte offsets: only containers over 4 GiB use them, so any value here is out of range
    expect(code(() => readGVariant(Buffer.alloc(16, 0xff), '(sy)', 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => readGVariant(H('01 05 00 00 02 00 00 00'), '(yi)', 't'))).toBe('CFS_BAD_OBJECT'); // padding
    expect(code(() => readGVariant(H('66 6f 6f ff ff ff ff ff 04'), '(si)', 't'))).toBe('CFS_BAD_OBJECT'); // no NUL
    expect(code(() => readGVariant(H('02'), 'b', 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => readGVariant(H('01 02 03'), 'u', 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => readGVariant(H('c3 28 00'), 's', 't'))).toBe('CFS_BAD_OBJECT'); // not UTF-8
    expect(code(() => readGVariant(H('61 00 00 61 28'), 'v', 't'))).toBe('CFS_BAD_OBJECT'); // bad type string
    // variants nested past the limit
    let deep: Buffer = Buffer.from([1]);
    let type = 'y';
    for (let i = 0; i < MAX_DEPTH + 5; i++) {
      deep = Buffer.concat([deep, Buffer.from([0]), Buffer.from(type)]);
      type = 'v';
    }
    expect(code(() => readGVariant(deep, 'v', 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseType('a'.repeat(500) + 'y'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseType('{vy}'))).toBe('CFS_BAD_OBJECT');
  });

  it('parses OSTree objects and checks what ostree checks', () => {
    const c = parseCommit(commitObject({ rootTree: C1, rootMeta: C2, parent: C2, subject: 'x', timestamp: 1577836800n }), 'c');
    expect(c).toEqual({ parent: C2, subject: 'x', timestamp: 1577836800n, rootTree: C1, rootMeta: C2 });
    expect(parseDirmeta(dirmetaObject(0o40750, 1234, 5678, [['user.a', 'v']]), 'm')).toEqual({ uid: 1234, gid: 5678, mode: 0o40750, xattrs: [{ key: 'user.a', value: 'v' }] });
    expect(code(() => parseDirmeta(dirmetaObject(0o100644), 'm'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseOstreemeta(dirmetaObject(0o40755), 'm'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseDirmeta(dirmetaObject(0o40755, 0, 0, [['user.a', '1'], ['user.a', '2']]), 'm'))).toBe('CFS_BAD_OBJECT');
    for (const bad of ['', '.', '..', 'a/b']) expect(code(() => parseDirtree(dirtreeObject([[bad, C1]], []), 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseDirtree(dirtreeObject([['b', C1], ['a', C1]], []), 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseDirtree(dirtreeObject([['a', C1]], [['a', C1, C2]]), 't'))).toBe('CFS_BAD_OBJECT');
    expect(code(() => parseDirtree(dirtreeObject([['a', C1.slice(2)]], []), 't'))).toBe('CFS_BAD_OBJECT');
    const h = filezObject({ mode: 0o100755, content: Buffer.from('abc'), uid: 1, gid: 2, xattrs: [['security.selinux', 'x\0']] });
    expect(parseArchiveHeader(h.subarray(8, 8 + h.readUInt32BE(0)), 'h')).toEqual({ size: 3, uid: 1, gid: 2, mode: 0o100755, target: '', xattrs: [{ key: 'security.selinux', value: 'x\0' }] });
    const s = filezObject({ mode: 0o120777, target: '/x' });
    expect(parseArchiveHeader(s.subarray(8), 'h').target).toBe('/x');
    expect(code(() => parseArchiveHeader(filezObject({ mode: 0o20644 }).subarray(8), 'h'))).toBe('CFS_BAD_OBJECT'); // a device
  });

  it('fuzz: mutated objects fail only with CfsError', () => {
    const seeds = [
      commitObject({ rootTree: C1, rootMeta: C2, parent: C2, subject: 'fuzz subject', timestamp: 99n }),
      gv('(a{sv}aya(say)sstayay)', [[['version', { type: 's', value: '1' }], ['x', { type: 'a{sv}', value: [['k', { type: 'mu', value: 3 }]] }]], Buffer.alloc(0), [], 's', 'b', 1n, Buffer.alloc(32), Buffer.alloc(32)]),
      dirtreeObject([['a', C1], ['b', C2], ['ünï', C1]], [['d', C1, C2], ['e', C2, C1]]),
      dirmetaObject(0o40755, 1, 2, [['user.x', 'y'], ['security.selinux', 'system_u:object_r:usr_t:s0\0']]),
      filezObject({ mode: 0o100644, content: Buffer.from('hello'), xattrs: [['user.k', 'v']] }).subarray(8),
    ];
    const parsers = [parseCommit, parseCommit, parseDirtree, parseDirmeta, parseArchiveHeader];
    const types = ['v', 'a{sv}', '(a{sv}aya(say)sstayay)', 'a(sayay)', 'm(sv)', 'aav'];
    const rnd = prng(Number(process.env.CFS_FUZZ_SEED ?? 8));
    const n = Number(process.env.CFS_FUZZ_CASES ?? 8000);
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const k = i % seeds.length;
      const buf = mutate(seeds[k], rnd);
      for (const f of [() => parsers[k](buf, `case ${i}`), () => readGVariant(buf, types[i % types.length], `case ${i}`)]) {
        try {
          f();
          seen.set('ok', (seen.get('ok') ?? 0) + 1);
        } catch (e) {
          if (!(e instanceof CfsError)) throw new Error(`case ${i} (object ${k}, ${buf.toString('hex')}): ${(e as Error).stack}`);
          seen.set(e.code, (seen.get(e.code) ?? 0) + 1);
        }
      }
    }
    expect(seen.get('ok')).toBeGreaterThan(n / 50);
    expect(seen.get('CFS_BAD_OBJECT')).toBeGreaterThan(n / 2);
  });
});
