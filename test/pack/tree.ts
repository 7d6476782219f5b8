/** Test helpers for cfs-pack: a full description of a directory tree, and loop mounts. */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readXattrs } from '../../cas/xattrs.js';

export interface DescribeOptions {
  /** Leave out mtimes (e.g. --use-epoch output is compared separately). */
  noTimes?: boolean;
  noXattrs?: boolean;
}

/**
 * One line per entry, sorted by path: type and mode, owner, nlink (not for directories, whose
 * sizes and link counts depend on the file system), rdev, mtime in nanoseconds, size, symlink
 * target, content sha256, xattrs, and for hardlinked files the first path of their inode.
 */
export function describeTree(root: string, opts: DescribeOptions = {}): string {
  const lines: string[] = [];
  const firstOfIno = new Map<bigint, string>();
  const walk = (rel: string): void => {
    const p = Buffer.from(rel ? path.join(root, rel) : root, 'latin1');
    const st = fs.lstatSync(p, { bigint: true });
    const mode = Number(st.mode);
    const fields = [JSON.stringify(rel || '.'), mode.toString(8), `${st.uid}:${st.gid}`];
    const isDir = st.isDirectory();
    if (!isDir) fields.push(`nlink=${st.nlink}`);
    if (st.isCharacterDevice() || st.isBlockDevice()) fields.push(`rdev=${st.rdev}`);
    if (!opts.noTimes) fields.push(`mtime=${st.mtimeNs}`);
    if (st.isFile()) {
      fields.push(`size=${st.size}`, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
      if (st.nlink > 1n) {
        const first = firstOfIno.get(st.ino);
        if (first === undefined) firstOfIno.set(st.ino, rel);
        else fields.push(`link-of=${JSON.stringify(first)}`);
      }
    }
    if (st.isSymbolicLink()) fields.push(`-> ${JSON.stringify(fs.readlinkSync(p, { encoding: 'buffer' }).toString('latin1'))}`);
    if (!opts.noXattrs) for (const [k, v] of readXattrs(p).sort((a, b) => (a[0] < b[0] ? -1 : 1))) fields.push(`${k}=${JSON.stringify(v)}`);
    lines.push(fields.join(' '));
    if (isDir) {
      const names = fs.readdirSync(p, { encoding: 'buffer' }).map((n) => n.toString('latin1')).sort();
      for (const n of names) walk(rel ? `${rel}/${n}` : n);
    }
  };
  walk('');
  return lines.join('\n') + '\n';
}

export function sh(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}` };
}

export const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** Mount `image` read-only as erofs at a fresh `mnt`, run `fn`, always unmount. */
export function withErofsMount<T>(image: string, mnt: string, fn: () => T): T {
  fs.mkdirSync(mnt, { recursive: true });
  const m = sh('mount', ['-t', 'erofs', '-o', 'loop,ro', '--', image, mnt]);
  if (!m.ok) throw new Error(`mount -t erofs ${image} failed: ${m.out}`);
  try {
    return fn();
  } finally {
    const u = sh('umount', ['--', mnt]);
    if (!u.ok) sh('umount', ['--lazy', mnt]);
    fs.rmdirSync(mnt);
  }
}
