/**
 * TOC → image, optionally with every file's content taken from the eStargz blob into a cfs-cas
 * store (named by fs-verity digest, so the image mounts with the store as its base).
 *
 * Where a regular file's backing path comes from, first match wins:
 *   1. the entry's `x-payload` (used as given, after the same checks as a name);
 *   2. with a store and a blob: the content, decompressed, checked against the TOC's sha256 and
 *      put into the store (files of at most MAX_INLINE bytes go inline into the image instead, as
 *      mkcomposefs and cfs-cas import-tar do);
 *   3. the TOC digest: `HEX[0:2]/HEX[2:]` of the sha256 (composefs writer-json's convention).
 * Nothing is moved into the store until the whole TOC converted, so a bad TOC or blob leaves the
 * store as it was.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { CfsError, ErrorCode, encodeImage, isCfsError } from '../format/index.js';
import { type ObjectStager, type Store, objectRelPath } from '../cas/store.js';
import { type Blob, MemberReader } from './blob.js';
import { type ContentFile, type TocTree, buildTree, parseTocJson, quoteName } from './toc.js';
import { newVerityHasher } from '../cas/sha256-native.js';

/** Files up to this size are stored inline in the image when their content is known. */
export const MAX_INLINE = 64;
const ZERO_PIECE = 1 << 20;

export interface ConvertOptions {
  /** Name of the input, for messages. */
  input: string;
  minVersion?: number;
  maxVersion?: number;
  /** Take contents from `blob` into `store`. */
  store?: Store;
  blob?: Blob;
  /** Where the file data in the blob ends (the TOC member's offset). */
  dataEnd?: number;
  /** Ref name for the image in the store. */
  name?: string;
}

export interface StoreStats {
  newObjects: number;
  newBytes: number;
  dedupObjects: number;
  dedupBytes: number;
  inlined: number;
  /** Digest of the image in the store. */
  image: string;
  /** Objects the image needs that the store lacks (x-payload files). */
  missing: string[];
}

export interface ConvertResult {
  image: Buffer;
  entries: number;
  /** Regular files whose content is in the blob. */
  files: number;
  bytes: number;
  stored: StoreStats | null;
}

export function convertToc(tocBytes: Uint8Array, opts: ConvertOptions): ConvertResult {
  const tree = buildTree(parseTocJson(tocBytes, opts.input), { input: opts.input });
  const bytes = tree.files.reduce((n, f) => n + f.size, 0);
  const enc = { minVersion: opts.minVersion, maxVersion: opts.maxVersion, input: opts.input };
  if (!opts.store || !opts.blob) {
    return { image: encodeImage(tree.root, enc), entries: tree.entries, files: tree.files.length, bytes, stored: null };
  }
  const store = opts.store;
  const stager = store.stager({ imageFollows: true, writeback: false });
  try {
    const inlined = extractContents(tree, opts.blob, opts.dataEnd ?? opts.blob.size, stager, opts.input);
    const image = encodeImage(tree.root, enc);
    // Durable before visible: staged data into objects/, then register.
    const t = stager.commitSync();
    const reg = store.addImage(image, { name: opts.name, input: opts.input });
    const stats: StoreStats = { ...t, inlined, image: reg.digest, missing: reg.missing };
    return { image, entries: tree.entries, files: tree.files.length, bytes, stored: stats };
  } finally {
    stager.closeSync();
  }
}

/** One piece of a file: `len` bytes from member `offset` at `inner`, or zeros. */
interface Piece {
  offset: number;
  inner: number;
  len: number;
  zeros: boolean;
}

/** Check a file's chunk list against its size; returns the pieces in file order. */
export function piecesOf(f: ContentFile, fail: (msg: string) => never): Piece[] {
  const out: Piece[] = [];
  const c = f.chunks;
  if (c[0].chunkOffset !== 0) fail(`first chunk starts at ${c[0].chunkOffset}, not 0`);
  for (let k = 0; k < c.length; k++) {
    const end = k + 1 < c.length ? c[k + 1].chunkOffset : f.size;
    const len = end - c[k].chunkOffset;
    if (len <= 0) fail(`chunk ${k} at ${c[k].chunkOffset} is empty or out of order (file size ${f.size})`);
    if (c[k].chunkSize !== 0 && c[k].chunkSize !== len) fail(`chunk ${k} at ${c[k].chunkOffset} has chunkSize ${c[k].chunkSize}, but the next chunk starts ${len} bytes later`);
    if (!c[k].zeros && c[k].offset === undefined) fail(`chunk ${k} has no blob offset`);
    out.push({ offset: c[k].offset ?? 0, inner: c[k].innerOffset, len, zeros: c[k].zeros });
  }
  return out;
}

function extractContents(
  tree: TocTree,
  blob: Blob,
  dataEnd: number,
  stager: ObjectStager,
  input: string,
): number {
  const failFor = (f: ContentFile) => (msg: string): never => {
    throw new CfsError(ErrorCode.InvalidTree, `entry ${f.index} ${quoteName(Buffer.from(f.path, 'latin1').toString('utf8'))}: ${msg}`, { input });
  };
  // Plan first: every file's pieces and how much of each member is needed.
  const plans: Piece[][] = [];
  const need = new Map<number, number>();
  for (const f of tree.files) {
    const pieces = piecesOf(f, failFor(f));
    for (const p of pieces) {
      if (p.zeros) continue;
      if (p.offset >= dataEnd) failFor(f)(`blob offset ${p.offset} is not before the TOC (${dataEnd})`);
      need.set(p.offset, Math.max(need.get(p.offset) ?? 0, p.inner + p.len));
    }
    plans.push(pieces);
  }
  const reader = new MemberReader(blob, need, dataEnd, tree.offsets);
  let inlined = 0;
  for (let i = 0; i < tree.files.length; i++) {
    const f = tree.files[i];
    const fail = failFor(f);
    const verity = newVerityHasher();
    const sha = createHash('sha256');
    const inline: Buffer[] | null = f.size <= MAX_INLINE ? [] : null;
    let file = '';
    let fd = -1;
    try {
      if (!inline) {
        file = stager.newFile();
        fd = fs.openSync(file, 'wx', 0o644);
      }
      const put = (b: Buffer): void => {
        verity.update(b);
        sha.update(b);
        if (inline) inline.push(Buffer.from(b));
        else for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off, b.length - off);
      };
      for (const p of plans[i]) {
        if (p.zeros) {
          for (let left = p.len; left > 0; left -= ZERO_PIECE) put(Buffer.alloc(Math.min(left, ZERO_PIECE)));
        } else {
          let data: Buffer;
          try {
            data = reader.read(p.offset, p.inner, p.len);
          } catch (e) {
            if (isCfsError(e)) fail(e.message);
            throw e;
          }
          put(data);
        }
      }
      if (sha.digest('hex') !== f.sha256) fail('content in the blob does not match the entry\'s sha256 digest');
      const digest = verity.digest().toString('hex');
      if (inline) {
        f.inode.content = Buffer.concat(inline).toString('latin1');
        f.inode.payload = null;
        inlined++;
        continue;
      }
      fs.closeSync(fd);
      fd = -1;
      f.inode.digest = digest;
      f.inode.payload = objectRelPath(digest);
      if (stager.has(digest, f.size)) fs.rmSync(file, { force: true });
      else stager.addWritten(digest, file, f.size);
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  }
  return inlined;
}

