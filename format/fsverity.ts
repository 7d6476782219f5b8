/**
 * fs-verity SHA-256 digest (4096-byte blocks, no salt), as the kernel computes it.
 * For an empty file the kernel's root hash is all zeros; upstream's userspace tool hashes one
 * zero block instead and prints a different value (see UPSTREAM_EMPTY_FILE_DIGEST).
 */
import * as crypto from 'node:crypto';
import { BLOCK_SIZE } from './layout.js';

const HASH_SIZE = 32;

export type HashFn = (data: Uint8Array) => Buffer;
const cryptoHash = (crypto as unknown as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;
export const sha256: HashFn = cryptoHash
  ? (data) => cryptoHash('sha256', data, 'buffer')
  : (data) => crypto.createHash('sha256').update(data).digest();

/** What `composefs-info measure-file` prints for an empty file (not the kernel's value). */
export const UPSTREAM_EMPTY_FILE_DIGEST = 'cfc3391077edfd51859f6e5e16e03f82b1da3ee1a35d418b0d0b3b57740b4405';

/**
 * SHA-256 of `count` consecutive 4096-byte blocks of `src` from `off`, written to consecutive
 * 32-byte slots of `dst` from `dstOff`.
 */
export type BlockHasher = (src: Uint8Array, off: number, count: number, dst: Uint8Array, dstOff: number) => void;

/** The BlockHasher on node:crypto. */
export const cryptoBlockHasher: BlockHasher = (src, off, count, dst, dstOff) => {
  for (let i = 0; i < count; i++) {
    dst.set(sha256(src.subarray(off + i * BLOCK_SIZE, off + (i + 1) * BLOCK_SIZE)), dstOff + i * HASH_SIZE);
  }
};

interface Level {
  buf: Buffer;
  len: number;
  /** hashes ever added to this level */
  count: number;
}

/** Incremental fs-verity computation: feed data in any chunking, then digest(). */
export class FsVerityHasher {
  private size = 0;
  private readonly pending = Buffer.alloc(BLOCK_SIZE);
  private pendingLen = 0;
  /** levels[i] = hashes of level i accumulated into a block buffer */
  private readonly levels: Level[] = [];

  /** The fs-verity descriptor whose hash is the digest (reused: only size and root change). */
  private readonly desc = newDescriptor();

  constructor(
    private readonly hashBlocks: BlockHasher = cryptoBlockHasher,
    /** SHA-256 of a short buffer (the descriptor). */
    private readonly hashBytes: HashFn = sha256,
  ) {}

  /** Start over for new data, keeping the buffers. */
  reset(): this {
    this.size = 0;
    this.pendingLen = 0;
    for (const l of this.levels) {
      l.len = 0;
      l.count = 0;
    }
    return this;
  }

  /** Add `data`'s first `length` bytes (all by default). */
  update(data: Uint8Array, length = data.length): this {
    const end = Math.min(length, data.length);
    let off = 0;
    this.size += end;
    if (this.pendingLen > 0) {
      const n = Math.min(BLOCK_SIZE - this.pendingLen, end);
      this.pending.set(data.subarray(0, n), this.pendingLen);
      this.pendingLen += n;
      off = n;
      if (this.pendingLen === BLOCK_SIZE) {
        this.addBlock(0, this.pending, 0);
        this.pendingLen = 0;
      }
    }
    // full blocks: as many at once as level 0 has room for
    while (end - off >= BLOCK_SIZE) {
      const l = this.level(0);
      const n = Math.min((BLOCK_SIZE - l.len) / HASH_SIZE, Math.floor((end - off) / BLOCK_SIZE));
      this.hashBlocks(data, off, n, l.buf, l.len);
      l.len += n * HASH_SIZE;
      l.count += n;
      off += n * BLOCK_SIZE;
      if (l.len === BLOCK_SIZE) {
        this.addBlock(1, l.buf, 0);
        l.len = 0;
      }
    }
    if (off < end) {
      this.pending.set(data.subarray(off, end), 0);
      this.pendingLen = end - off;
    }
    return this;
  }

  private level(i: number): Level {
    return (this.levels[i] ??= { buf: Buffer.alloc(BLOCK_SIZE), len: 0, count: 0 });
  }

  /** Add the hash of the block of `src` at `off` to `level`. */
  private addBlock(level: number, src: Uint8Array, off: number): void {
    const l = this.level(level);
    this.hashBlocks(src, off, 1, l.buf, l.len);
    l.len += HASH_SIZE;
    l.count++;
    if (l.len === BLOCK_SIZE) {
      this.addBlock(level + 1, l.buf, 0);
      l.len = 0;
    }
  }

  digest(): Buffer {
    if (this.pendingLen > 0) {
      this.pending.fill(0, this.pendingLen);
      this.addBlock(0, this.pending, 0);
      this.pendingLen = 0;
    }
    const desc = this.desc;
    desc.writeUInt32LE(this.size >>> 0, 8);
    desc.writeUInt32LE(Math.floor(this.size / 2 ** 32), 12);
    if (this.size === 0) {
      desc.fill(0, 16, 16 + HASH_SIZE);
    } else {
      // Close partial blocks bottom-up until one level holds a single hash: the root hash.
      let level = 0;
      for (;;) {
        const l = this.levels[level];
        if (l.count === 1 && !this.levels[level + 1]?.count) {
          l.buf.copy(desc, 16, 0, HASH_SIZE);
          break;
        }
        if (l.len > 0) {
          l.buf.fill(0, l.len);
          this.addBlock(level + 1, l.buf, 0);
          l.len = 0;
        }
        level++;
      }
    }
    return this.hashBytes(desc);
  }
}

/** struct fsverity_descriptor for SHA-256, 4 KiB blocks, no salt; size and root hash to fill in. */
function newDescriptor(): Buffer {
  const desc = Buffer.alloc(256);
  desc[0] = 1; // version
  desc[1] = 1; // hash algorithm: sha256
  desc[2] = 12; // log2 block size
  desc[3] = 0; // salt size
  return desc;
}

export function fsverityDigest(data: Uint8Array, hashBlocks?: BlockHasher): Buffer {
  return new FsVerityHasher(hashBlocks).update(data).digest();
}
