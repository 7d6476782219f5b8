/**
 * Batch conversion: many commits into OUT/COMMIT.img, one JSON report line each.
 * Resumable: an image is written to a temp file and renamed into place, so after an
 * interruption every OUT/COMMIT.img is complete; a rerun skips those and converts the rest
 * (temp files of dead runs are removed first). A commit that fails is reported and the batch
 * goes on; the exit status says whether any failed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isCfsError } from '../format/errors.js';
import { writeAtomic } from '../cas/atomic.js';
import { type ConvertOptions, convertCommit } from './convert.js';
import type { Repo } from './repo.js';

export interface BatchItem {
  commit: string;
  /** Refs (or the names given on the command line) that point at it. */
  refs: string[];
}

export interface ReportLine {
  commit: string;
  refs: string[];
  status: 'converted' | 'skipped' | 'failed';
  image: string;
  entries?: number;
  files?: number;
  bytes?: number;
  objects?: { unique: number; new: number; newBytes: number; dedup: number; dedupBytes: number };
  storeImage?: string;
  seconds?: number;
  error?: string;
}

export const imageName = (commit: string): string => `${commit}.img`;

/** Store ref of a commit's image. */
export const storeRefName = (commit: string): string => `ostree-${commit}`;

/** Remove temp files (`.tmp-PID-…`, as cas/atomic.ts names them) left in `dir` by processes that are gone. */
export function removeStaleTemps(dir: string): number {
  let n = 0;
  for (const f of fs.readdirSync(dir)) {
    const m = /^\.tmp-(\d+)-/.exec(f);
    if (!m || isAlive(Number(m[1]))) continue;
    fs.rmSync(path.join(dir, f), { force: true });
    n++;
  }
  return n;
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function runBatch(
  repo: Repo,
  items: BatchItem[],
  outDir: string,
  opts: Omit<ConvertOptions, 'name' | 'digests' | 'progress'>,
  out: { report: (line: ReportLine) => void; log: (msg: string) => void; progress?: (msg: string) => void },
): Promise<{ converted: number; skipped: number; failed: number }> {
  fs.mkdirSync(outDir, { recursive: true });
  removeStaleTemps(outDir);
  const digests = new Map<string, string>();
  const totals = { converted: 0, skipped: 0, failed: 0 };
  for (const [k, item] of items.entries()) {
    const image = path.join(outDir, imageName(item.commit));
    const head = `[${k + 1}/${items.length}] ${item.commit}${item.refs.length ? ` (${item.refs.join(', ')})` : ''}`;
    if (fs.existsSync(image)) {
      totals.skipped++;
      out.report({ commit: item.commit, refs: item.refs, status: 'skipped', image });
      out.log(`${head}: already converted`);
      continue;
    }
    const t0 = process.hrtime.bigint();
    try {
      const r = await convertCommit(repo, item.commit, {
        ...opts,
        name: opts.store ? storeRefName(item.commit) : undefined,
        digests,
        progress: out.progress && ((done, total) => out.progress!(`${head}: ${done}/${total} objects`)),
      });
      writeAtomic(image, r.image);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      totals.converted++;
      const { entries, files, bytes, objects, storeImage } = r;
      out.report({ commit: item.commit, refs: item.refs, status: 'converted', image, entries, files, bytes, objects, storeImage, seconds: Math.round(seconds * 1000) / 1000 });
      const stored = opts.store ? `, ${objects.new} new objects, ${objects.dedup} deduplicated` : '';
      out.log(`${head}: ${entries} entries${stored} in ${seconds.toFixed(2)} s`);
    } catch (e) {
      if (!isCfsError(e) && !(e as NodeJS.ErrnoException)?.syscall) throw e; // a bug, not bad input
      const error = isCfsError(e) ? e.describe() : (e as Error).message;
      totals.failed++;
      out.report({ commit: item.commit, refs: item.refs, status: 'failed', image, error });
      out.log(`${head}: FAILED: ${error}`);
    }
  }
  return totals;
}
