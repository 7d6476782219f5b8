/** Store maintenance: gc (mark from refs/, sweep old unreferenced images and objects), fsck, missing. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfsError, ErrorCode } from '../format/index.js';
import { Store, imageNeeds, objectRelPath, walkObjects } from './store.js';
import { measureVerity } from './sys.js';
import { verityDigest } from './sha256-native.js';
import { digestOfFd } from './digest.js';

export interface GcResult {
  images: string[];
  objects: string[];
  bytes: number;
  litter: string[];
  kept: { images: number; objects: number };
}

/** Objects needed by an image file; throws a CfsError naming it if it is unreadable. */
function needsOf(store: Store, digest: string): string[] {
  const file = path.join(store.imagesDir, digest);
  return imageNeeds(fs.readFileSync(file), file).objects;
}

const ageMs = (st: fs.Stats, now: number): number => now - st.mtimeMs;

/**
 * Roots are refs/ plus anything younger than the grace period (a writer that has not
 * registered its image yet). Runs under the exclusive store lock.
 */
export function gc(store: Store, opts: { dryRun?: boolean; graceSeconds?: number } = {}): GcResult {
  const grace = (opts.graceSeconds ?? 3600) * 1000;
  store.lock('exclusive');
  const now = Date.now();
  const res: GcResult = { images: [], objects: [], bytes: 0, litter: [], kept: { images: 0, objects: 0 } };

  const liveImages = new Set<string>();
  for (const name of store.refNames()) {
    let img: string | null = null;
    try {
      img = store.readRef(name);
    } catch {
      /* malformed ref: not a root; fsck reports it */
    }
    if (img) liveImages.add(img);
  }
  for (const d of store.imageDigests()) {
    if (liveImages.has(d)) continue;
    const st = fs.statSync(path.join(store.imagesDir, d));
    if (ageMs(st, now) < grace) liveImages.add(d);
    else res.images.push(d);
  }
  const liveObjects = new Set<string>();
  for (const d of liveImages) {
    if (!fs.existsSync(path.join(store.imagesDir, d))) continue; // dangling ref
    // A live image we cannot read means we cannot know what it needs: stop rather than guess.
    for (const o of needsOf(store, d)) liveObjects.add(o);
  }
  for (const o of walkObjects(store.objectsDir)) {
    if ('litter' in o) {
      if (ageMs(fs.lstatSync(o.litter), now) >= grace) res.litter.push(o.litter);
      continue;
    }
    if (liveObjects.has(o.digest)) {
      res.kept.objects++;
      continue;
    }
    const st = fs.statSync(o.path);
    if (ageMs(st, now) < grace) res.kept.objects++;
    else {
      res.objects.push(o.digest);
      res.bytes += st.size;
    }
  }
  for (const t of listDir(store.tmpDir)) {
    const p = path.join(store.tmpDir, t);
    if (ageMs(fs.lstatSync(p), now) >= grace) res.litter.push(p);
  }
  for (const dir of [store.imagesDir, store.refsDir]) {
    for (const t of listDir(dir)) {
      const p = path.join(dir, t);
      if (t.startsWith('.tmp-') && ageMs(fs.lstatSync(p), now) >= grace) res.litter.push(p);
    }
  }
  res.kept.images = liveImages.size;

  if (!opts.dryRun) {
    for (const d of res.images) fs.rmSync(path.join(store.imagesDir, d), { force: true });
    const dirs = new Set<string>();
    for (const o of res.objects) {
      const file = path.join(store.objectsDir, objectRelPath(o));
      fs.rmSync(file, { force: true });
      dirs.add(path.dirname(file));
    }
    for (const l of res.litter) fs.rmSync(l, { recursive: true, force: true });
    for (const d of dirs) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* not empty */
      }
    }
    store.index.dropImages(res.images);
    store.index.dropObjects(res.objects);
  }
  return res;
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export interface FsckProblem {
  kind: 'bad-object' | 'bad-image' | 'missing-object' | 'dangling-ref' | 'bad-ref';
  path: string;
  message: string;
  /** Images (digests) affected by a bad or missing object. */
  images?: string[];
}

export interface FsckResult {
  objects: number;
  images: number;
  refs: number;
  problems: FsckProblem[];
  /** Temp files and staging directories left by interrupted writers (not errors). */
  litter: string[];
  /** Whether objects carry fs-verity: 'checked', or 'unsupported' by the file system. */
  verity: 'checked' | 'unsupported' | 'none';
  repaired: string[];
}

function fileDigest(file: string): { digest: string; verity: string | null | 'unsupported' } {
  const fd = fs.openSync(file, 'r');
  try {
    return { digest: digestOfFd(fd).digest, verity: measureVerity(fd) };
  } finally {
    fs.closeSync(fd);
  }
}

/** Recompute every digest, check images and refs; with repair, quarantine bad objects. */
export function fsck(store: Store, opts: { repair?: boolean } = {}): FsckResult {
  // Shared keeps gc out while we read; repair moves files, so it excludes writers too.
  store.lock(opts.repair ? 'exclusive' : 'shared');
  const res: FsckResult = { objects: 0, images: 0, refs: 0, problems: [], litter: [], verity: 'none', repaired: [] };
  const present = new Set<string>();
  const badObjects: { digest: string; path: string }[] = [];
  for (const o of walkObjects(store.objectsDir)) {
    if ('litter' in o) {
      res.litter.push(o.litter);
      continue;
    }
    res.objects++;
    const st = fs.lstatSync(o.path);
    if (!st.isFile()) {
      res.problems.push({ kind: 'bad-object', path: o.path, message: 'not a regular file' });
      badObjects.push(o);
      continue;
    }
    const { digest, verity } = fileDigest(o.path);
    if (verity === 'unsupported') {
      if (res.verity === 'none') res.verity = 'unsupported';
    } else if (verity !== null) {
      res.verity = 'checked';
      if (verity !== o.digest) res.problems.push({ kind: 'bad-object', path: o.path, message: `fs-verity measures ${verity}` });
    }
    if (digest !== o.digest) {
      res.problems.push({ kind: 'bad-object', path: o.path, message: `content digest is ${digest} (${st.size} bytes): truncated or altered` });
      badObjects.push(o);
    } else present.add(o.digest);
  }

  const users = new Map<string, string[]>();
  for (const d of store.imageDigests()) {
    res.images++;
    const file = path.join(store.imagesDir, d);
    let data: Buffer;
    try {
      data = fs.readFileSync(file);
      if (verityDigest(data).toString('hex') !== d) throw new CfsError(ErrorCode.Io, 'image content does not match its name');
      for (const o of imageNeeds(data, file).objects) {
        let u = users.get(o);
        if (!u) users.set(o, (u = []));
        u.push(d);
      }
    } catch (e) {
      res.problems.push({ kind: 'bad-image', path: file, message: (e as Error).message });
    }
  }
  for (const [o, imgs] of users) {
    if (!present.has(o) && !badObjects.some((b) => b.digest === o)) {
      res.problems.push({ kind: 'missing-object', path: path.join(store.objectsDir, objectRelPath(o)), message: 'needed but absent', images: imgs });
    }
  }
  for (const b of badObjects) {
    const p = res.problems.find((x) => x.kind === 'bad-object' && x.path === b.path);
    if (p) p.images = users.get(b.digest) ?? [];
  }
  for (const name of store.refNames()) {
    res.refs++;
    const ref = path.join(store.refsDir, name);
    if (name.startsWith('.tmp-')) {
      res.litter.push(ref);
      res.refs--;
      continue;
    }
    try {
      const img = store.readRef(name);
      if (img && !fs.existsSync(path.join(store.imagesDir, img))) res.problems.push({ kind: 'dangling-ref', path: ref, message: `points to missing image ${img}` });
    } catch (e) {
      res.problems.push({ kind: 'bad-ref', path: ref, message: (e as Error).message });
    }
  }
  for (const dir of [store.imagesDir, store.refsDir]) {
    for (const t of listDir(dir)) if (t.startsWith('.tmp-')) res.litter.push(path.join(dir, t));
  }
  for (const t of listDir(store.tmpDir)) res.litter.push(path.join(store.tmpDir, t));

  if (opts.repair) {
    const quarantine = path.join(store.root, 'quarantine');
    for (const b of badObjects) {
      fs.mkdirSync(quarantine, { recursive: true });
      const dest = path.join(quarantine, `${b.digest}.${Date.now()}`);
      fs.renameSync(b.path, dest);
      res.repaired.push(`quarantined ${b.path} -> ${dest}`);
    }
    for (const l of res.litter) {
      fs.rmSync(l, { recursive: true, force: true });
      res.repaired.push(`removed ${l}`);
    }
    store.reindex();
  }
  return res;
}

/** Resolve IMAGE given as a file, a ref name or an image digest in the store. */
export function resolveImage(store: Store, spec: string): { file: string; data: Buffer } {
  if (fs.existsSync(spec) && fs.statSync(spec).isFile()) return { file: spec, data: fs.readFileSync(spec) };
  let digest: string | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(spec)) digest = spec.toLowerCase();
  else {
    try {
      digest = store.readRef(spec);
    } catch {
      digest = null;
    }
  }
  const file = digest ? path.join(store.imagesDir, digest) : '';
  if (!digest || !fs.existsSync(file)) throw new CfsError(ErrorCode.Io, 'no such image file, ref or image digest in the store', { input: spec });
  return { file, data: fs.readFileSync(file) };
}

/** Objects an image needs that the store lacks, as XX/REST paths. */
export function missingObjects(store: Store, spec: string): string[] {
  const { file, data } = resolveImage(store, spec);
  return imageNeeds(data, file).objects.filter((o) => !store.has(o)).map(objectRelPath);
}
