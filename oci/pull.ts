/**
 * cfs-cas pull: an OCI/Docker image (index → platform manifest → config → layers) into the
 * store. Each layer's tar streams through importTar (objects plus a composefs image of the layer,
 * whiteout files kept) and is recorded by its digest, so a layer another image already brought
 * is not fetched again and an interrupted pull resumes; the layer trees are then merged with the
 * whiteout rules into one image registered under the name. A composefs artifact (cfs-cas push)
 * is handed to artifact.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { Store, checkRefName } from '../cas/store.js';
import { importTar, treeNeeds } from '../cas/tar.js';
import { CfsError, ErrorCode, decodeImage, encodeImage, type Inode } from '../format/index.js';
import { ARTIFACT_CONFIG, pullArtifact } from './artifact.js';
import { decompressor, layerCompression, mergeLayers } from './layers.js';
import { saveBlob, saveImageRecord, saveLayer, usableLayer } from './meta.js';
import { Progress } from './progress.js';
import { defaultRefName, formatReference, manifestRef, parseReference } from './reference.js';
import { type Descriptor, type Manifest, MediaType, Registry, VerifyingStream } from './registry.js';

export interface PullOptions {
  name?: string;
  plainHttp?: boolean;
  /** Artifacts only: fetch the image, leave the objects to fetch-missing. */
  lazy?: boolean;
  /** OS/ARCH[/VARIANT] to pick from an index (default linux/amd64). */
  platform?: string;
  /** Parallel object downloads (artifacts). */
  jobs?: number;
  progress?: Progress;
}

export interface PullResult {
  kind: 'image' | 'artifact';
  reference: string;
  name: string;
  image: string;
  manifest: string;
  /** Layers (images) or object packs (artifacts) and whether they were fetched. */
  blobs: { digest: string; size: number; fetched: boolean }[];
  /** Bytes received for layers, packs and objects (manifests and configs aside). */
  transferredBytes: number;
  newObjects: number;
  /** Objects the image needs that are still missing (only with --lazy). */
  missing: number;
}

const MAX_CONFIG = 16 << 20;

export async function pull(store: Store, refText: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = parseReference(refText);
  const name = checkRefName(opts.name ?? defaultRefName(ref));
  const progress = opts.progress ?? new Progress(null);
  const reg = new Registry(ref, { plainHttp: opts.plainHttp });
  store.lock('shared');
  let m = await reg.manifest(manifestRef(ref));
  if (m.mediaType === MediaType.ociIndex || m.mediaType === MediaType.dockerList) {
    m = await reg.manifest(pickPlatform(m, opts.platform ?? 'linux/amd64', formatReference(ref)).digest);
  }
  if (m.mediaType !== MediaType.ociManifest && m.mediaType !== MediaType.dockerManifest) {
    throw new CfsError(ErrorCode.Unsupported, `unsupported manifest type ${JSON.stringify(m.mediaType)}`, { input: formatReference(ref) });
  }
  const input = `${reg.name}@${m.digest}`;
  const config = descriptor(m.json.config, `${input} config`);
  if (!Array.isArray(m.json.layers)) throw new CfsError(ErrorCode.Io, 'manifest has no layers list', { input });
  const layers = (m.json.layers as unknown[]).map((l, i) => descriptor(l, `${input} layer ${i + 1}`));
  const base = { reference: formatReference(ref), name, manifest: m.digest };
  if (config.mediaType === ARTIFACT_CONFIG) {
    return pullArtifact(store, reg, { ...base, manifest: m, config, layers, lazy: !!opts.lazy, jobs: opts.jobs ?? 8, progress, plainHttp: !!opts.plainHttp });
  }
  if (opts.lazy) throw new CfsError(ErrorCode.Usage, '--lazy needs a composefs artifact (made by cfs-cas push); this is a container image');

  const configBytes = await reg.blobBytes(config, MAX_CONFIG);
  const diffIds = configDiffIds(configBytes, layers.length, `${input} config`);
  const res: PullResult = { kind: 'image', ...base, image: '', blobs: [], transferredBytes: 0, newObjects: 0, missing: 0 };
  const trees: Inode[] = [];
  for (const [i, d] of layers.entries()) {
    const label = `layer ${i + 1}/${layers.length} ${d.digest.slice(7, 19)}`;
    let image = usableLayer(store, d.digest)?.image;
    const fetched = !image;
    if (image) progress.finish(label, 'already in the store');
    else {
      const r = await importLayer(store, reg, d, diffIds?.[i] ?? null, label, progress);
      image = r.image;
      res.transferredBytes += d.size;
      res.newObjects += r.newObjects;
      progress.finish(label, `done (${r.newObjects} new objects)`);
    }
    res.blobs.push({ digest: d.digest, size: d.size, fetched });
    const file = path.join(store.imagesDir, image);
    trees.push(decodeImage(fs.readFileSync(file), { input: file, owner: 'image' }).root);
  }
  const root = mergeLayers(trees);
  const image = encodeImage(root, { input });
  saveBlob(store, config.digest, configBytes);
  const added = store.addImage(image, { name, input, needs: treeNeeds(root) });
  saveImageRecord(store, added.digest, {
    kind: 'image', reference: base.reference, host: ref.host, endpoint: ref.endpoint, repo: ref.repo,
    plainHttp: !!opts.plainHttp, manifest: m.digest, config: config.digest, layers: layers.map((l) => l.digest),
  });
  res.image = added.digest;
  return res;
}

/**
 * One layer blob → verify (size, sha256) → decompress → verify diff_id → importTar. Both digests
 * are checked before importTar makes anything visible; the layer is recorded after.
 */
async function importLayer(store: Store, reg: Registry, d: Descriptor, diffId: string | null, label: string, progress: Progress): Promise<{ image: string; newObjects: number }> {
  const input = `${reg.name}@${d.digest}`;
  const compression = layerCompression(d.mediaType, input);
  const { stream, verified } = await reg.blob(d);
  const diffCheck = new VerifyingStream(diffId, null, input, 'uncompressed layer bytes (diff_id)');
  const stages: (NodeJS.ReadableStream | NodeJS.ReadWriteStream)[] = [stream, progress.tap(label, d.size)];
  const unpack = decompressor(compression);
  if (unpack) stages.push(unpack);
  stages.push(diffCheck);
  const tarStream = pipeline(stages as unknown as [Readable, ...NodeJS.ReadWriteStream[]], () => undefined) as unknown as Readable;
  const r = await importTar(store, tarStream, {
    input,
    beforeCommit: async () => {
      await verified;
      await diffCheck.verified;
    },
  });
  saveLayer(store, d.digest, { image: r.image, mediaType: d.mediaType, size: d.size });
  return { image: r.image, newObjects: r.newObjects };
}

/** The manifest for OS/ARCH[/VARIANT] in an index or manifest list. */
function pickPlatform(index: Manifest, platform: string, input: string): Descriptor {
  const [os, arch, variant] = platform.split('/');
  const list = Array.isArray(index.json.manifests) ? (index.json.manifests as unknown[]).map((d, i) => descriptor(d, `${input} manifest ${i}`)) : [];
  const hit = list.find((d) => d.platform?.os === os && d.platform?.architecture === arch && (!variant || d.platform?.variant === variant));
  if (!hit) {
    const have = list.map((d) => [d.platform?.os, d.platform?.architecture, d.platform?.variant].filter(Boolean).join('/')).join(', ');
    throw new CfsError(ErrorCode.Io, `no manifest for ${platform} in the index (has: ${have || 'none'})`, { input });
  }
  return hit;
}

/** A descriptor from untrusted JSON, checked field by field. */
export function descriptor(v: unknown, input: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  const ok =
    typeof d === 'object' && d !== null &&
    typeof d.mediaType === 'string' &&
    typeof d.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(d.digest) &&
    typeof d.size === 'number' && Number.isSafeInteger(d.size) && d.size >= 0;
  if (!ok) throw new CfsError(ErrorCode.Io, 'bad descriptor (needs mediaType, a sha256 digest and a size)', { input });
  return d as Descriptor;
}

/** rootfs.diff_ids of an image config, when it lists one per layer. */
function configDiffIds(bytes: Buffer, layers: number, input: string): string[] | null {
  let cfg: { rootfs?: { diff_ids?: unknown } };
  try {
    cfg = JSON.parse(bytes.toString('utf8')) as typeof cfg;
  } catch (e) {
    throw new CfsError(ErrorCode.Io, `image config is not JSON: ${(e as Error).message}`, { input });
  }
  const ids = cfg?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || ids.length !== layers || !ids.every((x) => typeof x === 'string' && /^sha256:[0-9a-f]{64}$/.test(x))) return null;
  return ids as string[];
}
