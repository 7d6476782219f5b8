/**
 * fs-verity hashing with OpenSSL's SHA256_Init/Update/Final called through koffi on one reused
 * context: node:crypto costs about a microsecond of set-up per 4 KiB block (a hash context and a
 * result buffer), as much as the hash itself, and OpenSSL 3's one-shot SHA256() looks the
 * algorithm up by name on every call. The symbols come from node's own bundled OpenSSL (node
 * exports them for addons), else from libcrypto.so.3; if neither loads, or the result disagrees
 * with node:crypto, node:crypto is used.
 */
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

/** Native block and byte hashers, or null when OpenSSL cannot be loaded or disagrees with node:crypto. */
function makeNative(): { blocks: BlockHasher; bytes: HashFn } | null {
  if (process.env.CFS_NO_NATIVE_SHA256) return null;
  const sha = loadSha256();
  if (!sha) return null;
  // SHA256_CTX is 112 bytes. Addresses are taken on each call from buffers that are referenced
  // there (ctxBuf by this closure, src and dst by the caller), so none can be freed meanwhile.
  const ctxBuf = Buffer.alloc(256);
  const { init, update, final } = sha;
  const blocks: BlockHasher = (src, off, count, dst, dstOff) => {
    if (count <= 0) return;
    if (off < 0 || dstOff < 0 || off + count * BLOCK_SIZE > src.length || dstOff + count * HASH_SIZE > dst.length) {
      throw new RangeError('block hash out of bounds');
    }
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
  // self-test against node:crypto
  const probe = Buffer.alloc(3 * BLOCK_SIZE + 1);
  for (let i = 0; i < probe.length; i++) probe[i] = (i * 7 + (i >> 12)) & 0xff;
  const ok = new FsVerityHasher(blocks, bytes).update(probe).digest().equals(fsverityDigest(probe, cryptoBlockHasher)) && bytes(probe).equals(sha256(probe));
  return ok ? { blocks, bytes } : null;
}

const native = makeNative();

/** The fastest BlockHasher here. */
export const blockHasher: BlockHasher = native?.blocks ?? cryptoBlockHasher;

/** An FsVerityHasher on the fastest hashers. */
export const newVerityHasher = (): FsVerityHasher => new FsVerityHasher(blockHasher, native?.bytes);

/** fs-verity digest of a buffer, on the fastest block hasher. */
export const verityDigest = (data: Uint8Array): Buffer => fsverityDigest(data, blockHasher);
