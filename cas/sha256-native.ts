/**
 * fs-verity hashing in native code:
 * - tree blocks with our own SHA-NI code (native/sha256-blocks.c, two blocks at a time) where it
 *   was built and the CPU has the SHA extensions: 1.7x OpenSSL's rate here;
 * - else with OpenSSL's SHA256_Init/Update/Final called through koffi on one reused context
 *   (the descriptor is always hashed so). node:crypto costs about a
 *   microsecond of set-up per 4 KiB block (a hash context and a result buffer), as much as the
 *   hash itself, and OpenSSL 3's one-shot SHA256() looks the algorithm up by name on every call.
 *   The symbols come from node's own bundled OpenSSL (node exports them for addons), else from
 *   libcrypto.so.3.
 * Each is checked against node:crypto before use; node:crypto is the last resort.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { BLOCK_SIZE } from '../format/layout.js';
import { addressOf } from './sys.js';
import { FsVerityHasher, cryptoBlockHasher, fsverityDigest, sha256, type BlockHasher, type HashFn } from '../format/fsverity.js';

const HASH_SIZE = 32;

/** Pointers are passed as addresses (x86-64 and arm64 pass both alike). */
interface Sha256Fns {
  init: (ctx: number) => number;
  update: (ctx: number, d: number, n: number) => number;
  final: (md: number, ctx: number) => number;
}

function loadSha256(): Sha256Fns | null {
  for (const name of [null, 'libcrypto.so.3']) {
    try {
      const lib = koffi.load(name as string);
      return {
        init: lib.func('int SHA256_Init(uintptr_t c)'),
        update: lib.func('int SHA256_Update(uintptr_t c, uintptr_t d, size_t n)'),
        final: lib.func('int SHA256_Final(uintptr_t md, uintptr_t c)'),
      };
    } catch {
      // try the next one
    }
  }
  return null;
}

const checkBounds = (src: Uint8Array, off: number, count: number, dst: Uint8Array, dstOff: number): void => {
  if (off < 0 || dstOff < 0 || off + count * BLOCK_SIZE > src.length || dstOff + count * HASH_SIZE > dst.length) {
    throw new RangeError('block hash out of bounds');
  }
};

/** Where build.ts puts the library: beside dist/cas/ when run from dist, under dist/ from the sources. */
const SHA_NI_LIBRARY = ['../native/sha256-blocks.so', '../dist/native/sha256-blocks.so']
  .map((p) => fileURLToPath(new URL(p, import.meta.url)))
  .find((p) => fs.existsSync(p));

/** The SHA-NI block hasher, or null where it was not built or the CPU lacks the SHA extensions. */
function loadShaNi(): BlockHasher | null {
  if (!SHA_NI_LIBRARY) return null;
  try {
    const lib = koffi.load(SHA_NI_LIBRARY);
    if (lib.func('int cfs_sha256_blocks_supported()')() !== 1) return null;
    const hash = lib.func('void cfs_sha256_blocks(uintptr_t src, size_t count, uintptr_t dst)');
    return (src, off, count, dst, dstOff) => {
      if (count <= 0) return;
      checkBounds(src, off, count, dst, dstOff);
      hash(addressOf(src) + off, count, addressOf(dst) + dstOff);
    };
  } catch {
    return null;
  }
}

/** OpenSSL's block and byte hashers, or null when it cannot be loaded. */
function loadOpenSsl(): { blocks: BlockHasher; bytes: HashFn } | null {
  const sha = loadSha256();
  if (!sha) return null;
  // SHA256_CTX is 112 bytes. Addresses are taken on each call from buffers that are referenced
  // there (ctxBuf by this closure, src and dst by the caller), so none can be freed meanwhile.
  const ctxBuf = Buffer.alloc(256);
  const { init, update, final } = sha;
  const blocks: BlockHasher = (src, off, count, dst, dstOff) => {
    if (count <= 0) return;
    checkBounds(src, off, count, dst, dstOff);
    const ctx = addressOf(ctxBuf);
    const s = addressOf(src) + off;
    const d = addressOf(dst) + dstOff;
    for (let i = 0; i < count; i++) {
      init(ctx);
      update(ctx, s + i * BLOCK_SIZE, BLOCK_SIZE);
      final(d + i * HASH_SIZE, ctx);
    }
  };
  const bytes: HashFn = (data) => {
    const out = Buffer.allocUnsafe(HASH_SIZE);
    const ctx = addressOf(ctxBuf);
    init(ctx);
    update(ctx, addressOf(data), data.length);
    final(Number(koffi.address(out)), ctx); // new each time: not one to remember
    return out;
  };
  return { blocks, bytes };
}

/** Whether the hashers give node:crypto's fs-verity digest over an odd number of blocks and a tail. */
function agrees(blocks: BlockHasher, bytes: HashFn = sha256): boolean {
  const probe = Buffer.alloc(3 * BLOCK_SIZE + 1);
  for (let i = 0; i < probe.length; i++) probe[i] = (i * 7 + (i >> 12)) & 0xff;
  return new FsVerityHasher(blocks, bytes).update(probe).digest().equals(fsverityDigest(probe, cryptoBlockHasher)) && bytes(probe).equals(sha256(probe));
}

const disabled = !!process.env.CFS_NO_NATIVE_SHA256;
const shaNiCandidate = disabled ? null : loadShaNi();
const openSslCandidate = disabled ? null : loadOpenSsl();

/** Each native hasher that loaded and agrees with node:crypto (for tests and benchmarks). */
export const nativeHashers = {
  shaNi: shaNiCandidate && agrees(shaNiCandidate) ? shaNiCandidate : null,
  openSsl: openSslCandidate && agrees(openSslCandidate.blocks, openSslCandidate.bytes) ? openSslCandidate : null,
};

/** The fastest BlockHasher here. */
export const blockHasher: BlockHasher = nativeHashers.shaNi ?? nativeHashers.openSsl?.blocks ?? cryptoBlockHasher;

/** Which one blockHasher is. */
export const blockHasherName: 'sha-ni' | 'openssl' | 'node:crypto' = nativeHashers.shaNi ? 'sha-ni' : nativeHashers.openSsl ? 'openssl' : 'node:crypto';

/** An FsVerityHasher on the fastest hashers. */
export const newVerityHasher = (): FsVerityHasher => new FsVerityHasher(blockHasher, nativeHashers.openSsl?.bytes);

/** fs-verity digest of a buffer, on the fastest block hasher. */
export const verityDigest = (data: Uint8Array): Buffer => fsverityDigest(data, blockHasher);
