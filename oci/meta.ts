/**
 * What pulls record next to the store, under STORE/oci/ (not gc roots; small):
 *   blobs/sha256/HEX     verified configs (and artifact indexes) as the registry served them
 *   layers/HEX.json      a layer already imported: the composefs image of its tar
 *   images/IMAGE.json    where an image came from (registry, repository, manifest, config)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAtomic } from '../cas/atomic.js';
import type { Store } from '../cas/store.js';
import { imageNeeds } from '../cas/store.js';

export interface LayerRecord {
  /** The composefs image (fs-verity hex) of the layer's tar, whiteout files included. */
  image: string;
  mediaType: string;
  size: number;
}

export interface ImageRecord {
  kind: 'image' | 'artifact';
  reference: string;
  host: string;
  endpoint: string;
  repo: string;
  plainHttp: boolean;
  manifest: string;
  config: string;
  layers: string[];
}

const dir = (store: Store, ...parts: string[]): string => path.join(store.root, 'oci', ...parts);
const hexOf = (digest: string): string => digest.replace(/^sha256:/, '');

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeAtomic(file, Buffer.from(JSON.stringify(value, null, 1) + '\n'));
}

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null; // missing or damaged: the caller fetches again
  }
}

export function saveBlob(store: Store, digest: string, bytes: Buffer): void {
  const file = dir(store, 'blobs', 'sha256', hexOf(digest));
  if (fs.existsSync(file)) return;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeAtomic(file, bytes);
}

export function loadBlob(store: Store, digest: string): Buffer | null {
  try {
    return fs.readFileSync(dir(store, 'blobs', 'sha256', hexOf(digest)));
  } catch {
    return null;
  }
}

/** A recorded layer whose image and objects are all still in the store (gc may have taken them). */
export function usableLayer(store: Store, digest: string): LayerRecord | null {
  const r = readJson<LayerRecord>(dir(store, 'layers', `${hexOf(digest)}.json`));
  if (!r || typeof r.image !== 'string' || !/^[0-9a-f]{64}$/.test(r.image)) return null;
  const file = path.join(store.imagesDir, r.image);
  let needs: string[];
  try {
    needs = imageNeeds(fs.readFileSync(file), file).objects;
  } catch {
    return null;
  }
  return needs.every((o) => store.has(o)) ? r : null;
}

export function saveLayer(store: Store, digest: string, r: LayerRecord): void {
  writeJson(dir(store, 'layers', `${hexOf(digest)}.json`), r);
}

export function saveImageRecord(store: Store, image: string, r: ImageRecord): void {
  writeJson(dir(store, 'images', `${image}.json`), r);
}

export function loadImageRecord(store: Store, image: string): ImageRecord | null {
  return readJson<ImageRecord>(dir(store, 'images', `${image}.json`));
}
