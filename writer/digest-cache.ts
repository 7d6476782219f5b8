/**
 * cfs-writer's digest cache: a file whose (dev, ino, size, mtime, ctime) are unchanged since it
 * was hashed is not read again. It lives in a cfs-cas store's index, or (--digest-cache FILE)
 * in a file of the same form for a plain store or no store. If a cached file's object left the
 * store, the store step copies the unchanged file back in under that digest. Any write to a file
 * changes its ctime. Files changed within the second before the scan are not cached (their
 * timestamps may not yet tell a later write apart).
 */
import type { Index } from '../cas/index.js';
import type { ExternalFile } from './from-dir.js';

const RACY_NS = 1_000_000_000n;

export class DigestCache {
  private readonly fresh: [string, string, string][] = [];
  private readonly racyAfter: bigint;
  private lookups = true;
  hits = 0;

  constructor(
    private readonly index: Pick<Index, 'fileDigests' | 'putFileDigests'>,
    startNs: bigint = BigInt(Date.now()) * 1_000_000n,
  ) {
    this.racyAfter = startNs - RACY_NS;
  }

  /** `f` must be scanned with ScanOptions.stamps. */
  private static key(f: ExternalFile): [string, string] {
    const s = f.stat!;
    return [`${s.dev}:${s.ino}`, `${f.inode.size}:${s.mtimeNs}:${s.ctimeNs}`];
  }

  /** Hash everything again (the results still refresh the cache). */
  disableLookups(): void {
    this.lookups = false;
  }

  /** The cached digests of `files` that can be trusted (undefined for the others). */
  lookupMany(files: ExternalFile[]): (string | undefined)[] {
    if (!this.lookups) return new Array(files.length).fill(undefined);
    const keys = files.map(DigestCache.key);
    const found = this.index.fileDigests(
      keys.map((k) => k[0]),
      keys.map((k) => k[1]),
    );
    for (const d of found) if (d !== undefined) this.hits++;
    return found;
  }

  /** Remember the digest just computed for `f`. */
  note(f: ExternalFile, digest: string): void {
    const s = f.stat!;
    if (s.ctimeNs >= this.racyAfter || s.mtimeNs >= this.racyAfter) return;
    this.fresh.push([...DigestCache.key(f), digest]);
  }

  save(): void {
    if (this.fresh.length) this.index.putFileDigests(this.fresh.splice(0));
  }
}
