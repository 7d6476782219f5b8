/**
 * Bounded zstd decompression (fzstd: pure JS, Node 20 has no zstd). fzstd sizes its buffers from
 * each frame header, which a hostile input controls, so frames are walked first (RFC 8878: frame
 * header, block headers, optional checksum; skippable frames skipped): a byte range is refused
 * if the sizes its frames declare exceed a limit (zstdDecompress), and a stream if a frame asks
 * for a larger window than zstd's own default limit (ZstdWindowGuard).
 */
import { decompress } from 'fzstd';

const ZSTD_MAGIC = 0xfd2fb528;
const MAX_WINDOW = 2145386496; // fzstd's own ceiling
const BLOCK_MAX = 128 << 10;

export class ZstdError extends Error {}

interface FrameHeader {
  /** Bytes of the header, magic included. */
  size: number;
  /** Window size, 0 for a single-segment frame (whose window is its content size). */
  window: number;
  /** Frame content size, 0 if not given. */
  fcs: number;
  checksum: boolean;
}

/** The header of the zstd frame at b[p] (magic already checked); null while b ends before it does. */
function frameHeader(b: ArrayLike<number>, p: number): FrameHeader | null {
  if (p + 5 > b.length) return null;
  const fhd = b[p + 4];
  const single = (fhd >> 5) & 1;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fhd >> 6];
  const size = 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3] + fcsBytes;
  if (p + size > b.length) return null;
  let window = 0;
  if (!single) {
    const base = 2 ** (10 + (b[p + 5] >> 3));
    window = base + (base / 8) * (b[p + 5] & 7);
  }
  let fcs = 0;
  for (let k = fcsBytes - 1, at = p + size - fcsBytes; k >= 0; k--) fcs = fcs * 256 + b[at + k];
  if (fcsBytes === 2) fcs += 256;
  return { size, window, fcs, checksum: ((fhd >> 2) & 1) === 1 };
}

/** A 3-byte block header: bytes that follow it, the most output it yields, whether it is the last. */
function blockHeader(bh: number, pos: number): { skip: number; out: number; last: boolean } {
  const type = (bh >> 1) & 3;
  const size = bh >>> 3;
  if (type === 3) throw new ZstdError(`reserved block type at ${pos}`);
  // raw and RLE blocks state their size; a compressed block yields at most 128 KiB
  return { skip: type === 1 ? 1 : size, out: type === 2 ? BLOCK_MAX : size, last: (bh & 1) === 1 };
}

/**
 * Check that the frames in `data` need at most `limit` bytes of fzstd's memory (an upper bound:
 * what it allocates and what the blocks can produce); ZstdError otherwise, or for bad framing.
 */
export function checkZstdFrames(data: Uint8Array, limit: number): void {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let p = 0;
  let total = 0;
  while (p < data.length) {
    if (p + 8 > data.length) throw new ZstdError(`truncated frame header at ${p}`);
    const magic = dv.getUint32(p, true);
    if (magic >>> 4 === 0x184d2a5) {
      p += 8 + dv.getUint32(p + 4, true); // skippable frame
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw new ZstdError(`no zstd frame at ${p}`);
    const h = frameHeader(data, p);
    if (!h) throw new ZstdError(`truncated frame header at ${p}`);
    const { window, fcs } = h;
    if (window > MAX_WINDOW || fcs > limit) throw new ZstdError(`frames declare ${Math.max(window, fcs)} bytes, more than the ${limit} allowed`);
    // what fzstd allocates, and what the blocks can produce
    let q = p + h.size;
    let out = 0;
    for (;;) {
      if (q + 3 > data.length) throw new ZstdError(`truncated block at ${q}`);
      const blk = blockHeader(data[q] | (data[q + 1] << 8) | (data[q + 2] << 16), q);
      out += blk.out;
      q += 3 + blk.skip;
      if (blk.last) break;
    }
    total += Math.max(fcs || window, Math.min(out, fcs || out));
    if (total > limit) throw new ZstdError(`frames declare ${total} bytes, more than the ${limit} allowed`);
    p = q + (h.checksum ? 4 : 0);
    if (p > data.length) throw new ZstdError('truncated frame');
  }
}

/** Decompress `data` (one or more frames), refusing frames that declare more than `limit` bytes. */
export function zstdDecompress(data: Uint8Array, limit: number): Buffer {
  checkZstdFrames(data, limit);
  try {
    const out = decompress(data);
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    throw new ZstdError((e as Error).message);
  }
}

/** zstd's default decompression memory limit (without --long / --memory): 128 MiB windows. */
export const STREAM_WINDOW_MAX = 128 << 20;

/**
 * Follows the frames of a zstd stream fed to it chunk by chunk, and throws ZstdError as soon as a
 * frame header asks for a window (what streaming fzstd allocates) above `max`.
 */
export class ZstdWindowGuard {
  private head: number[] = []; // bytes of a frame or block header being collected
  private skip = 0; // bytes of payload to pass over
  private inFrame = false;
  private checksum = false;
  private pos = 0;

  constructor(private readonly max = STREAM_WINDOW_MAX) {}

  feed(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      this.head.push(chunk[i++]);
      this.pos++;
      if (this.inFrame) this.blockHeader();
      else this.frameHeader();
    }
  }

  private frameHeader(): void {
    const h = this.head;
    if (h.length < 5) return;
    const magic = (h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)) >>> 0;
    if (magic >>> 4 === 0x184d2a5) {
      if (h.length < 8) return;
      this.skip = (h[4] | (h[5] << 8) | (h[6] << 16) | (h[7] << 24)) >>> 0;
      this.head = [];
      return;
    }
    if (magic !== ZSTD_MAGIC) throw new ZstdError(`no zstd frame at byte ${this.pos - h.length}`);
    const fh = frameHeader(h, 0);
    if (!fh) return;
    const window = fh.window || fh.fcs; // single-segment: the content size
    if (window > this.max) throw new ZstdError(`a frame asks for a ${window}-byte window, more than the ${this.max} allowed`);
    this.checksum = fh.checksum;
    this.inFrame = true;
    this.head = [];
  }

  private blockHeader(): void {
    if (this.head.length < 3) return;
    const blk = blockHeader(this.head[0] | (this.head[1] << 8) | (this.head[2] << 16), this.pos - 3);
    this.head = [];
    this.skip = blk.skip;
    if (blk.last) {
      this.inFrame = false;
      if (this.checksum) this.skip += 4;
    }
  }
}
