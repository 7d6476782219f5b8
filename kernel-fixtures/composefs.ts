/**
 * The composefs checks' data, staged on the host: images written by our cfs-writer (from the
 * shared make-tree.sh tree and from vector dumps), their object directories, the expected
 * manifests, the overlay option strings from mount/options.ts, the negative controls (a
 * corrupted image, a corrupted object) and an ext4 disk with the objects for the fs-verity checks. The guest
 * side is guest/composefs-checks.sh.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { digestOfFile } from '../cas/digest.js';
import { overlayOptions } from '../mount/options.js';
import { GUEST_DIR, BUSYBOX } from './initramfs.js';
import { atLeast } from './kernels.js';
import { vectorCase } from './vector-manifest.js';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED = process.env.CFS_SHARED_DIR ?? path.resolve(PROJECT_ROOT, '../shared');

/**
 * Vector dumps mounted too: hardlinks, large sparse sizes (up to 2^53), devices, xattrs (shared,
 * ACLs, security), inline data, symlinks, nanosecond mtimes, many and deep entries.
 * (extended-inodes is left out: its payloads `a/b` are outside the object layout.)
 */
export const VECTOR_CASES = ['hardlinks', 'large-files', 'devices', 'xattrs-basic', 'xattrs-shared', 'inline-content', 'symlinks', 'nsec-mtimes', 'bigdir', 'deep'];

/** Negative controls: cases whose manifest check must FAIL (one inline byte of the image changed; one object changed). */
export const NEGATIVE_CONTROLS = ['corrupt-image', 'corrupt-object'];

export interface Staged {
  /** Packed into the guest as /data. */
  data: string;
  /** The ext4 disk image with the objects and images for the fs-verity checks (copy before use: the checks enable verity on it). */
  vdisk: string;
  /** Busybox applet directory for running the guest scripts on the host. */
  applets: string;
}

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'latin1', maxBuffer: 1 << 28, cwd: opts.cwd, env: { ...process.env, ...opts.env } });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ')}`);
  return r.stdout;
}

const writer = (args: string[]): string => run(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'cfs-writer.js'), ...args]);

/** The `-o` strings of the data-only and the legacy overlay mount, with placeholders the guest fills in. */
function writeOptions(caseDir: string, variant: string, basedirs: string[], verity: boolean): void {
  for (const legacy of [false, true]) {
    const o = { image: '', basedirs, verity, readOnly: true, legacy };
    fs.writeFileSync(path.join(caseDir, `${variant}.${legacy ? 'legacy' : 'data-only'}`), overlayOptions(o, '/@LOWER@'));
  }
}

/** Stage everything under `work` (which must be empty or missing). Needs root: make-tree.sh makes devices and trusted.* xattrs. */
export function stageComposefs(work: string): Staged {
  const data = path.join(work, 'data');
  const cases = path.join(data, 'cases');
  fs.mkdirSync(cases, { recursive: true });
  const applets = path.join(work, 'applets');
  fs.mkdirSync(applets);
  for (const a of run(BUSYBOX, ['--list']).split('\n').filter((a) => a && a !== 'busybox')) fs.symlinkSync(BUSYBOX, path.join(applets, a));
  const manifest = (dir: string): string =>
    run(BUSYBOX, ['sh', path.join(GUEST_DIR, 'manifest.sh'), dir], { env: { PATH: `${applets}:${process.env.PATH}` } });

  // the shared tree, written with --hardlinks so link-a/link-b share an inode in the image. Its
  // overlay whiteout (char 0:0) is left out: the image stores it escaped, so the mount shows a
  // regular file with overlay xattrs that hides things only where the mount is itself a lower layer
  const tree = path.join(work, 'tree');
  run('bash', [path.join(SHARED, 'vectors', 'make-tree.sh'), tree]);
  fs.rmSync(path.join(tree, 'dev', 'whiteout'));
  const objects = path.join(data, 'objects', 'tree');
  const treeCase = path.join(cases, 'tree');
  fs.mkdirSync(treeCase);
  const image = path.join(treeCase, 'image');
  writer(['--hardlinks', '--digest-store', objects, tree, image]);
  fs.writeFileSync(path.join(treeCase, 'expected'), manifest(tree), 'latin1');
  fs.writeFileSync(path.join(treeCase, 'hardlinks'), 'link-a link-b\n');
  fs.writeFileSync(path.join(treeCase, 'digest'), digestOfFile(image).digest);
  writeOptions(treeCase, 'ro', ['/@DATA@/objects/tree'], false);
  writeOptions(treeCase, 'verity', ['/@VDISK@/objects'], true);
  writeOptions(treeCase, 'tampered', ['/@VDISK@/tampered'], true);
  // the object the tampering checks change (same size, one byte flipped)
  const victim = 'sizes/f100000';
  const obj = digestOfFile(path.join(tree, victim)).digest;
  const objRel = path.join(obj.slice(0, 2), obj.slice(2));
  const tampered = fs.readFileSync(path.join(objects, objRel));
  tampered[5000] ^= 0xff;
  fs.writeFileSync(path.join(treeCase, 'tampered'), victim);

  // negative controls, expected to show a different tree: "hello world" → "hello World" in an
  // inline file of the image; the changed object in a first object directory, which the mount
  // reads before the good one (a two-directory base, as basedir=A:B gives)
  const [badImage, badObject] = NEGATIVE_CONTROLS.map((n) => {
    const dir = path.join(cases, n);
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(treeCase, 'expected'), path.join(dir, 'expected'));
    return dir;
  });
  const bad = fs.readFileSync(image);
  const at = bad.indexOf('hello world\n');
  if (at < 0) throw new Error('negative control: inline "hello world" not found in the tree image');
  bad[at + 6] = 'W'.charCodeAt(0);
  fs.writeFileSync(path.join(badImage, 'image'), bad);
  writeOptions(badImage, 'ro', ['/@DATA@/objects/tree'], false);
  fs.copyFileSync(image, path.join(badObject, 'image'));
  fs.mkdirSync(path.join(data, 'objects', 'corrupt', obj.slice(0, 2)), { recursive: true });
  fs.writeFileSync(path.join(data, 'objects', 'corrupt', objRel), tampered);
  writeOptions(badObject, 'ro', ['/@DATA@/objects/corrupt', '/@DATA@/objects/tree'], false);

  // vectors: our writer's image of each dump, over stand-ins for the objects (see vector-manifest.ts)
  for (const v of VECTOR_CASES) {
    const dir = path.join(cases, `v-${v}`);
    fs.mkdirSync(dir);
    writer(['--from-file', path.join(SHARED, 'vectors', 'generated', `${v}.dump`), path.join(dir, 'image')]);
    const dump = (suffix: string): Buffer => fs.readFileSync(path.join(SHARED, 'vectors', 'generated', `${v}${suffix}`));
    const m = vectorCase(dump('.dump'), dump('.canonical.dump'), v);
    fs.mkdirSync(path.join(data, 'objects', `v-${v}`), { recursive: true });
    for (const [rel, content] of m.objects) {
      const file = path.join(data, 'objects', `v-${v}`, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content, 'latin1');
    }
    fs.writeFileSync(path.join(dir, 'expected'), m.manifest, 'latin1');
    if (m.hardlinks.length) fs.writeFileSync(path.join(dir, 'hardlinks'), m.hardlinks.map(([a, b]) => `${a} ${b}\n`).join(''), 'latin1');
    writeOptions(dir, 'ro', [`/@DATA@/objects/v-${v}`], false);
  }

  // an overlay whiteout in the image: stored escaped, it must hide a name only where the mount is
  // itself a lower layer (guest: the xwhiteout check)
  const xw = path.join(data, 'xwhiteout');
  fs.mkdirSync(xw);
  const dump = ['/ 4096 40755 3 0 0 0 1700000000.0 - - -', '/dev 4096 40755 2 0 0 0 1700000000.0 - - -', '/dev/keep 5 100644 1 0 0 0 1700000000.0 - keep! -', '/dev/wh 0 20644 1 0 0 0 1700000000.0 - - -'];
  fs.writeFileSync(path.join(work, 'xwhiteout.dump'), dump.join('\n') + '\n');
  writer(['--from-file', path.join(work, 'xwhiteout.dump'), path.join(xw, 'image')]);
  writeOptions(xw, 'ro', ['/@DATA@/objects/tree'], false);

  // the ext4 disk: the objects, a copy with one object changed (same size), the image and a wrong image
  const disk = path.join(work, 'vdisk-src');
  fs.cpSync(objects, path.join(disk, 'objects'), { recursive: true });
  fs.cpSync(objects, path.join(disk, 'tampered'), { recursive: true });
  fs.writeFileSync(path.join(disk, 'tampered', objRel), tampered);
  fs.mkdirSync(path.join(disk, 'images'));
  fs.copyFileSync(image, path.join(disk, 'images', 'tree.img'));
  fs.writeFileSync(path.join(disk, 'images', 'wrong.img'), bad);
  // the new-mount-API path of mount/fsmount.ts, as a static C program for the guests
  const cc = spawnSync('gcc', ['-static', '-O2', '-o', path.join(data, 'fsmount'), path.join(GUEST_DIR, 'fsmount.c')], { encoding: 'utf8' });
  if (cc.status !== 0) fs.writeFileSync(path.join(data, 'fsmount.skip'), `cannot build the fsmount helper: ${(cc.stderr || cc.error?.message || '').split('\n')[0]}`);
  const vdisk = path.join(work, 'vdisk.ext4');
  run('mkfs.ext4', ['-q', '-F', '-O', 'verity', '-b', '4096', '-d', disk, vdisk, '64M']);
  return { data, vdisk, applets };
}

/** What a kernel is expected to support, as the check script's environment. */
export function expectations(k: { version: [number, number]; config?: Map<string, string> }, fsverity: 'required' | 'probe'): Record<string, string> {
  return {
    // mount/fsmount.ts's path needs file-backed erofs (6.12, a config option) and lowerdir+ (6.8)
    EXPECT_FSMOUNT: !k.config ? 'probe' : atLeast(k, 6, 8) && k.config.get('EROFS_FS_BACKED_BY_FILE') === 'y' ? 'yes' : 'no',
    // data-only lower layers (`::`) came in 6.5; before, mount/kernel.ts falls back to the plain list
    EXPECT_FORM: atLeast(k, 6, 5) ? 'data-only' : 'legacy',
    // escaped trusted.overlay.overlay.* xattrs show as trusted.overlay.* from 6.7; before, all are hidden
    OVL_ESCAPE: atLeast(k, 6, 7) ? 'yes' : 'no',
    OVL_VERITY: atLeast(k, 6, 6) ? 'yes' : 'overlayfs before 6.6 has no verity=require',
    FSVERITY: fsverity,
  };
}
