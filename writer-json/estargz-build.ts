/**
 * Builds eStargz blobs (for tests and the benchmark; files held in memory), laid out as
 * stargz-snapshotter's writer does: each tar header in its own gzip member, each file chunk in
 * its own member (or several small files sharing one member, told apart by innerOffset), then the
 * TOC member (a tar holding stargz.index.json) and the 51-byte footer pointing at it. With a
 * zstd compressor it builds stargz-snapshotter's zstd:chunked instead: zstd frames for members,
 * the TOC as zstd-compressed JSON in a skippable frame, and the 40-byte footer in another.
 */
import { createHash } from 'node:crypto';
import * as zlib from 'node:zlib';

export interface BlobFile {
  name: string;
  type: 'dir' | 'reg' | 'symlink' | 'hardlink';
  data?: Buffer;
  linkName?: string;
  mode?: number;
  /** Split the content into chunks of this size (chunk entries). */
  chunkSize?: number;
  /** Put this file's content in the same member as the previous small file (innerOffset). */
  shareMember?: boolean;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A ustar header (name ≤ 100 bytes). */
export function tarHeader(name: string, opts: { size?: number; type?: string; mode?: number; linkName?: string }): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, at: number, len: number): void => void h.write(s, at, len, 'latin1');
  const oct = (n: number, at: number, len: number): void => put(n.toString(8).padStart(len - 1, '0') + '\0', at, len);
  put(name, 0, 100);
  oct(opts.mode ?? 0o644, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(opts.size ?? 0, 124, 12);
  oct(1700000000, 136, 12);
  put('        ', 148, 8);
  put(opts.type ?? '0', 156, 1);
  put(opts.linkName ?? '', 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);

/** The 51-byte eStargz footer: an empty gzip member whose FEXTRA names the TOC offset. */
export function footer(tocOffset: number): Buffer {
  const f = Buffer.alloc(51);
  Buffer.from([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]).copy(f, 0);
  f.writeUInt16LE(26, 10);
  f.write('SG', 12, 'latin1');
  f.writeUInt16LE(22, 14);
  f.write(`${tocOffset.toString(16).padStart(16, '0')}STARGZ`, 16, 'latin1');
  Buffer.from([1, 0, 0, 0xff, 0xff]).copy(f, 38); // empty stored deflate block
  // CRC32 and ISIZE of no data: zero.
  return f;
}

const skippable = (data: Buffer): Buffer => {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
};

/** stargz-snapshotter's 40-byte zstd:chunked footer. */
export function zstdChunkedFooter(tocOffset: number, tocCompressed: number, tocSize: number): Buffer {
  const f = Buffer.alloc(40);
  f.writeBigUInt64LE(BigInt(tocOffset), 0);
  f.writeBigUInt64LE(BigInt(tocCompressed), 8);
  f.writeBigUInt64LE(BigInt(tocSize), 16);
  f.writeBigUInt64LE(1n, 24);
  f.write('GnUlInUx', 32, 'latin1');
  return f;
}

/**
 * Build the blob and its TOC. `zstd`, when given, compresses one member (e.g. by running the
 * zstd CLI) and makes the blob zstd:chunked.
 */
export function buildEstargz(
  files: BlobFile[],
  opts: { zstd?: (data: Buffer) => Buffer } = {},
): { blob: Buffer; toc: { version: number; entries: Record<string, unknown>[] }; tocOffset: number } {
  const compress = opts.zstd ?? ((b: Buffer) => zlib.gzipSync(b));
  const parts: Buffer[] = [];
  let pos = 0;
  const emit = (b: Buffer): number => {
    const at = pos;
    parts.push(b);
    pos += b.length;
    return at;
  };
  const entries: Record<string, unknown>[] = [];
  /** The member being filled with small shared files: its offset and uncompressed bytes so far. */
  let shared: { offset: number; data: Buffer[]; len: number } | null = null;
  const flushShared = (): void => {
    if (shared) emit(compress(Buffer.concat(shared.data)));
    shared = null;
  };
  for (const f of files) {
    const data = f.data ?? Buffer.alloc(0);
    const type = { dir: '5', reg: '0', symlink: '2', hardlink: '1' }[f.type];
    const header = tarHeader(f.name, { size: f.type === 'reg' ? data.length : 0, type, mode: f.mode, linkName: f.linkName });
    const base: Record<string, unknown> = { name: f.name, type: f.type, mode: f.mode ?? (f.type === 'dir' ? 0o755 : 0o644), modtime: '2023-11-14T22:13:20Z' };
    if (f.linkName) base.linkName = f.linkName;
    if (f.type !== 'reg' || data.length === 0) {
      flushShared();
      emit(compress(header));
      if (f.type === 'reg') base.size = 0;
      entries.push(base);
      continue;
    }
    base.size = data.length;
    base.digest = sha(data);
    if (f.shareMember) {
      // Header and data in one member shared with the previous small file.
      if (!shared) shared = { offset: pos, data: [], len: 0 };
      shared.data.push(header);
      shared.len += 512;
      entries.push({ ...base, offset: shared.offset, innerOffset: shared.len, chunkDigest: sha(data) });
      shared.data.push(data, pad(data.length));
      shared.len += data.length + pad(data.length).length;
      continue;
    }
    flushShared();
    emit(compress(header));
    const cs = f.chunkSize ?? data.length;
    for (let off = 0; off < data.length; off += cs) {
      const chunk = data.subarray(off, Math.min(off + cs, data.length));
      const last = off + cs >= data.length;
      const body = last ? Buffer.concat([chunk, pad(data.length)]) : chunk;
      const offset = emit(compress(body));
      const e: Record<string, unknown> = off === 0 ? { ...base, offset } : { name: f.name, type: 'chunk', offset, chunkOffset: off };
      if (!last || off > 0) e.chunkSize = chunk.length;
      e.chunkDigest = sha(chunk);
      entries.push(e);
    }
  }
  flushShared();
  const toc = { version: 1, entries };
  const tocJson = Buffer.from(JSON.stringify(toc));
  if (opts.zstd) {
    const z = opts.zstd(tocJson);
    const tocOffset = emit(skippable(z)) + 8;
    emit(skippable(zstdChunkedFooter(tocOffset, z.length, tocJson.length)));
    return { blob: Buffer.concat(parts), toc, tocOffset };
  }
  const tocTar = Buffer.concat([tarHeader('stargz.index.json', { size: tocJson.length }), tocJson, pad(tocJson.length), Buffer.alloc(1024)]);
  const tocOffset = emit(zlib.gzipSync(tocTar));
  emit(footer(tocOffset));
  return { blob: Buffer.concat(parts), toc, tocOffset };
}
