/**
 * The FUSE request handlers without a kernel: requests built here, replies read back from the
 * file the server writes to. Pins what the kernel relies on: readdir offsets that resume
 * anywhere, xattr size queries and ERANGE, negative lookups, inline and object reads, EIO for a
 * missing object (with one log line), and inode numbers from the tree order.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeImage, encodeImage, parseDump } from '../../format/index.js';
import { FuseServer, ImageView } from '../../mount/fuse.js';
import { ATTR, ATTR_OUT, DIRENT, ENTRY_OUT, Errno, IN_HEADER, OPEN_OUT, OUT_HEADER, Op, direntSize } from '../../mount/fuse-proto.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-fuse-server-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const names = Array.from({ length: 300 }, (_, i) => `entry-${String(i).padStart(3, '0')}-${'y'.repeat(i % 50)}`);
const DUMP =
  [
    '/ 4096 40755 2 0 0 0 1700000000.5 - - -',
    '/big 100000 100644 1 1000 1000 0 1700000001.123456789 ab/cdef - -',
    '/gone 70000 100644 1 0 0 0 1700000002.0 12/3456 - -',
    '/inline 5 100600 1 0 0 0 1700000003.0 - hello - user.a=1 user.long=' + 'v'.repeat(100) + ' trusted.overlay.x=hidden',
    '/sym 6 120777 1 0 0 0 1700000004.0 inline - -',
    '/dir 4096 40755 2 0 0 0 1700000005.0 - - -',
    ...names.map((n) => `/dir/${n} 0 100644 1 0 0 0 1700000006.0 - - -`),
  ].join('\n') + '\n';
const root = decodeImage(encodeImage(parseDump(Buffer.from(DUMP, 'latin1'), { input: 't.dump' }))).root;
const view = new ImageView(root);
const base = path.join(tmp, 'objects');
fs.mkdirSync(path.join(base, 'ab'), { recursive: true });
const bigContent = Buffer.alloc(100000, 'z');
fs.writeFileSync(path.join(base, 'ab', 'cdef'), bigContent);
const out = path.join(tmp, 'replies');
const outFd = fs.openSync(out, 'w+');
const logs: string[] = [];
const server = new FuseServer(view, [base], outFd, (l) => logs.push(l));

let unique = 0n;
/** Send one request; returns [error, body] of its reply. */
function call(opcode: number, nodeid: number, body: Buffer = Buffer.alloc(0)): [number, Buffer] {
  const req = Buffer.alloc(IN_HEADER.SIZE + body.length);
  req.writeUInt32LE(req.length, IN_HEADER.len);
  req.writeUInt32LE(opcode, IN_HEADER.opcode);
  req.writeBigUInt64LE(++unique, IN_HEADER.unique);
  req.writeBigUInt64LE(BigInt(nodeid), IN_HEADER.nodeid);
  body.copy(req, IN_HEADER.SIZE);
  const start = fs.fstatSync(outFd).size;
  expect(server.handle(req)).toBe(true);
  const reply = fs.readFileSync(out).subarray(start);
  expect(reply.readUInt32LE(OUT_HEADER.len)).toBe(reply.length);
  expect(reply.readBigUInt64LE(OUT_HEADER.unique)).toBe(unique);
  return [-reply.readInt32LE(OUT_HEADER.error) || 0, reply.subarray(OUT_HEADER.SIZE)];
}
const cstr = (s: string): Buffer => Buffer.from(s + '\0', 'latin1');
const lookup = (parent: number, name: string): [number, Buffer] => call(Op.LOOKUP, parent, cstr(name));
const idOf = (name: string): number => Number(lookup(1, name)[1].readBigUInt64LE(ENTRY_OUT.nodeid));
function readIn(fh: bigint, offset: number, size: number): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(fh, 0);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(size, 16);
  return b;
}
const xattrIn = (size: number, name?: string): Buffer => Buffer.concat([Buffer.from(new Uint32Array([size, 0]).buffer), name === undefined ? Buffer.alloc(0) : cstr(name)]);

describe('FUSE request handlers', () => {
  it('lookup and getattr: breadth-first inode numbers, attributes with nanoseconds; cached negative entries', () => {
    expect(['big', 'dir', 'gone', 'inline', 'sym'].map(idOf)).toEqual([2, 3, 4, 5, 6]);
    const [err, entry] = lookup(1, 'big');
    expect(err).toBe(0);
    const a = entry.subarray(ENTRY_OUT.attr);
    expect(a.readBigUInt64LE(ATTR.size)).toBe(100000n);
    expect(a.readBigUInt64LE(ATTR.mtime)).toBe(1700000001n);
    expect(a.readUInt32LE(ATTR.mtimensec)).toBe(123456789);
    expect(a.readUInt32LE(ATTR.mode)).toBe(0o100644);
    expect(a.readUInt32LE(ATTR.uid)).toBe(1000);
    const [, none] = lookup(1, 'missing');
    expect(none.readBigUInt64LE(ENTRY_OUT.nodeid)).toBe(0n);
    expect(none.readBigUInt64LE(ENTRY_OUT.entryValid)).toBeGreaterThan(0n);
    const [, attr] = call(Op.GETATTR, 1);
    expect(attr.subarray(ATTR_OUT.attr).readUInt32LE(ATTR.mode)).toBe(0o40755);
    expect(call(Op.GETATTR, 99999)[0]).toBe(Errno.ENOENT);
    expect(call(Op.READLINK, idOf('sym'))[1].toString()).toBe('inline');
  });

  it('readdir(plus) in small slices resumes at each offset and lists every entry once', () => {
    for (const plus of [false, true]) {
      const seen: string[] = [];
      let offset = 0;
      for (let calls = 0; ; calls++) {
        expect(calls).toBeLessThan(1000);
        const [err, b] = call(plus ? Op.READDIRPLUS : Op.READDIR, idOf('dir'), readIn(0n, offset, 700));
        expect(err).toBe(0);
        if (b.length === 0) break;
        for (let p = 0; p < b.length; ) {
          const d = p + (plus ? ENTRY_OUT.SIZE : 0);
          const len = b.readUInt32LE(d + DIRENT.namelen);
          const name = b.toString('latin1', d + DIRENT.SIZE, d + DIRENT.SIZE + len);
          seen.push(name);
          offset = Number(b.readBigUInt64LE(d + DIRENT.off));
          if (plus && name !== '.' && name !== '..') expect(Number(b.readBigUInt64LE(p + ENTRY_OUT.nodeid))).toBe(Number(b.readBigUInt64LE(d + DIRENT.ino)));
          p = d + direntSize(len);
        }
      }
      expect(seen).toEqual(['.', '..', ...names]);
    }
  });

  it('xattrs: size queries, ERANGE, ENODATA, overlay internals hidden', () => {
    const id = idOf('inline');
    const [, size] = call(Op.LISTXATTR, id, xattrIn(0));
    expect(size.readUInt32LE(0)).toBe('user.a\0user.long\0'.length);
    expect(call(Op.LISTXATTR, id, xattrIn(100))[1].toString('latin1')).toBe('user.a\0user.long\0');
    expect(call(Op.LISTXATTR, id, xattrIn(5))[0]).toBe(Errno.ERANGE);
    expect(call(Op.GETXATTR, id, xattrIn(0, 'user.long'))[1].readUInt32LE(0)).toBe(100);
    expect(call(Op.GETXATTR, id, xattrIn(10, 'user.long'))[0]).toBe(Errno.ERANGE);
    expect(call(Op.GETXATTR, id, xattrIn(10, 'user.a'))[1].toString()).toBe('1');
    expect(call(Op.GETXATTR, id, xattrIn(10, 'trusted.overlay.x'))[0]).toBe(Errno.ENODATA);
    expect(call(Op.GETXATTR, id, xattrIn(10, 'user.none'))[0]).toBe(Errno.ENODATA);
  });

  it('open + read: inline content, object content at any offset, EIO and one log line for a missing object', () => {
    const open = (name: string, flags = 0): [number, bigint] => {
      const [err, b] = call(Op.OPEN, idOf(name), Buffer.from(new Uint32Array([flags, 0]).buffer));
      return [err, err ? 0n : b.readBigUInt64LE(OPEN_OUT.fh)];
    };
    const [, ifh] = open('inline');
    expect(call(Op.READ, 0, readIn(ifh, 1, 100))[1].toString()).toBe('ello');
    const [, bfh] = open('big');
    expect(call(Op.READ, 0, readIn(bfh, 99990, 4096))[1]).toEqual(bigContent.subarray(99990));
    expect(call(Op.READ, 0, readIn(bfh, 0, 65536))[1]).toEqual(bigContent.subarray(0, 65536));
    expect(call(Op.RELEASE, 0, readIn(bfh, 0, 0))[0]).toBe(0);
    expect(open('big', fs.constants.O_RDWR)[0]).toBe(Errno.EROFS);
    expect(open('gone')[0]).toBe(Errno.EIO);
    expect(open('gone')[0]).toBe(Errno.EIO);
    expect(logs).toEqual([`/gone: object 12/3456 not found in ${base}; reading it gives EIO`]);
  });
});
