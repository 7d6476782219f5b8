/**
 * Image mutation fuzzing for the decoder: bit flips, truncations and field overwrites of real
 * images. The rule: decodeImage (and printing what it returns) either succeeds or throws a
 * CfsError. Any other exception, a hang or a memory blow-up is a bug.
 */
import { CfsError, decodeImage, dumpCut, dumpImage, dumpPart, dumpToString, partsOverlap } from '../format/index.js';

/**
 * The two-part dump (cfs-dump's on big images) at a cut of about `share`: when both parts print
 * and place no inode twice, they join into exactly `whole` (the decoded tree's dump; null = the
 * image is rejected, and then they must not). Returns whether the parts were used.
 */
export function checkDumpParts(img: Uint8Array, input: string, share: number, whole: string | null): boolean {
  const cut = dumpCut(img, input, share);
  if (!cut) return false;
  const head = dumpPart(img, input, cut, 'head');
  const tail = dumpPart(img, input, cut, 'tail');
  if (!head || !tail || partsOverlap(head.placed, tail.placed)) return false;
  const text = Buffer.concat([...head.chunks, ...tail.chunks]).toString('latin1');
  if (whole === null) throw new Error(`${input}: the dump parts at cut ${JSON.stringify(cut)} printed an image the decoder rejects`);
  if (text !== whole) throw new Error(`${input}: the dump parts at cut ${JSON.stringify(cut)} differ from the whole dump`);
  return true;
}

/** Small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const EXTREMES = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0xffffffff];

/** One mutated copy of `img`. Mutations favour the metadata area (first blocks). */
export function mutate(img: Buffer, rnd: () => number): Buffer {
  const pick = (n: number): number => Math.floor(rnd() * n);
  // bias offsets toward the header, superblock and inode area
  const offset = (len: number): number => (rnd() < 0.7 ? pick(Math.min(len, 16384)) : pick(len));
  const kind = pick(4);
  if (kind === 0) {
    return img.subarray(0, pick(img.length));
  }
  const out = Buffer.from(img);
  const n = 1 + pick(kind === 1 ? 8 : 3);
  for (let i = 0; i < n; i++) {
    const at = offset(out.length);
    if (kind === 1) {
      out[at] ^= 1 << pick(8);
    } else {
      const width = [1, 2, 4, 8][pick(4)];
      const v = rnd() < 0.5 ? EXTREMES[pick(EXTREMES.length)] : pick(0x100000000);
      for (let b = 0; b < width && at + b < out.length; b++) out[at + b] = width === 8 && b >= 4 ? (rnd() < 0.5 ? 0 : 0xff) : (v >>> (8 * (b % 4))) & 0xff;
    }
  }
  return out;
}

/** checkDumpParts at a cut that varies from case to case; failures carry the image. */
function partsCheck(img: Buffer, i: number, seed: number, whole: string | null): void {
  try {
    checkDumpParts(img, `case ${i} (seed ${seed})`, 0.1 + ((i * 0.618) % 0.8), whole);
  } catch (e) {
    throw Object.assign(e instanceof Error ? e : new Error(String(e)), { image: img });
  }
}

export interface FuzzStats {
  cases: number;
  decoded: number;
  rejected: number;
  maxMs: number;
  codes: Map<string, number>;
}

/**
 * Run `count` mutations over `images`; throws on the first non-CfsError failure. `plain`: the
 * images are plain (cfs-pack) images, decoded as such.
 */
export function fuzzDecoder(images: Buffer[], count: number, seed: number, plain = false): FuzzStats {
  const rnd = prng(seed);
  const stats: FuzzStats = { cases: 0, decoded: 0, rejected: 0, maxMs: 0, codes: new Map() };
  for (let i = 0; i < count; i++) {
    const base = images[i % images.length];
    const img = mutate(base, rnd);
    const t0 = performance.now();
    try {
      const { root } = decodeImage(img, { input: `case ${i}`, plain });
      const text = dumpToString(root);
      // the streaming dump (cfs-dump's) prints exactly what the tree gives
      if (!plain && Buffer.concat(dumpImage(img, { input: `case ${i}` })).toString('latin1') !== text) {
        throw Object.assign(new Error(`case ${i} (seed ${seed}): dumpImage differs from the decoded tree's dump`), { image: img });
      }
      if (!plain) partsCheck(img, i, seed, text);
      stats.decoded++;
    } catch (e) {
      if (!(e instanceof CfsError)) {
        const err = new Error(`case ${i} (seed ${seed}): ${(e as Error)?.stack ?? e}`);
        (err as Error & { image?: Buffer }).image = img;
        throw err;
      }
      stats.rejected++;
      stats.codes.set(e.code, (stats.codes.get(e.code) ?? 0) + 1);
      if (!plain) {
        let accepted = false;
        try {
          dumpImage(img, { input: `case ${i}` });
          accepted = true;
        } catch (e2) {
          if (!(e2 instanceof CfsError)) throw Object.assign(new Error(`case ${i} (seed ${seed}): dumpImage: ${(e2 as Error)?.stack ?? e2}`), { image: img });
        }
        if (accepted) throw Object.assign(new Error(`case ${i} (seed ${seed}): dumpImage printed an image decodeImage rejects (${e.message})`), { image: img });
        partsCheck(img, i, seed, null);
      }
    }
    stats.maxMs = Math.max(stats.maxMs, performance.now() - t0);
    stats.cases++;
  }
  return stats;
}
