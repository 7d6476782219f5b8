/**
 * composefs artifacts: an image and its objects published to a registry (cfs-cas push), pulled
 * back whole or lazily (the image now, the objects when fetch-missing asks for them).
 *
 * Layout (an OCI image manifest, artifactType ARTIFACT_TYPE):
 *   config     ARTIFACT_CONFIG: the index, JSON {image: {digest, size}, packs: [{digest, size,
 *              objects: [[fs-verity hex, data offset, size], …]}]}
 *   layers[0]  IMAGE_LAYER: the composefs image, byte for byte
 *   layers[1…] PACK_LAYER: plain ustar archives of objects named XX/REST (as under objects/),
 *              in tree order, cut by content near --pack-size; packs[i] of the index is layers[i+1]
 * Packs keep the manifest small and the upload to a few large blobs (per-object blobs would
 * mean one manifest entry and two or three HTTP requests per file, and hit manifest size limits
 * around 25k files); the offsets in the index let a lazy fetch read single objects with HTTP
 * Range requests, as podman does for zstd:chunked files. Every object is checked against its
 * fs-verity digest before it is linked into objects/.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { resolveImage } from '../cas/gc.js';
import { Store, imageNeeds, objectRelPath } from '../cas/store.js';
import { CfsError, ErrorCode, MAX_IMAGE_SIZE, S_IFMT, S_IFREG, decodeImage, type Inode } from '../format/index.js';
import { loadBlob, loadImageRecord, saveBlob, saveImageRecord } from './meta.js';
import { Progress } from './progress.js';
import { formatReference, parseReference, type Reference } from './reference.js';
import { type Descriptor, type Manifest, MediaType, Registry } from './registry.js';
import type { PullResult } from './pull.js';
import { newVerityHasher, verityDigest } from '../cas/sha256-native.js';

export const ARTIFACT_TYPE = 'application/vnd.composefs-ts.image.v1';
export const ARTIFACT_CONFIG = 'application/vnd.composefs-ts.index.v1+json';
export const IMAGE_LAYER = 'application/vnd.composefs-ts.image.v1.erofs';
export const PACK_LAYER = 'application/vnd.composefs-ts.objects.v1.tar';
export const DEFAULT_PACK_SIZE = 64 << 20;
const MAX_INDEX = 256 << 20;
/** ustar's 11 octal digits. */
const MAX_TAR_MEMBER = 8 ** 11 - 1;

interface Pack {
  digest: string;
  size: number;
  objects: [string, number, number][];
}

interface ArtifactIndex {
  image: { digest: string; size: number };
  packs: Pack[];
}

interface Location {
  digest: string;
  pack: Pack;
  offset: number;
  size: number;
}

export interface PushResult {
  reference: string;
  manifest: string;
  image: string;
  objects: number;
  packs: number;
  /** Blobs the registry lacked and got from us, and their bytes. */
  uploaded: number;
  uploadedBytes: number;
}

export async function push(store: Store, spec: string, refText: string, opts: { plainHttp?: boolean; packSize?: number; progress?: Progress } = {}): Promise<PushResult> {
  const ref = parseReference(refText);
  if (!ref.tag || ref.digest) throw new CfsError(ErrorCode.Usage, 'push needs a tag, not a digest', { input: refText });
  const progress = opts.progress ?? new Progress(null);
  const { file, data } = resolveImage(store, spec);
  const imageHex = verityDigest(data).toString('hex');
  const objects = objectsInTreeOrder(data, file);
  const lacking = objects.filter((o) => !store.has(o));
  if (lacking.length) throw new CfsError(ErrorCode.Io, `the image needs ${lacking.length} objects the store lacks (see cfs-cas missing)`, { input: spec });
  const reg = new Registry(ref, { plainHttp: opts.plainHttp });
  const res: PushResult = { reference: formatReference(ref), manifest: '', image: imageHex, objects: objects.length, packs: 0, uploaded: 0, uploadedBytes: 0 };
  const upload = async (d: Descriptor, body: Buffer | (() => Readable), label: string): Promise<void> => {
    if (await reg.hasBlob(d.digest)) return progress.finish(label, 'already in the registry');
    await reg.pushBlob(d.digest, d.size, Buffer.isBuffer(body) ? body : () => body().pipe(progress.tap(label, d.size)));
    res.uploaded++;
    res.uploadedBytes += d.size;
    progress.finish(label, 'uploaded');
  };

  store.lock('shared');
  const packs: Pack[] = [];
  for (const group of groupObjects(store, objects, opts.packSize ?? DEFAULT_PACK_SIZE)) {
    const pack = describePack(store, group);
    packs.push(pack);
    await upload({ mediaType: PACK_LAYER, digest: pack.digest, size: pack.size }, () => Readable.from(packBytes(store, group)), `pack ${packs.length} ${pack.digest.slice(7, 19)}`);
  }
  res.packs = packs.length;
  const imageDesc: Descriptor = { mediaType: IMAGE_LAYER, digest: sha256(data), size: data.length };
  await upload(imageDesc, data, 'composefs image');
  const index: ArtifactIndex = { image: { digest: imageHex, size: data.length }, packs };
  const indexBytes = Buffer.from(JSON.stringify(index));
  const configDesc: Descriptor = { mediaType: ARTIFACT_CONFIG, digest: sha256(indexBytes), size: indexBytes.length };
  await upload(configDesc, indexBytes, 'index');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      artifactType: ARTIFACT_TYPE,
      config: configDesc,
      layers: [imageDesc, ...packs.map((p) => ({ mediaType: PACK_LAYER, digest: p.digest, size: p.size }))],
      annotations: { 'org.composefs.image.digest': imageHex },
    }),
  );
  await reg.pushManifest(ref.tag, MediaType.ociManifest, manifest);
  res.manifest = sha256(manifest);
  return res;
}

/** The objects of an image in the order its tree first names them (depth first, by name). */
function objectsInTreeOrder(image: Buffer, input: string): string[] {
  const out = new Set<string>();
  const walk = (d: Inode): void => {
    for (const e of d.children!) {
      const rel = e.inode.payload?.replace(/^\/+/, '') ?? '';
      if ((e.inode.mode & S_IFMT) === S_IFREG && /^[0-9a-f]{2}\/[0-9a-f]{62}$/.test(rel)) out.add(rel.replace('/', ''));
      if (e.inode.children && !e.link) walk(e.inode);
    }
  };
  walk(decodeImage(image, { input }).root);
  return [...out];
}

/**
 * Packs of about `packSize` bytes, cut where the content says: after an object whose digest is
 * 0 modulo K (K a power of two near packSize / average object size), or at 4 x packSize. The
 * objects go in tree order, so the files an update changes (a package's directory) sit in few
 * packs, and a changed object moves no boundary but its own: the next version's push finds most
 * packs already in the registry.
 */
function* groupObjects(store: Store, objects: string[], packSize: number): Generator<{ digest: string; size: number }[]> {
  const sized = objects.map((digest) => {
    const size = fs.statSync(store.objectPath(digest)).size;
    if (size > MAX_TAR_MEMBER) throw new CfsError(ErrorCode.TooLarge, `object of ${size} bytes is too large for a pack`, { input: digest });
    return { digest, size };
  });
  const average = Math.max(1, sized.reduce((n, o) => n + o.size, 0) / Math.max(1, sized.length));
  const k = 2 ** Math.max(0, Math.round(Math.log2(packSize / average)));
  let group: { digest: string; size: number }[] = [];
  let bytes = 0;
  for (const o of sized) {
    group.push(o);
    bytes += o.size;
    if (parseInt(o.digest.slice(0, 8), 16) % k === 0 || bytes >= 4 * packSize) {
      yield group;
      group = [];
      bytes = 0;
    }
  }
  if (group.length) yield group;
}

/**
 * The bytes of a pack: a ustar archive of the objects, in order, then the two zero blocks.
 * Deterministic, so it is generated once to learn its digest and again to upload it.
 */
function* packBytes(store: Store, group: { digest: string; size: number }[]): Generator<Buffer> {
  for (const { digest, size } of group) {
    yield ustarHeader(objectRelPath(digest), size);
    const file = store.objectPath(digest);
    const fd = fs.openSync(file, 'r');
    try {
      for (let left = size; left > 0; ) {
        const buf = Buffer.allocUnsafe(Math.min(1 << 20, left));
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) throw new CfsError(ErrorCode.Io, 'object shrank while being packed', { input: file });
        left -= n;
        yield buf.subarray(0, n);
      }
    } finally {
      fs.closeSync(fd);
    }
    if (size % 512) yield Buffer.alloc(512 - (size % 512));
  }
  yield Buffer.alloc(1024);
}

/** A pack's digest, size and where each object's data starts. */
function describePack(store: Store, group: { digest: string; size: number }[]): Pack {
  const hash = createHash('sha256');
  let size = 0;
  for (const b of packBytes(store, group)) {
    hash.update(b);
    size += b.length;
  }
  const objects: [string, number, number][] = [];
  let off = 0;
  for (const o of group) {
    objects.push([o.digest, off + 512, o.size]);
    off += 512 + Math.ceil(o.size / 512) * 512;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size, objects };
}

/** A ustar header for a regular file, mode 0644, owner 0, mtime 0. */
function ustarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const octal = (v: number, at: number, width: number): void => void h.write(v.toString(8).padStart(width - 1, '0') + '\0', at, 'latin1');
  h.write(name, 0, 100, 'latin1');
  octal(0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(0, 136, 12);
  h.fill(0x20, 148, 156);
  h.write('0', 156, 'latin1');
  h.write('ustar\u000000', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The artifact's index from untrusted JSON, checked against the manifest's layers. */
function parseIndex(bytes: Buffer, layers: Descriptor[], input: string): ArtifactIndex {
  const bad = (why: string): CfsError => new CfsError(ErrorCode.Io, `bad composefs artifact index: ${why}`, { input });
  let idx: ArtifactIndex;
  try {
    idx = JSON.parse(bytes.toString('utf8')) as ArtifactIndex;
  } catch (e) {
    throw bad((e as Error).message);
  }
  const isHex = (x: unknown): boolean => typeof x === 'string' && /^[0-9a-f]{64}$/.test(x);
  const isSize = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (!idx || !idx.image || !isHex(idx.image.digest) || !isSize(idx.image.size) || !Array.isArray(idx.packs)) throw bad('missing image or packs');
  if (layers.length !== idx.packs.length + 1 || layers[0].mediaType !== IMAGE_LAYER) throw bad('layers do not match the packs it lists');
  idx.packs.forEach((p, i) => {
    const l = layers[i + 1];
    if (!p || p.digest !== l.digest || p.size !== l.size || l.mediaType !== PACK_LAYER || !Array.isArray(p.objects)) throw bad(`pack ${i} does not match layer ${i + 1}`);
    for (const o of p.objects) {
      if (!Array.isArray(o) || !isHex(o[0]) || !isSize(o[1]) || !isSize(o[2]) || o[1] + o[2] > p.size) throw bad(`pack ${i}: bad object entry ${JSON.stringify(o).slice(0, 100)}`);
    }
  });
  return idx;
}

function locations(idx: ArtifactIndex): Map<string, Location> {
  const m = new Map<string, Location>();
  for (const pack of idx.packs) for (const [d, offset, size] of pack.objects) m.set(d, { digest: d, pack, offset, size });
  return m;
}

export async function pullArtifact(
  store: Store,
  reg: Registry,
  o: { reference: string; name: string; manifest: Manifest; config: Descriptor; layers: Descriptor[]; lazy: boolean; jobs: number; progress: Progress; plainHttp: boolean },
): Promise<PullResult> {
  const input = `${reg.name}@${o.manifest.digest}`;
  const indexBytes = await reg.blobBytes(o.config, MAX_INDEX);
  const idx = parseIndex(indexBytes, o.layers, input);
  const image = await reg.blobBytes(o.layers[0], MAX_IMAGE_SIZE);
  const imageHex = verityDigest(image).toString('hex');
  if (imageHex !== idx.image.digest) throw new CfsError(ErrorCode.Io, `digest mismatch: the image's fs-verity digest is ${imageHex}, the index says ${idx.image.digest}`, { input });
  const res: PullResult = { kind: 'artifact', reference: o.reference, name: o.name, image: '', manifest: o.manifest.digest, blobs: [], transferredBytes: 0, newObjects: 0, missing: 0 };
  const missing = imageNeeds(image, input).objects.filter((d) => !store.has(d));
  if (!o.lazy) {
    const f = await fetchObjects(store, reg, locations(idx), missing, o);
    res.blobs = f.blobs;
    res.transferredBytes = f.bytes;
    res.newObjects = f.objects;
  }
  saveBlob(store, o.config.digest, indexBytes);
  saveImageRecord(store, imageHex, {
    kind: 'artifact', reference: o.reference, host: reg.ref.host, endpoint: reg.ref.endpoint, repo: reg.ref.repo, plainHttp: o.plainHttp,
    manifest: o.manifest.digest, config: o.config.digest, layers: o.layers.map((l) => l.digest),
  });
  const added = store.addImage(image, { name: o.name, input });
  res.image = added.digest;
  res.missing = added.missing.length;
  return res;
}

/** cfs-cas fetch-missing: the objects an image lacks, from the artifact it was pulled from. */
export async function fetchMissing(store: Store, spec: string, opts: { jobs?: number; progress?: Progress } = {}): Promise<{ image: string; fetched: number; bytes: number; requests: number }> {
  const { file, data } = resolveImage(store, spec);
  const imageHex = verityDigest(data).toString('hex');
  const rec = loadImageRecord(store, imageHex);
  const indexBytes = rec?.kind === 'artifact' ? loadBlob(store, rec.config) : null;
  if (!rec || !indexBytes) throw new CfsError(ErrorCode.Io, 'no composefs artifact recorded for this image (pull one with cfs-cas pull --lazy)', { input: spec });
  const ref: Reference = { host: rec.host, endpoint: rec.endpoint, repo: rec.repo, tag: null, digest: rec.manifest };
  const reg = new Registry(ref, { plainHttp: rec.plainHttp });
  const layers = rec.layers.map((digest, i) => ({ digest, size: 0, mediaType: i === 0 ? IMAGE_LAYER : PACK_LAYER }));
  const idx = JSON.parse(indexBytes.toString('utf8')) as ArtifactIndex;
  idx.packs.forEach((p, i) => (layers[i + 1].size = p.size));
  parseIndex(indexBytes, layers, `${reg.name}@${rec.manifest}`);
  store.lock('shared');
  const missing = imageNeeds(data, file).objects.filter((d) => !store.has(d));
  const f = await fetchObjects(store, reg, locations(idx), missing, { jobs: opts.jobs ?? 8, progress: opts.progress ?? new Progress(null) });
  return { image: imageHex, fetched: f.objects, bytes: f.bytes, requests: f.requests };
}

/**
 * Fetch objects: a pack of which at least half the bytes are wanted is streamed whole; other
 * objects are read with Range requests, `jobs` at a time. Each object is staged, checked against
 * its fs-verity digest, and committed (synced, then linked into objects/); objects already
 * verified are committed even when a later one fails, so a retry resumes.
 */
async function fetchObjects(
  store: Store,
  reg: Registry,
  where: Map<string, Location>,
  wanted: string[],
  o: { jobs: number; progress: Progress },
): Promise<{ objects: number; bytes: number; requests: number; blobs: PullResult['blobs'] }> {
  const out = { objects: 0, bytes: 0, requests: 0, blobs: [] as PullResult['blobs'] };
  const byPack = new Map<Pack, Location[]>();
  for (const d of wanted) {
    const loc = where.get(d);
    if (!loc) throw new CfsError(ErrorCode.Io, `the artifact has no object ${d}`, { input: reg.name });
    const list = byPack.get(loc.pack);
    if (list) list.push(loc);
    else byPack.set(loc.pack, [loc]);
  }
  const stage = store.makeStagingDir();
  const staged = new Map<string, { file: string; size: number }>();
  const commit = (): void => {
    const t = store.commitStagedAll(stage, staged);
    out.objects += t.newObjects;
    staged.clear();
  };
  try {
    const ranged: Location[] = [];
    for (const [pack, locs] of byPack) {
      const want = locs.reduce((n, l) => n + l.size, 0);
      if (want * 2 < pack.size) {
        ranged.push(...locs);
        continue;
      }
      const label = `pack ${pack.digest.slice(7, 19)}`;
      await streamPack(reg, pack, new Set(locs.map((l) => l.digest)), stage, staged, o.progress.tap(label, pack.size));
      out.blobs.push({ digest: pack.digest, size: pack.size, fetched: true });
      out.bytes += pack.size;
      out.requests++;
      commit();
      o.progress.finish(label, `done (${locs.length} objects)`);
    }
    let next = 0;
    let fetchedBytes = 0;
    const total = ranged.reduce((n, l) => n + l.size, 0);
    const worker = async (): Promise<void> => {
      while (next < ranged.length) {
        const l = ranged[next++];
        const file = path.join(stage, l.digest);
        await receiveObject(l.size === 0 ? null : await reg.blobRange(l.pack.digest, l.offset, l.size), l.digest, l.size, file, `${reg.name}@${l.pack.digest}`);
        staged.set(l.digest, { file, size: l.size });
        out.requests++;
        out.bytes += l.size;
        fetchedBytes += l.size;
        o.progress.update('objects', fetchedBytes, total);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(o.jobs, ranged.length)) }, worker));
    } finally {
      commit();
    }
    if (ranged.length) o.progress.finish('objects', `${ranged.length} fetched`);
    return out;
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Stream a pack, staging the wanted objects; commits nothing unless the pack's digest is right. */
async function streamPack(
  reg: Registry, pack: Pack, wanted: Set<string>, stage: string, staged: Map<string, { file: string; size: number }>, tap: NodeJS.ReadWriteStream,
): Promise<void> {
  const input = `${reg.name}@${pack.digest}`;
  const { stream, verified } = await reg.blob({ mediaType: PACK_LAYER, digest: pack.digest, size: pack.size });
  const extract = tar.extract();
  stream.on('error', (e) => extract.destroy(e));
  stream.pipe(tap).pipe(extract);
  const mine = new Map<string, { file: string; size: number }>();
  for await (const entry of extract) {
    const digest = entry.header.name.replace('/', '');
    if (!wanted.has(digest) || mine.has(digest)) {
      entry.resume();
      continue;
    }
    const file = path.join(stage, digest);
    await receiveObject(entry, digest, entry.header.size ?? 0, file, input);
    mine.set(digest, { file, size: entry.header.size ?? 0 });
  }
  await verified;
  for (const d of wanted) if (!mine.has(d)) throw new CfsError(ErrorCode.Io, `pack lacks object ${d} that its index lists`, { input });
  for (const [d, s] of mine) staged.set(d, s);
}

/** Write one object's bytes to `file`, checking size and fs-verity digest. */
async function receiveObject(src: AsyncIterable<unknown> | null, digest: string, size: number, file: string, input: string): Promise<void> {
  const hasher = newVerityHasher();
  const fd = fs.openSync(file, 'wx', 0o644);
  let n = 0;
  try {
    for await (const c of src ?? []) {
      const b = c as Buffer;
      hasher.update(b);
      n += b.length;
      let w = 0;
      while (w < b.length) w += fs.writeSync(fd, b, w, b.length - w);
    }
  } finally {
    fs.closeSync(fd);
  }
  const got = hasher.digest().toString('hex');
  if (n !== size || got !== digest) {
    fs.rmSync(file, { force: true });
    throw new CfsError(ErrorCode.Io, `digest mismatch: object ${objectRelPath(digest)} arrived as ${n} bytes with fs-verity digest ${got}`, { input });
  }
}
