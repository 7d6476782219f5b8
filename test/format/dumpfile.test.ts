import { describe, expect, it } from 'vitest';
import { CfsError, decodeImage, dumpToString, encodeImage, parseDump } from '../../format/index.js';

const ROOT = '/ 4096 40755 2 0 0 0 1700000000.0 - - -\n';
const parse = (text: string, strict = true) => parseDump(Buffer.from(text, 'latin1'), { strict, input: 't.dump' });
const rt = (text: string, strict = true): string => dumpToString(decodeImage(encodeImage(parse(text, strict))).root);
const err = (text: string, strict = true): CfsError => {
  try {
    parse(text, strict);
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    return e as CfsError;
  }
  throw new Error('expected a parse error');
};

describe('dump parser', () => {
  it('reads every byte through escapes and prints the canonical escapes', () => {
    let name = '';
    for (let c = 1; c < 256; c++) if (c !== 0x2f) name += `\\x${c.toString(16).padStart(2, '0')}`;
    const root = parse(`${ROOT}/${name.slice(0, 4 * 200)} 0 100644 1 0 0 0 1.0 - - -\n`);
    const child = root.children![0].name;
    expect(child.length).toBe(200);
    expect(child.charCodeAt(0)).toBe(1);
    const printed = dumpToString(root).split('\n')[1].split(' ')[0];
    expect(printed).toContain('\\t');
    expect(printed).toContain('\\n');
    expect(printed).toContain('\\x20');
    expect(printed).toContain('\\x01');
    expect(printed).toContain('!');
    expect(parse(`${ROOT}${printed} 0 100644 1 0 0 0 1.0 - - -\n`).children![0].name).toBe(child);
  });

  it('escapes = in xattrs and a lone - in PAYLOAD and CONTENT', () => {
    const text = `${ROOT}/f 1 100644 1 0 0 0 1.0 \\x2d \\x2d - user.a\\x3db=c\\x3dd\n`;
    expect(rt(text).split('\n')[1]).toBe('/f 1 100644 1 0 0 0 1.0 - \\x2d - user.a\\x3db=c\\x3dd');
    const f = parse(text).children![0].inode;
    expect(f.payload).toBe('-');
    expect(f.xattrs[0].key).toBe('user.a=b');
  });

  it('truncates u32 fields as mkcomposefs does', () => {
    const f = parse(`${ROOT}/c 0 20644 4294967297 4294967296 4294967298 4294967296 1.4294967297 - - -\n`).children![0].inode;
    expect([f.nlink, f.uid, f.gid, f.rdev, f.mtimeNsec]).toEqual([1, 0, 2, 0, 1]);
  });

  it('reads a bad GID as 0 when UID is not 0 (mkcomposefs quirk), and rejects it when UID is 0', () => {
    expect(parse(`${ROOT}/f 0 100644 1 5 xyz 0 1.0 - - -\n`).children![0].inode.gid).toBe(0);
    expect(err(`${ROOT}/f 0 100644 1 0 xyz 0 1.0 - - -\n`).message).toMatch(/Invalid integer xyz/);
  });

  it('applies strict mode only when asked', () => {
    const symlink = `${ROOT}/l 99 120777 1 0 0 0 1.0 target - -\n`;
    expect(err(symlink).message).toMatch(/Invalid symlink size/);
    expect(parse(symlink, false).children![0].inode.size).toBe(6);
    const rdev = `${ROOT}/f 0 100644 1 0 0 5 1.0 - - -\n`;
    expect(err(rdev).message).toMatch(/Non-zero devnum/);
    expect(parse(rdev, false).children![0].inode.rdev).toBe(0);
    const noNewline = ROOT.trimEnd();
    expect(err(noNewline).message).toMatch(/trailing newline/);
    expect(parse(noNewline, false).children).toEqual([]);
  });

  it('names the input and line in errors', () => {
    const e = err(`${ROOT}/a 0 100644 1 0 0 0 1.0 - - -\n/a/b 0 100644 1 0 0 0 1.0 - - -\n`);
    expect(e.code).toBe('CFS_DUMP_SYNTAX');
    expect(e.line).toBe(3);
    expect(e.describe()).toBe('t.dump:3: CFS_DUMP_SYNTAX: Parent must be a directory for /a/b');
  });

  it('rejects bad input lines', () => {
    const cases: [string, RegExp][] = [
      [`/a 0 100644 1 0 0 0 1.0 - - -\n`, /Root node not present/],
      [`${ROOT}${ROOT}`, /multiple roots/],
      [`${ROOT}/x/y 0 100644 1 0 0 0 1.0 - - -\n`, /Parent directory missing/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 - - -\n/a 0 100644 1 0 0 0 1.0 - - -\n`, /already exist/],
      [`${ROOT}/a 0 170644 1 0 0 0 1.0 - - -\n`, /Invalid mode/],
      [`${ROOT}/a 3 100644 1 0 0 0 1.0 - ab -\n`, /Invalid content size/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 - - - user.x\n`, /Missing = in xattr/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 - - - =v\n`, /Can't set xattr/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 - - abc\n`, /Invalid digest/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 \\q - -\n`, /Unsupported escape/],
      [`${ROOT}/a 0 100644 1 0 0 0 1.0 \\x4 - -\n`, /hex escape/],
      [`${ROOT}/a 0 100644 1 0 0 0 1 - - -\n`, /Invalid integer/],
      [`${ROOT}/a\0 0 100644 1 0 0 0 1.0 - - -\n`, /embedded NUL/],
      [`${ROOT}\n`, /Invalid empty path/],
      [`${ROOT}/${'n'.repeat(256)} 0 100644 1 0 0 0 1.0 - - -\n`, /Can't add child/],
      [`${ROOT}/big 9007199254740993 100644 1 0 0 0 1.0 - - -\n`, /File too large/],
    ];
    for (const [text, re] of cases) expect(err(text).message, JSON.stringify(text)).toMatch(re);
  });

  it('resolves hardlinks to targets later in the file and through other links', () => {
    const root = parse(
      `${ROOT}/a 0 @100644 0 0 0 0 0.0 /b - -\n/b 0 @100644 0 0 0 0 0.0 /c - -\n/c 5 100644 7 0 0 0 1.0 - hello -\n`,
    );
    const [a, b, c] = root.children!;
    expect(a.link && b.link && !c.link).toBe(true);
    expect(a.inode).toBe(c.inode);
    expect(b.inode).toBe(c.inode);
    expect(c.inode.nlink).toBe(7); // hardlink lines never change the target's NLINK
  });

  it('rejects broken hardlinks', () => {
    expect(err(`${ROOT}/a 0 @100644 0 0 0 0 0.0 /a - -\n`).message).toMatch(/Self-referential/);
    expect(err(`${ROOT}/a 0 @100644 0 0 0 0 0.0 /b - -\n/b 0 @100644 0 0 0 0 0.0 /a - -\n`).message).toMatch(/loop/);
    expect(err(`${ROOT}/d 0 40755 2 0 0 0 0.0 - - -\n/a 0 @100644 0 0 0 0 0.0 /d - -\n`).message).toMatch(/directory/);
    expect(err(`${ROOT}/a 0 @100644 0 0 0 0 0.0 /nope - -\n`).message).toMatch(/No target/);
    expect(err(`${ROOT}/a 0 @100644 0 0 0 0 0.0 - - -\n`).message).toMatch(/No target path/);
  });

  it('keeps the xattr budget of mkcomposefs', () => {
    const big = 'v'.repeat(16000);
    expect(parse(`${ROOT}/f 0 100644 1 0 0 0 1.0 - - - user.a=${big} user.b=${big}\n`).children![0].inode.xattrs.length).toBe(2);
    expect(err(`${ROOT}/f 0 100644 1 0 0 0 1.0 - - - user.a=${big} user.b=${big} user.c=${'v'.repeat(800)}\n`).message).toMatch(
      /per-inode size limit/,
    );
  });
});

describe('encoder and decoder agree', () => {
  it('round-trips every file type, xattrs, whiteouts and hardlinks', () => {
    const text =
      ROOT +
      [
        '/blk 0 60600 1 1 2 2049 1700000001.5 - - -',
        '/chr 0 20600 1 0 0 1025 1700000000.0 - - -',
        '/d 4096 40700 2 10 20 0 1700000000.0 - - - user.k=v',
        '/d/f 100000 100600 2 0 0 0 1700000000.0 ab/cdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
        '/d/h 0 @100600 0 0 0 0 0.0 /d/f - -',
        '/d/wh 0 20000 1 0 0 0 1700000000.0 - - -',
        '/fifo 0 10644 1 0 0 0 1700000000.0 - - -',
        '/inl 3 100644 1 0 0 0 1700000000.0 - abc -',
        '/l 4 120777 1 0 0 0 1700000000.0 /tgt - -',
        '/sock 0 140777 1 0 0 0 1700000000.0 - - - trusted.overlay.x=y',
      ].join('\n') +
      '\n';
    expect(rt(text)).toBe(
      [
        '/ 4096 40755 3 0 0 0 1700000000.0 - - -',
        '/blk 0 60600 1 1 2 2049 1700000001.5 - - -',
        '/chr 0 20600 1 0 0 1025 1700000000.0 - - -',
        '/d 67 40700 2 10 20 0 1700000000.0 - - - trusted.overlay.opaque=x user.k=v user.overlay.opaque=x',
        '/d/f 100000 100600 2 0 0 0 1700000000.0 ab/cdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
        '/d/h 100000 @100600 2 0 0 0 1700000000.0 /d/f - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
        '/d/wh 0 20000 1 0 0 0 1700000000.0 - - -',
        '/fifo 0 10644 1 0 0 0 1700000000.0 - - -',
        '/inl 3 100644 1 0 0 0 1700000000.0 - abc -',
        '/l 4 120777 1 0 0 0 1700000000.0 /tgt - -',
        '/sock 0 140777 1 0 0 0 1700000000.0 - - - trusted.overlay.x=y',
        '',
      ].join('\n'),
    );
  });
});
