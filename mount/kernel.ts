/**
 * Mounting a composefs image. First the new mount API (fsmount.ts: file-backed erofs, no loop
 * device, no temporary mount point). Where the kernel lacks that (before 6.8), the classic way
 * through mount(8): the image read-only as erofs (loop device), then overlayfs with the image as
 * lower layer and the object directories as data-only lower layers (`::`), falling back to a
 * plain lower-layer list where the kernel refuses `::`. The erofs mount is detached as soon as
 * the overlay holds it, so unmounting the overlay releases everything (the loop device is
 * created with autoclear).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfsError, ErrorCode, S_IFMT, S_IFREG, decodeImage } from '../format/index.js';
import { digestOfFile } from '../cas/digest.js';
import { FsmountError, fsmountComposefs, runDir } from './fsmount.js';
import { type ComposefsOptions, overlayOptions } from './options.js';

const fail = (msg: string, input?: string): never => {
  throw new CfsError(ErrorCode.Io, msg, { input });
};

function run(cmd: string, args: string[]): { ok: boolean; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return { ok: false, err: `${cmd}: ${r.error.message}` };
  return { ok: r.status === 0, err: (r.stderr || r.stdout || '').trim() };
}

export function kernelHas(fstype: string): boolean {
  try {
    return fs
      .readFileSync('/proc/filesystems', 'utf8')
      .split('\n')
      .some((l) => l.split('\t').pop() === fstype);
  } catch {
    return false;
  }
}

/** Backing files (redirect targets) the image needs that none of the base directories has. */
export function missingObjects(o: ComposefsOptions): string[] {
  const { root } = decodeImage(fs.readFileSync(o.image), { input: o.image });
  const missing = new Set<string>();
  const stack = [root];
  while (stack.length) {
    for (const d of stack.pop()!.children!) {
      const n = d.inode;
      if (!d.link && (n.mode & S_IFMT) === S_IFREG && n.payload) {
        const rel = n.payload.replace(/^\/+/, '');
        if (!o.basedirs.some((b) => fs.existsSync(path.join(b, rel)))) missing.add(rel);
      }
      if (!d.link && n.children) stack.push(n);
    }
  }
  return [...missing].sort();
}

export interface MountResult {
  /** 'data-only' (`::`) or 'legacy' (plain lower list). */
  form: 'data-only' | 'legacy';
  /** 'fsmount' (new mount API) or 'mount(8)'. */
  method: 'fsmount' | 'mount(8)';
}

/** Check everything that can be checked before touching the kernel. */
export function preflight(o: ComposefsOptions, target: string, opts: { check?: boolean } = {}): void {
  if (process.getuid?.() !== 0) fail('mounting needs root (CAP_SYS_ADMIN in the initial user namespace)');
  for (const fstype of ['erofs', 'overlay']) {
    if (!kernelHas(fstype)) fail(`the kernel has no ${fstype} support (load the ${fstype} module)`);
  }
  checkInputs(o, target, opts);
}

/** The checks that need no privileges: image, bases, mount point, digest, objects (--check). */
export function checkInputs(o: ComposefsOptions, target: string, opts: { check?: boolean } = {}): void {
  if (!fs.existsSync(o.image)) fail('image not found', o.image);
  for (const b of o.basedirs) if (!fs.statSync(b, { throwIfNoEntry: false })?.isDirectory()) fail('base directory not found', b);
  if (!fs.statSync(target, { throwIfNoEntry: false })?.isDirectory()) fail('mount point is not a directory', target);
  if (o.upperdir) {
    for (const d of [o.upperdir, o.workdir!]) if (!fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) fail('directory not found', d);
  }
  if (o.digest) {
    const actual = digestOfFile(o.image).digest;
    if (actual !== o.digest) fail(`image digest mismatch: expected ${o.digest}, the image has ${actual}`, o.image);
  }
  if (opts.check) {
    const missing = missingObjects(o);
    if (missing.length) fail(`${missing.length} object(s) missing from the base, e.g. ${missing.slice(0, 3).join(', ')}`, o.image);
  }
}

/** Mount image `o` at `target`. */
export function mountComposefs(o: ComposefsOptions, target: string, opts: { check?: boolean } = {}): MountResult {
  preflight(o, target, opts);
  if (!o.legacy && !process.env.CFS_MOUNT_CLASSIC) {
    try {
      fsmountComposefs(o, target);
      return { form: 'data-only', method: 'fsmount' };
    } catch (e) {
      if (!(e instanceof FsmountError)) throw e;
      if (!e.unsupported || o.idmap) fail(`mounting failed: ${e.message}`, o.image);
    }
  }
  return classicMount(o, target);
}

/** The mount(8) way: a temporary erofs mount (loop device), then the overlay on top. */
function classicMount(o: ComposefsOptions, target: string): MountResult {  const lower = fs.mkdtempSync(path.join(runDir(), 'image-'));
  try {
    const erofs = run('mount', ['-t', 'erofs', '-o', 'ro,loop', '--', o.image, lower]);
    if (!erofs.ok) fail(`mounting the image as erofs failed: ${erofs.err}`, o.image);
    try {
      let form: MountResult['form'] = o.legacy ? 'legacy' : 'data-only';
      let ov = run('mount', ['-t', 'overlay', 'composefs', '-o', overlayOptions(o, lower), '--', target]);
      if (!ov.ok && !o.legacy) {
        // kernels before 6.5 refuse data-only lower layers: use the plain list instead
        const legacy = run('mount', ['-t', 'overlay', 'composefs', '-o', overlayOptions({ ...o, legacy: true }, lower), '--', target]);
        if (legacy.ok) {
          form = 'legacy';
          ov = legacy;
        }
      }
      if (!ov.ok) fail(`mounting the overlay failed: ${ov.err}`, target);
      return { form, method: 'mount(8)' };
    } finally {
      // the overlay (if any) holds the erofs mount; detach it so only the overlay is left
      run('umount', ['--lazy', lower]);
    }
  } finally {
    fs.rmdirSync(lower); // never recursive: something may still be mounted there
  }
}

export function unmount(target: string): void {
  const r = run('umount', ['--', target]);
  if (!r.ok) fail(`unmounting failed: ${r.err}`, target);
}
