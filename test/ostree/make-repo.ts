/**
 * Test-side GVariant writer and OSTree object builders, so hostile repos are built here from a
 * recipe (no binary blobs). The writer mirrors ostree-convert/gvariant.ts: same value shapes.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { type GType, type GValue, type Variant, alignOf, parseType } from '../../ostree-convert/gvariant.js';

const alignUp = (n: number, a: number): number => (n + a - 1) & -a;
const fixedOf = (t: GType): number | null => (t.kind === 'basic' || t.kind === 'tuple' ? t.fixed : null);

/** Smallest offset width w with body + n*w representable in w bytes. */
function width(body: number, n: number): number {
  for (const w of [1, 2, 4]) if (body + n * w <= 2 ** (8 * w) - 1) return w;
  return 8;
}

function offsets(list: number[], w: number): Buffer {
  const b = Buffer.alloc(list.length * w);
  list.forEach((o, i) => b.writeUIntLE(o, i * w, Math.min(w, 6)));
  return b;
}

export function serialize(t: GType, v: GValue): Buffer {
  switch (t.kind) {
    case 'basic': {
      const b = Buffer.alloc(t.fixed);
      const n = v as number;
      if (t.ch === 'y' || t.ch === 'b') b.writeUInt8(t.ch === 'b' ? (v ? 1 : 0) : n);
      else if (t.ch === 'n') b.writeInt16LE(n);
      else if (t.ch === 'q') b.writeUInt16LE(n);
      else if (t.ch === 'i' || t.ch === 'h') b.writeInt32LE(n);
      else if (t.ch === 'u') b.writeUInt32LE(n);
      else if (t.ch === 'x') b.writeBigInt64LE(v as bigint);
      else if (t.ch === 't') b.writeBigUInt64LE(v as bigint);
      else b.writeDoubleLE(n);
      return b;
    }
    case 'string':
      return Buffer.concat([Buffer.from(v as string, 'latin1'), Buffer.from([0])]);
    case 'variant': {
      const vv = v as Variant;
      return Buffer.concat([serialize(parseType(vv.type), vv.value), Buffer.from([0]), Buffer.from(vv.type, 'latin1')]);
    }
    case 'maybe': {
      if (v === null) return Buffer.alloc(0);
      const inner = serialize(t.elem, v);
      return fixedOf(t.elem) !== null ? inner : Buffer.concat([inner, Buffer.from([0])]);
    }
    case 'array': {
      if (t.elem.kind === 'basic' && t.elem.ch === 'y') return Buffer.from(v as Uint8Array);
      const items = v as GValue[];
      const a = alignOf(t.elem);
      const parts: Buffer[] = [];
      let pos = 0;
      const ends: number[] = [];
      for (const item of items) {
        const pad = alignUp(pos, a) - pos;
        if (pad) parts.push(Buffer.alloc(pad));
        const b = serialize(t.elem, item);
        parts.push(b);
        pos += pad + b.length;
        ends.push(pos);
      }
      if (fixedOf(t.elem) !== null || items.length === 0) return Buffer.concat(parts);
      return Buffer.concat([...parts, offsets(ends, width(pos, ends.length))]);
    }
    case 'tuple': {
      const vals = v as GValue[];
      const parts: Buffer[] = [];
      let pos = 0;
      const ends: number[] = [];
      t.members.forEach((m, k) => {
        const pad = alignUp(pos, alignOf(m)) - pos;
        if (pad) parts.push(Buffer.alloc(pad));
        const b = serialize(m, vals[k]);
        parts.push(b);
        pos += pad + b.length;
        if (fixedOf(m) === null && k < t.members.length - 1) ends.push(pos);
      });
      if (t.members.length === 0) return Buffer.from([0]);
      if (t.fixed !== null) return Buffer.concat([...parts, Buffer.alloc(t.fixed - pos)]);
      return Buffer.concat([...parts, offsets(ends.reverse(), width(pos, ends.length))]);
    }
  }
}

export const gv = (type: string, v: GValue): Buffer => serialize(parseType(type), v);

const be32 = (n: number): number => Buffer.from(Uint32Array.of(n).buffer).readUInt32BE(0);
const be64 = (n: bigint): bigint => Buffer.from(BigUint64Array.of(n).buffer).readBigUInt64BE(0);
const raw = (hex: string): Buffer => Buffer.from(hex, 'hex');
const xattrList = (xattrs: [string, string][]): GValue[] => xattrs.map(([k, v]) => [Buffer.from(k + '\0', 'latin1'), Buffer.from(v, 'latin1')]);

export const commitObject = (o: { rootTree: string; rootMeta: string; parent?: string; subject?: string; timestamp?: bigint }): Buffer =>
  gv('(a{sv}aya(say)sstayay)', [[], o.parent ? raw(o.parent) : Buffer.alloc(0), [], o.subject ?? 'test', '', be64(o.timestamp ?? 0n), raw(o.rootTree), raw(o.rootMeta)]);

export const dirtreeObject = (files: [string, string][], dirs: [string, string, string][]): Buffer =>
  gv('(a(say)a(sayay))', [files.map(([n, c]) => [n, raw(c)]), dirs.map(([n, t, m]) => [n, raw(t), raw(m)])]);

export const dirmetaObject = (mode: number, uid = 0, gid = 0, xattrs: [string, string][] = []): Buffer => gv('(uuua(ayay))', [be32(uid), be32(gid), be32(mode), xattrList(xattrs)]);

/** An archive .filez object: header length, 4 zero bytes, (tuuuusa(ayay)) header, raw deflate. */
export function filezObject(o: { mode: number; content?: Buffer; target?: string; uid?: number; gid?: number; xattrs?: [string, string][] }): Buffer {
  const content = o.content ?? Buffer.alloc(0);
  const header = gv('(tuuuusa(ayay))', [be64(BigInt(content.length)), be32(o.uid ?? 0), be32(o.gid ?? 0), be32(o.mode), 0, o.target ?? '', xattrList(o.xattrs ?? [])]);
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(header.length);
  return Buffer.concat([prefix, header, o.target ? Buffer.alloc(0) : zlib.deflateRawSync(content)]);
}

export const sha256hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A file in a synthetic tree: content (regular) or target (symlink). */
export type SynthEntry = { content: Buffer; mode?: number; xattrs?: [string, string][] } | { target: string } | { dir: Record<string, SynthEntry>; mode?: number };

/**
 * Write an archive-mode repo holding one commit of `tree` (ref "main"). Content objects are
 * named by the sha256 of their .filez bytes (not ostree's content checksum: the converter does
 * not verify content checksums). Returns the commit checksum.
 */
export function makeArchiveRepo(dir: string, tree: Record<string, SynthEntry>): string {
  fs.mkdirSync(path.join(dir, 'objects'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'refs', 'heads'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'config'), '[core]\nrepo_version=1\nmode=archive-z2\n');
  const put = (data: Buffer, ext: string): string => {
    const c = sha256hex(data);
    fs.mkdirSync(path.join(dir, 'objects', c.slice(0, 2)), { recursive: true });
    fs.writeFileSync(path.join(dir, 'objects', c.slice(0, 2), `${c.slice(2)}.${ext}`), data);
    return c;
  };
  const writeDir = (entries: Record<string, SynthEntry>, mode = 0o40755): [string, string] => {
    const files: [string, string][] = [];
    const dirs: [string, string, string][] = [];
    for (const name of Object.keys(entries).sort((a, b) => (Buffer.from(a) < Buffer.from(b) ? -1 : 1))) {
      const e = entries[name];
      const bname = Buffer.from(name).toString('latin1');
      if ('dir' in e) dirs.push([bname, ...writeDir(e.dir, e.mode)]);
      else if ('target' in e) files.push([bname, put(filezObject({ mode: 0o120777, target: e.target }), 'filez')]);
      else files.push([bname, put(filezObject({ mode: e.mode ?? 0o100644, content: e.content, xattrs: e.xattrs }), 'filez')]);
    }
    return [put(dirtreeObject(files, dirs), 'dirtree'), put(dirmetaObject(mode), 'dirmeta')];
  };
  const [rootTree, rootMeta] = writeDir(tree);
  const commit = put(commitObject({ rootTree, rootMeta }), 'commit');
  fs.writeFileSync(path.join(dir, 'refs', 'heads', 'main'), commit + '\n');
  return commit;
}
