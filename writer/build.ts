/** cfs-writer's directory mode: scan, digest, optionally fill a store, encode. */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { CfsError, ErrorCode, type Inode, encodeImage, encodeImageLate } from '../format/index.js';
import { mallocTrim } from '../cas/sys.js';
import { type ExternalFile, type ScanOptions, scanDirectoryAsync } from './from-dir.js';
import type { DigestCache } from './digest-cache.js';
import { HashPool, defaultThreads } from '../cas/hash-pool.js';

export interface BuildOptions extends Omit<ScanOptions, 'onExternal'> {
  /** Payload = path relative to the directory (mount with base=DIR); no digests. */
  relative?: boolean;
  threads?: number;
  minVersion?: number;
  maxVersion?: number;
  /** Called for each external file as soon as its digest is known (e.g. to stage it in a store). */
  onDigest?: (file: ExternalFile) => void;
  /** Called once each of the `files` external files has its digest (e.g. to store them). */
  onStore?: (files: number) => void | Promise<void>;
  /** Called when encoding starts. */
  onEncode?: () => void;
  onHashProgress?: (done: number, bytes: number) => void;
  /** Digests of unchanged files from an earlier run; fresh ones are noted in it. */
  cache?: DigestCache;
}

export interface BuildResult {
  image: Buffer;
  entries: number;
  skipped: number;
  /** Regular files kept outside the image. */
  files: number;
  externalBytes: number;
}

export async function buildFromDirectory(dir: string | Buffer, opts: BuildOptions = {}): Promise<BuildResult> {
  // Hash in helper processes while the tree is still being scanned.
  const failed: string[] = [];
  let digestError: unknown = null;
  /** A file's digest is known (hashed or cached), then onDigest. Its payload follows from it (redirectToObject). */
  const setDigest = (f: ExternalFile, digest: string): void => {
    f.inode.digest = digest;
    if (!opts.onDigest || digestError) return;
    try {
      opts.onDigest(f);
    } catch (e) {
      digestError = e; // thrown once the helpers are done
    }
  };
  let done = 0;
  let bytes = 0;
  /** Files being hashed, by pool submission index (answered ones are dropped). */
  let hashed: (ExternalFile | undefined)[] = [];
  /** How many external files have each size. */
  const sizes = new Map<number, number>();
  const pool = opts.relative
    ? null
    : new HashPool(opts.threads ?? defaultThreads(), (i, r) => {
        const f = hashed[i]!;
        hashed[i] = undefined;
        if (r.digest === undefined) {
          failed.push(`${f.pathLatin1}: ${r.code ?? ''} ${r.error}`);
          return;
        }
        if (r.size !== f.inode.size) failed.push(`${f.pathLatin1}: changed while reading (${f.inode.size} → ${r.size} bytes)`);
        opts.cache?.note(f, r.digest);
        setDigest(f, r.digest);
        done++;
        bytes += r.size ?? 0;
        if (opts.onHashProgress && done % 256 === 0) opts.onHashProgress(done, bytes);
      });
  const hash = (file: ExternalFile): void => {
    hashed.push(file);
    pool!.submit(file.pathLatin1, file.inode.size);
  };
  let lookups: ExternalFile[] = [];
  const lookUp = (): void => {
    if (lookups.length === 0) return;
    const batch = lookups;
    lookups = [];
    const digests = opts.cache!.lookupMany(batch);
    for (let i = 0; i < batch.length; i++) {
      const file = batch[i];
      const cached = digests[i];
      if (cached === undefined) {
        hash(file);
        continue;
      }
      setDigest(file, cached);
    }
  };
  /** Throw what went wrong with the files answered so far. */
  const check = (): void => {
    if (digestError) throw digestError;
    if (failed.length) throw new CfsError(ErrorCode.Io, `cannot read ${failed.length} file(s): ${failed.slice(0, 3).join('; ')}`, { input: String(dir) });
  };
  try {
    // the scan pauses every few ms, so helpers get their batches as they are made
    const scan = await scanDirectoryAsync(dir, {
      ...opts,
      stamps: opts.cache !== undefined,
      onExternal: (file) => {
        if (!pool) {
          file.inode.payload = file.rel;
          return;
        }
        const size = file.inode.size;
        sizes.set(size, (sizes.get(size) ?? 0) + 1);
        if (!opts.cache) return hash(file);
        // digest-cache lookups go in batches (a query costs more than the rows it reads)
        lookups.push(file);
        if (lookups.length >= LOOKUP_BATCH) lookUp();
      },
    });
    lookUp();
    const files = scan.files;
    // Full collections on big trees only (on small ones they cost more than they save): once
    // the encoder has copied the tree (the consumed tree goes), and once it has turned the
    // digests into xattrs (they go). V8 hardly returns the pages either frees, but what
    // comes later reuses them: each lowers the peak by 10-20 MB on /usr, for 0.1 s. One before
    // encoding as well did not lower the peak.
    const gc = scan.entries >= BIG_TREE ? fullGc : undefined;
    const encodeOpts = { minVersion: opts.minVersion, maxVersion: opts.maxVersion, input: String(dir), consume: true, afterCopy: gc, afterRewrite: gc, redirectToObject: true };
    let image: Buffer;
    if (pool?.helping) {
      // The layout depends on a digest only where two files may have the same content, that
      // is the same size. Those are hashed first; the encoder lays out the image meanwhile the
      // helpers hash the rest, and their digests are filled in at the end.
      pool.prioritize((i) => sizes.get(hashed[i]!.inode.size) !== 1);
      await pool.drain(true);
      check();
      sizes.clear();
      const late = new Map<Inode, number>();
      for (let i = 0; i < hashed.length; i++) if (hashed[i]) late.set(hashed[i]!.inode, i);
      pool.handOff();
      opts.onEncode?.();
      const out = encodeImageLate(scan.root, { ...encodeOpts, late: (inode) => late.get(inode) ?? -1 });
      pool.reclaim();
      await pool.drain();
      await pool.close();
      check();
      for (const [inode, i] of late) out.fill(i, inode.digest!);
      image = out.image();
      if (opts.onStore) await opts.onStore(files);
    } else {
      await pool?.drain();
      await pool?.close(); // the workers' memory is better spent on encoding
      check();
      if (opts.onStore) await opts.onStore(files);
      hashed = [];
      sizes.clear();
      opts.onEncode?.();
      image = encodeImage(scan.root, encodeOpts);
    }
    return { image, entries: scan.entries, skipped: scan.skipped, files, externalBytes: scan.externalBytes };
  } finally {
    await pool?.close();
  }
}

/** External files collected before one DigestCache.lookupMany call. */
const LOOKUP_BATCH = 1024;

/** Entries from which cfs-writer collects garbage while encoding. */
export const BIG_TREE = 50_000;

/**
 * A full garbage collection where V8 allows one, then the freed native memory back to the system:
 * the encoder's copy of the tree leaves the scanned tree behind as garbage, and its rewrite the
 * digests and payloads.
 */
export function fullGc(): void {
  try {
    v8.setFlagsFromString('--expose_gc');
    (vm.runInNewContext('gc') as () => void)();
  } catch {
    // no gc on this runtime: only the peak is higher
  }
  mallocTrim();
}
