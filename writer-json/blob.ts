/**
 * eStargz / CRFS stargz / zstd:chunked blobs: find the TOC through the footer, and read file
 * contents out of the gzip members or zstd frames the TOC points at.
 *
 * Footers (../shared/notes/toc.md "Where the TOC lives"):
 *   eStargz  51 bytes: gzip header with FEXTRA, XLEN=26, subfield 'S' 'G' LEN=22, "%016xSTARGZ",
 *            empty stored deflate block, CRC32 + ISIZE.
 *   CRFS     47 bytes: same with XLEN=22 and the 22 bytes "%016xSTARGZ" directly.
 *   zstd:chunked: a skippable frame holding the footer, LE u64 fields: TOC offset, compressed
 *            and uncompressed TOC size, manifest type (1), then (containers/storage, 64 bytes)
 *            three tar-split fields, then the magic "GnUlInUx" (stargz-snapshotter, 40
 *            bytes) or "GNUlInUx" (containers/storage). The TOC is zstd-compressed JSON inside
 *            a skippable frame that starts 8 bytes before the TOC offset.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { CfsError, ErrorCode } from '../format/index.js';
import { ZstdError, zstdDecompress } from '../cas/zstd.js';

export const ESTARGZ_FOOTER_SIZE = 51;
export const CRFS_FOOTER_SIZE = 47;
const GZIP_MAGIC = [0x1f, 0x8b];
const FLG_FEXTRA = 0x04;
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const ZSTD_CHUNKED_MAGICS = [Buffer.from('GnUlInUx', 'latin1'), Buffer.from('GNUlInUx', 'latin1')];
const SKIPPABLE_MAGIC = 0x184d2a50;
const ZSTD_FOOTER_SIZES = [64, 40];
export const TOC_TAR_NAME = 'stargz.index.json';
/** A TOC larger than this decompressed is refused. */
export const MAX_TOC_SIZE = 256 << 20;
/** Decompressed bytes allowed in one member range beyond what the TOC says is needed (tar headers, padding). */
const MEMBER_SLACK = 16 << 20;
const TAR_BLOCK = 512;

/** Random access to a blob: a file or a buffer (stdin). */
export interface Blob {
  readonly name: string;
  readonly size: number;
  read(pos: number, len: number): Buffer;
  close(): void;
}

export function openBlobFile(file: string): Blob {
  const fd = fs.openSync(file, 'r');
  const size = fs.fstatSync(fd).size;
  return {
    name: file,
    size,
    read(pos, len) {
      if (pos < 0 || len < 0 || pos + len > size) throw new CfsError(ErrorCode.OutOfBounds, `read of ${len} bytes at ${pos} is past the end of the blob (${size} bytes)`, { input: file });
      const buf = Buffer.allocUnsafe(len);
      let off = 0;
      while (off < len) {
        const n = fs.readSync(fd, buf, off, len - off, pos + off);
        if (n === 0) throw new CfsError(ErrorCode.Io, 'blob shrank while reading', { input: file });
        off += n;
      }
      return buf;
    },
    close() {
      fs.closeSync(fd);
    },
  };
}

export function blobFromBuffer(data: Buffer, name: string): Blob {
  return {
    name,
    size: data.length,
    read(pos, len) {
      if (pos < 0 || len < 0 || pos + len > data.length) throw new CfsError(ErrorCode.OutOfBounds, `read of ${len} bytes at ${pos} is past the end of the blob (${data.length} bytes)`, { input: name });
      return data.subarray(pos, pos + len);
    },
    close() {},
  };
}

export type BlobKind = 'estargz' | 'zstd' | 'gzip' | 'other';

/** What the first and last bytes say a blob is. */
export function blobKind(head: Buffer, tail: Buffer): BlobKind {
  if (tail.length >= 8 && ZSTD_CHUNKED_MAGICS.some((m) => tail.subarray(tail.length - 8).equals(m))) return 'zstd';
  if (head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
  if (head.length >= 4 && head.readUInt32LE(0) >>> 4 === 0x184d2a5) return 'zstd'; // skippable frame
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return parseFooter(tail) ? 'estargz' : 'gzip';
  return 'other';
}

/** Parse the last bytes of a blob as an eStargz (51) or CRFS (47) footer. */
export function parseFooter(tail: Buffer): { tocOffset: number; footerSize: number } | null {
  const tryAt = (size: number, xlen: number, idAt: number): number | null => {
    if (tail.length < size) return null;
    const f = tail.subarray(tail.length - size);
    if (f[0] !== 0x1f || f[1] !== 0x8b || f[2] !== 8 || !(f[3] & FLG_FEXTRA)) return null;
    if (f.readUInt16LE(10) !== xlen) return null;
    if (size === ESTARGZ_FOOTER_SIZE && (f[12] !== 0x53 || f[13] !== 0x47 || f.readUInt16LE(14) !== 22)) return null;
    const id = f.toString('latin1', idAt, idAt + 22);
    const m = /^([0-9a-f]{16})STARGZ$/.exec(id);
    if (!m) return null;
    const off = Number.parseInt(m[1], 16);
    return Number.isSafeInteger(off) ? off : null;
  };
  const e = tryAt(ESTARGZ_FOOTER_SIZE, 26, 16);
  if (e !== null) return { tocOffset: e, footerSize: ESTARGZ_FOOTER_SIZE };
  const c = tryAt(CRFS_FOOTER_SIZE, 22, 12);
  if (c !== null) return { tocOffset: c, footerSize: CRFS_FOOTER_SIZE };
  return null;
}

const headTail = (blob: Blob): { head: Buffer; tail: Buffer } => ({
  head: blob.read(0, Math.min(16, blob.size)),
  tail: blob.read(Math.max(0, blob.size - ESTARGZ_FOOTER_SIZE), Math.min(ESTARGZ_FOOTER_SIZE, blob.size)),
});

/** Where the TOC of a blob is, and where its file data ends. */
export interface BlobLayout {
  kind: 'estargz' | 'zstd';
  /** First byte of the compressed TOC. */
  tocOffset: number;
  tocLength: number;
  /** Uncompressed TOC size the footer declares (zstd:chunked). */
  tocSize?: number;
  /** Where file data ends: the TOC member (or the TOC's skippable frame). */
  dataEnd: number;
}

/** Locate the footer of an eStargz or zstd:chunked blob. */
export function blobLayout(blob: Blob): BlobLayout {
  const { head, tail } = headTail(blob);
  if (blobKind(head, tail) === 'zstd') return zstdChunkedLayout(blob);
  const footer = parseFooter(tail);
  if (!footer) throw new CfsError(ErrorCode.BadMagic, 'not an eStargz/stargz/zstd:chunked blob (no footer with a TOC offset)', { input: blob.name });
  if (footer.tocOffset >= blob.size - footer.footerSize) {
    throw new CfsError(ErrorCode.OutOfBounds, `footer points at TOC offset ${footer.tocOffset}, past the data (${blob.size} bytes)`, { input: blob.name });
  }
  return { kind: 'estargz', tocOffset: footer.tocOffset, tocLength: blob.size - footer.footerSize - footer.tocOffset, dataEnd: footer.tocOffset };
}

function zstdChunkedLayout(blob: Blob): BlobLayout {
  const bad = (msg: string): never => {
    throw new CfsError(ErrorCode.BadMagic, `zstd:chunked footer: ${msg}`, { input: blob.name });
  };
  for (const size of ZSTD_FOOTER_SIZES) {
    if (blob.size < size + 8) continue;
    const frame = blob.read(blob.size - size - 8, size + 8);
    if (frame.readUInt32LE(0) !== SKIPPABLE_MAGIC || frame.readUInt32LE(4) !== size) continue;
    const f = frame.subarray(8);
    const u64 = (at: number): number => {
      const v = f.readBigUInt64LE(at);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? bad(`field at ${at} is ${v}`) : Number(v);
    };
    const [tocOffset, tocLength, tocSize, type] = [u64(0), u64(8), u64(16), u64(24)];
    if (type !== 1) bad(`manifest type ${type} (only 1, a CRFS TOC, is known)`);
    if (tocOffset < 8 || tocOffset + tocLength > blob.size - size - 8) bad(`TOC at ${tocOffset} (+${tocLength}) is outside the blob (${blob.size} bytes)`);
    if (tocSize > MAX_TOC_SIZE) throw new CfsError(ErrorCode.TooLarge, `TOC of ${tocSize} bytes exceeds the ${MAX_TOC_SIZE}-byte limit`, { input: blob.name });
    return { kind: 'zstd', tocOffset, tocLength, tocSize, dataEnd: tocOffset - 8 };
  }
  return bad('no 40- or 64-byte footer in a skippable frame at the end');
}

/** The TOC JSON bytes of a blob, and where its file data ends. */
export function readTocFromBlob(blob: Blob): { toc: Buffer; dataEnd: number } {
  const layout = blobLayout(blob);
  const { tocOffset } = layout;
  const compressed = blob.read(tocOffset, layout.tocLength);
  if (layout.kind === 'zstd') {
    let toc: Buffer;
    try {
      toc = zstdDecompress(compressed, layout.tocSize! + MEMBER_SLACK); // a window may exceed a small TOC
    } catch (e) {
      if (!(e instanceof ZstdError)) throw e;
      throw new CfsError(ErrorCode.Io, `cannot decompress the TOC at ${tocOffset}: ${e.message}`, { input: blob.name });
    }
    if (toc.length !== layout.tocSize) throw new CfsError(ErrorCode.BadMagic, `the TOC at ${tocOffset} is ${toc.length} bytes, the footer says ${layout.tocSize}`, { input: blob.name });
    return { toc, dataEnd: layout.dataEnd };
  }
  let tarData: Buffer;
  try {
    tarData = zlib.gunzipSync(compressed, { maxOutputLength: MAX_TOC_SIZE + 64 * TAR_BLOCK });
  } catch (e) {
    throw new CfsError(ErrorCode.Io, `cannot decompress the TOC member at ${tocOffset}: ${(e as Error).message}`, { input: blob.name });
  }
  const toc = findTarEntry(tarData, TOC_TAR_NAME);
  if (!toc) throw new CfsError(ErrorCode.BadMagic, `no ${TOC_TAR_NAME} in the TOC member at ${tocOffset}`, { input: blob.name });
  return { toc, dataEnd: layout.dataEnd };
}

/** Find a regular entry by name in a tar stream (ustar/GNU headers; other entries skipped). */
export function findTarEntry(tar: Buffer, name: string): Buffer | null {
  let pos = 0;
  while (pos + TAR_BLOCK <= tar.length) {
    const h = tar.subarray(pos, pos + TAR_BLOCK);
    if (h.every((b) => b === 0)) return null;
    const cstr = (from: number, len: number): string => {
      const s = h.subarray(from, from + len);
      const nul = s.indexOf(0);
      return s.toString('latin1', 0, nul < 0 ? len : nul);
    };
    let entryName = cstr(0, 100);
    const magic = cstr(257, 6);
    if (magic === 'ustar') {
      const prefix = cstr(345, 155);
      if (prefix) entryName = `${prefix}/${entryName}`;
    }
    const size = tarSize(h.subarray(124, 136));
    if (size === null) return null;
    const type = String.fromCharCode(h[156] || 0x30);
    const dataAt = pos + TAR_BLOCK;
    if (dataAt + size > tar.length) return null;
    if ((type === '0' || type === '7') && entryName.replace(/^\.\//, '') === name) return tar.subarray(dataAt, dataAt + size);
    pos = dataAt + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
  }
  return null;
}

function tarSize(field: Buffer): number | null {
  if (field[0] & 0x80) {
    // base-256
    let v = 0;
    for (let i = 1; i < field.length; i++) v = v * 256 + field[i];
    return Number.isSafeInteger(v) ? v : null;
  }
  const s = field.toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]*$/.test(s)) return null;
  return s === '' ? 0 : Number.parseInt(s, 8);
}

/**
 * Reads uncompressed ranges out of the blob. A compressed range runs from a member offset the TOC
 * names to the next such offset (or to the TOC): gzip members (zstd frames) decompress back to
 * back, so small files sharing one member (innerOffset) are decompressed once.
 */
export class MemberReader {
  private readonly ends = new Map<number, number>();
  private cacheOffset = -1;
  private cache: Buffer = Buffer.alloc(0);

  /**
   * @param offsets every member offset the TOC references, with the uncompressed bytes needed
   *   from it (innerOffset + length, the largest over all references)
   * @param dataEnd where the file data ends (the TOC member's offset)
   */
  constructor(
    private readonly blob: Blob,
    private readonly need: ReadonlyMap<number, number>,
    dataEnd: number,
    /** Other member offsets (entries whose content isn't read), so ranges stop there too. */
    boundaries: Iterable<number> = [],
  ) {
    const sorted = [...new Set([...need.keys(), ...boundaries])].filter((o) => o < dataEnd).sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; i++) this.ends.set(sorted[i], i + 1 < sorted.length ? sorted[i + 1] : dataEnd);
  }

  /** `len` uncompressed bytes at `inner` in the stream that starts at member `offset`. */
  read(offset: number, inner: number, len: number): Buffer {
    if (offset !== this.cacheOffset) {
      const end = this.ends.get(offset);
      if (end === undefined || end <= offset) throw new CfsError(ErrorCode.OutOfBounds, `member offset ${offset} is not inside the blob's data`, { input: this.blob.name });
      const compressed = this.blob.read(offset, end - offset);
      const limit = this.need.get(offset)! + MEMBER_SLACK;
      const gzip = compressed[0] === GZIP_MAGIC[0] && compressed[1] === GZIP_MAGIC[1];
      try {
        this.cache = gzip ? zlib.gunzipSync(compressed, { maxOutputLength: limit }) : zstdDecompress(compressed, limit);
      } catch (e) {
        throw new CfsError(ErrorCode.Io, `cannot decompress the ${gzip ? 'gzip member' : 'zstd frames'} at offset ${offset}: ${(e as Error).message}`, { input: this.blob.name });
      }
      this.cacheOffset = offset;
    }
    if (inner + len > this.cache.length) {
      throw new CfsError(ErrorCode.OutOfBounds, `member at offset ${offset} holds ${this.cache.length} bytes, not ${inner + len}`, { input: this.blob.name });
    }
    return this.cache.subarray(inner, inner + len);
  }
}
