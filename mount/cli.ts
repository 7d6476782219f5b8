/**
 * mount.composefs (the mount(8) helper: `mount -t composefs -o descriptor=IMG,base=DIR none MNT`)
 * and cfs-mount (mount — with the kernel, or --fuse without root —, umount, commit, install-helper).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { ExitCode, UsageError, parseCommand, reportError, runMain } from '../cli-kit/index.js';
import { CfsError, ErrorCode } from '../format/index.js';
import { Store, isStoreRoot } from '../cas/store.js';
import { commitUpper } from './commit.js';
import { checkInputs, mountComposefs, unmount } from './kernel.js';
import { checkMountPath, parseComposefsOptions } from './options.js';
import { serveFuse } from './fuse.js';
import { mountedType } from './fuse-dev.js';
import { type FuseMountState, startFuseServer, startOverlay, stopFuse } from './fuse-mount.js';

/** Exit status of a command that failed after reporting on its own (a --fuse server that did not start). */
let status: number = ExitCode.Ok;

/** mount(8)'s exit code for a failed mount. */
const MOUNT_FAILURE = 32;

/** A cfs-cas store root stands for its objects directory. */
const resolveBase = (dir: string): string => (isStoreRoot(dir) ? path.join(dir, 'objects') : dir);

/** Our runtime directory: /run/composefs-ts for root, else one private to the user. */
function runtimeDir(): string {
  if (process.getuid?.() === 0) return '/run/composefs-ts';
  const xdg = process.env.XDG_RUNTIME_DIR;
  return xdg && fs.existsSync(xdg) ? path.join(xdg, 'composefs-ts') : path.join(os.tmpdir(), `composefs-ts-${process.getuid?.()}`);
}
const stateDir = (): string => path.join(runtimeDir(), 'mounts');
const stateFile = (target: string): string => path.join(stateDir(), Buffer.from(path.resolve(target)).toString('hex') + '.json');
const readState = (target: string): MountState | undefined => {
  const f = stateFile(target);
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as MountState) : undefined;
};
function writeState(state: MountState): void {
  fs.mkdirSync(stateDir(), { recursive: true, mode: 0o700 });
  fs.writeFileSync(stateFile(state.target), JSON.stringify(state) + '\n');
}

interface MountState {
  target: string;
  image: string;
  basedirs: string[];
  upperdir?: string;
  /** tmpfs holding upper and work dirs, unmounted with the overlay. */
  tmpfs?: string;
  /** --fuse mounts: the server and what to take down. */
  fuse?: FuseMountState;
}

interface MountOpts {
  store?: string;
  base?: string[];
  writable?: boolean;
  upper?: string;
  fallback?: boolean;
  check?: boolean;
  digest?: string;
  verity?: boolean;
  idmap?: string;
  fuse?: boolean;
  foreground?: boolean;
  log?: string;
  readyFd?: string;
}

/** mount.composefs SPEC DIR [-sfnv] [-N ns] [-o OPTIONS] [-t TYPE] */
export async function mountHelperMain(argv: string[]): Promise<number> {
  const positional: string[] = [];
  let opts = '';
  let fake = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o') opts += (opts ? ',' : '') + (argv[++i] ?? '');
    else if (a.startsWith('-o')) opts += (opts ? ',' : '') + a.slice(2);
    else if (a === '-t' || a === '-N') i++;
    else if (/^-[sfnvrw]+$/.test(a)) fake ||= a.includes('f');
    else positional.push(a);
  }
  if (positional.length !== 2) {
    process.stderr.write('usage: mount.composefs SOURCE MOUNTPOINT -o descriptor=IMAGE,base=DIR[,upperdir=U,workdir=W]\n');
    return 1;
  }
  const [source, target] = positional;
  try {
    const o = parseComposefsOptions(source, opts, resolveBase);
    if (!fake) mountComposefs(o, path.resolve(target));
    return ExitCode.Ok;
  } catch (e) {
    const code = reportError('mount.composefs', e);
    return code === ExitCode.Usage ? 1 : MOUNT_FAILURE;
  }
}

function resolveImage(image: string, store?: string): string {
  if (fs.existsSync(image)) return path.resolve(image);
  if (store) {
    for (const p of [path.join(store, 'refs', image), path.join(store, 'images', image)]) if (fs.existsSync(p)) return fs.realpathSync(p);
  }
  throw new CfsError(ErrorCode.Io, store ? 'no such image file, ref or image digest in the store' : 'no such image file', { input: image });
}

export function buildCfsMount(): Command {
  const program = new Command('cfs-mount')
    .description('Mount composefs images (erofs + overlayfs, or FUSE without root), optionally writable.')
    .showHelpAfterError("(run 'cfs-mount --help' for usage)")
    .exitOverride();

  program
    .command('mount', { isDefault: true })
    .description('mount IMAGE (a file, or a ref or image digest of --store) at MOUNTPOINT')
    .argument('<IMAGE>')
    .argument('<MOUNTPOINT>')
    .option('--store <STORE>', 'cfs-cas store: objects from STORE/objects, IMAGE may be a ref')
    .option('--base <DIR>', 'object directory (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--writable', 'writable mount: changes go to an upper directory')
    .option('--upper <DIR>', 'with --writable: keep upper/ and work/ in DIR (default: a tmpfs)')
    .option('--fallback', 'plain lower-layer list instead of data-only layers (kernels before 6.5)')
    .option('--check', 'refuse to mount when objects are missing (else reading them gives EIO)')
    .option('--digest <HEX>', 'the fs-verity digest the image must have')
    .option('--verity', 'require fs-verity on every object')
    .option('--idmap <USERNS>', 'show owners through the user namespace file USERNS (e.g. /proc/PID/ns/user)')
    .option('--fuse', 'serve the image with FUSE (no root needed; in the background unless -f)')
    .option('-f, --foreground', 'with --fuse: serve in the foreground until unmounted')
    .option('--log <FILE>', 'with --fuse: append the background server messages to FILE (default: stderr if a terminal, else fuse.log in the runtime directory)')
    .addOption(new Option('--ready-fd <FD>').hideHelp())
    .action(async (imageArg: string, target: string, o: MountOpts) => {
      if (!o.store && !o.base) throw new UsageError('give --store STORE or --base DIR');
      const image = resolveImage(imageArg, o.store);
      const bases = [...(o.store ? [o.store] : []), ...(o.base ?? [])];
      const list = [`descriptor=${image}`, ...bases.map((b) => `base=${b}`)];
      if (o.fuse) return mountFuse(image, path.resolve(target), parseComposefsOptions('none', list.join(','), resolveBase).basedirs, o);
      if (o.foreground || o.log) throw new UsageError('-f and --log go with --fuse');
      if (o.digest) list.push(`digest=${o.digest}`);
      if (o.verity) list.push('verity');
      if (o.fallback) list.push('legacy');
      if (o.idmap) list.push(`idmap=${path.resolve(o.idmap)}`);
      const state: MountState = { target: path.resolve(target), image, basedirs: [] };
      let tmpfs: string | undefined;
      if (o.writable) {
        let dir = o.upper ? path.resolve(o.upper) : undefined;
        if (!dir) {
          fs.mkdirSync('/run/composefs-ts', { recursive: true, mode: 0o700 });
          dir = tmpfs = fs.mkdtempSync('/run/composefs-ts/rw-');
          const r = mountTmpfs(dir);
          if (r) throw new CfsError(ErrorCode.Io, `mounting a tmpfs for the upper layer failed: ${r}`, { input: dir });
        }
        checkMountPath('upper directory', dir);
        fs.mkdirSync(path.join(dir, 'upper'), { recursive: true });
        fs.mkdirSync(path.join(dir, 'work'), { recursive: true });
        list.push(`upperdir=${path.join(dir, 'upper')}`, `workdir=${path.join(dir, 'work')}`);
        state.upperdir = path.join(dir, 'upper');
        state.tmpfs = tmpfs;
      }
      const opts = parseComposefsOptions('none', list.join(','), resolveBase);
      state.basedirs = opts.basedirs;
      try {
        const r = mountComposefs(opts, path.resolve(target), { check: o.check });
        if (r.form === 'legacy' && !o.fallback) process.stderr.write('cfs-mount: this kernel has no data-only layers; mounted with the plain lower-layer list\n');
      } catch (e) {
        if (tmpfs) unmountQuiet(tmpfs);
        throw e;
      }
      writeState(state);
      if (state.upperdir) writeLowerJson(state);
    });

  program
    .command('umount')
    .description('unmount MOUNTPOINT (and the tmpfs of a --writable mount, the server of a --fuse mount)')
    .argument('<MOUNTPOINT>')
    .action(async (target: string) => {
      const state = readState(target);
      // the topmost mount decides: FUSE (ours, or fuse-overlayfs over ours) or the kernel's
      if (mountedType(path.resolve(target))?.startsWith('fuse')) await stopFuse(path.resolve(target), state?.fuse);
      else unmount(path.resolve(target));
      if (state?.tmpfs) unmountQuiet(state.tmpfs);
      fs.rmSync(stateFile(target), { force: true });
    });

  program
    .command('commit')
    .description('fold a writable mount (or an upper directory) into a new image in the store')
    .argument('<MOUNTPOINT|DIR>', 'a --writable mount point, its --upper DIR, or an overlayfs upper directory')
    .requiredOption('--store <STORE>', 'cfs-cas store for new contents and the new image')
    .option('--image <IMAGE>', 'the lower image (needed only for an upper directory made by other means)')
    .option('--name <NAME>', 'ref name for the new image')
    .action((arg: string, o: { store: string; image?: string; name?: string }) => {
      let upper = path.resolve(arg);
      let image = o.image;
      const state = readState(arg);
      if (state) {
        if (!state.upperdir) throw new CfsError(ErrorCode.Usage, 'not a writable mount', { input: arg });
        upper = state.upperdir;
        image ??= state.image;
      } else if (fs.existsSync(path.join(upper, 'lower.json'))) {
        image ??= (JSON.parse(fs.readFileSync(path.join(upper, 'lower.json'), 'utf8')) as { image: string }).image;
        upper = path.join(upper, 'upper');
      }
      if (!image) throw new UsageError('the lower image is not recorded here: give --image');
      const store = Store.open(o.store);
      try {
        const lowerImage = fs.readFileSync(resolveImage(image, o.store));
        const r = commitUpper(lowerImage, upper, store, upper);
        const reg = store.addImage(r.image, { name: o.name });
        process.stdout.write(`${reg.digest}\n`);
        process.stderr.write(`cfs-mount: committed ${r.changed} changed and ${r.deleted} deleted entries, ${r.newObjects} new objects\n`);
      } finally {
        store.close();
      }
    });

  program
    .command('install-helper')
    .description('install mount.composefs where mount(8) looks for it')
    .option('--dir <DIR>', 'where to put it', '/sbin')
    .action((o: { dir: string }) => {
      const launcher = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/mount.composefs.js');
      const dest = path.join(o.dir, 'mount.composefs');
      fs.writeFileSync(dest, `#!/bin/sh\n# installed by cfs-mount install-helper\nexec "${process.execPath}" "${launcher}" "$@"\n`, { mode: 0o755 });
      process.stdout.write(`installed ${dest}\n`);
    });
  return program;
}

const writeLowerJson = (state: MountState): void =>
  fs.writeFileSync(path.join(path.dirname(state.upperdir!), 'lower.json'), JSON.stringify({ image: state.image, basedirs: state.basedirs }) + '\n');

/**
 * cfs-mount --fuse: serve here (-f, and the background child, which reports readiness on
 * --ready-fd), or start the server in the background; --writable stacks fuse-overlayfs on it.
 */
async function mountFuse(image: string, target: string, basedirs: string[], o: MountOpts): Promise<void> {
  if (o.fallback || o.verity || o.idmap) throw new UsageError('--fallback, --verity and --idmap are for kernel mounts, not --fuse');
  const state: MountState = { target, image, basedirs };
  if (o.foreground) {
    if (o.writable) throw new UsageError('--writable --fuse runs in the background (no -f)');
    const readyFd = o.readyFd === undefined ? undefined : Number(o.readyFd);
    if (readyFd === undefined) checkInputs({ image, basedirs, digest: o.digest, verity: false, readOnly: true, legacy: false }, target, { check: o.check });
    const log = (line: string): void => void process.stderr.write(`cfs-mount: ${target}: ${line}\n`);
    try {
      await serveFuse({
        image,
        basedirs,
        target,
        log,
        onReady: () => {
          if (readyFd === undefined) return writeState({ ...state, fuse: { pid: process.pid, view: target } });
          fs.writeSync(readyFd, 'ready\n');
          fs.closeSync(readyFd);
        },
      });
    } finally {
      if (readState(target)?.fuse?.pid === process.pid) fs.rmSync(stateFile(target), { force: true });
    }
    return;
  }
  checkInputs({ image, basedirs, digest: o.digest, verity: false, readOnly: true, legacy: false }, target, { check: o.check });
  // a background server keeps no pipe of ours open: it logs to a file unless stderr is a terminal
  let logFile = o.log;
  if (!logFile && !process.stderr.isTTY) {
    fs.mkdirSync(runtimeDir(), { recursive: true, mode: 0o700 });
    logFile = path.join(runtimeDir(), 'fuse.log');
  }
  if (!o.writable) {
    if (o.upper) throw new UsageError('--upper goes with --writable');
    const pid = await startFuseServer(image, basedirs, target, logFile);
    if (pid === null) status = ExitCode.Failure;
    else writeState({ ...state, fuse: { pid, view: target } });
    return;
  }
  let dir = o.upper ? path.resolve(o.upper) : undefined;
  const rwTemp = !dir;
  if (!dir) {
    fs.mkdirSync(runtimeDir(), { recursive: true, mode: 0o700 });
    dir = fs.mkdtempSync(path.join(runtimeDir(), 'rw-'));
  }
  checkMountPath('upper directory', dir);
  for (const d of ['upper', 'work', 'lower']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  const view = path.join(dir, 'lower');
  const pid = await startFuseServer(image, basedirs, view, logFile);
  if (pid === null) {
    if (rwTemp) fs.rmSync(dir, { recursive: true, force: true });
    status = ExitCode.Failure;
    return;
  }
  const full: MountState = { ...state, upperdir: path.join(dir, 'upper'), fuse: { pid, view, rwDir: dir, rwTemp } };
  try {
    startOverlay(dir, target);
  } catch (e) {
    await stopFuse(view, { pid, view }).catch(() => {});
    if (rwTemp) fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  writeState(full);
  writeLowerJson(full);
}

/** Mount a private tmpfs at `dir`; returns an error text or null. */
const mountTmpfs = (dir: string): string | null => spawnSyncText('mount', ['-t', 'tmpfs', '-o', 'mode=0700', 'composefs-upper', dir]);

/** Unmount the tmpfs of a writable mount and remove its (then empty) mount point. */
function unmountQuiet(dir: string): void {
  if (spawnSyncText('umount', [dir]) === null) fs.rmdirSync(dir);
}

function spawnSyncText(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? null : (r.stderr || r.error?.message || 'failed').trim();
}

export async function cfsMountMain(argv: string[]): Promise<number> {
  status = ExitCode.Ok;
  return (await parseCommand(buildCfsMount(), argv)) ?? status;
}

export const run = (): Promise<void> => runMain('cfs-mount', () => cfsMountMain(process.argv.slice(2)));
export const runHelper = async (): Promise<void> => {
  process.exitCode = await mountHelperMain(process.argv.slice(2));
};
