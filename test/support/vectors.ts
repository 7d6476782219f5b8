/** Loads the golden vectors from ../shared/vectors (never copied into the project). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED = process.env.CFS_SHARED_DIR ?? path.resolve(PROJECT_ROOT, '../shared');
export const VECTORS = path.join(SHARED, 'vectors');

export interface Vector {
  set: 'generated' | 'upstream';
  name: string;
  /** The dump input (decompressed). */
  input: Buffer;
  strict: boolean;
  minVersion?: number;
  maxVersion?: number;
  /** Expected image sha256, or null for should-fail inputs. */
  sha256: string | null;
  /** The expected image, where stored. */
  image?: Buffer;
  /** composefs-info dump of the image. */
  canonical?: string;
  /** mkcomposefs flags, as recorded. */
  flags: string;
}

function readMaybeGz(file: string): Buffer {
  const data = fs.readFileSync(file);
  return file.endsWith('.gz') ? zlib.gunzipSync(data) : data;
}

function versions(flags: string): { minVersion?: number; maxVersion?: number } {
  const min = /--min-version=(\d+)/.exec(flags);
  const max = /--max-version=(\d+)/.exec(flags);
  if (!min && !max) return {};
  return { minVersion: min ? Number(min[1]) : 0, maxVersion: max ? Number(max[1]) : 0 };
}

function rows(file: string): string[][] {
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  return lines.slice(1).map((l) => l.split('\t'));
}

export function loadVectors(): Vector[] {
  const out: Vector[] = [];
  const gen = path.join(VECTORS, 'generated');
  for (const [name, flags, sha] of rows(path.join(gen, 'manifest.tsv'))) {
    out.push({
      set: 'generated',
      name,
      input: fs.readFileSync(path.join(gen, `${name}.dump`)),
      strict: true,
      ...versions(flags),
      sha256: sha,
      image: fs.readFileSync(path.join(gen, `${name}.img`)),
      canonical: fs.readFileSync(path.join(gen, `${name}.canonical.dump`), 'latin1'),
      flags,
    });
  }
  const up = path.join(VECTORS, 'upstream');
  for (const [name, input, env, flags, sha] of rows(path.join(up, 'manifest.tsv'))) {
    const canonFile = path.join(up, input.endsWith('.gz') ? `${name}.canonical.dump.gz` : `${name}.canonical.dump`);
    out.push({
      set: 'upstream',
      name,
      input: readMaybeGz(path.join(up, input)),
      strict: env !== '-',
      ...versions(flags),
      sha256: sha === 'FAIL' ? null : sha,
      canonical: fs.existsSync(canonFile) ? readMaybeGz(canonFile).toString('latin1') : undefined,
      flags,
    });
  }
  return out;
}

export interface DirVector {
  name: string;
  image: Buffer;
  sha256: string;
  canonical: string;
}

export function loadDirVectors(): DirVector[] {
  const dir = path.join(VECTORS, 'dirs');
  return ['tree-plain', 'tree-store', 'tree-epoch'].map((name) => ({
    name,
    image: fs.readFileSync(path.join(dir, `${name}.img`)),
    sha256: fs.readFileSync(path.join(dir, `${name}.sha256`), 'utf8').trim().split(/\s+/)[0],
    canonical: fs.readFileSync(path.join(dir, `${name}.canonical.dump`), 'latin1'),
  }));
}

export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
