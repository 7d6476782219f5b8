/**
 * Mounting through the new mount API (fsopen/fsconfig/fsmount/move_mount, Linux ≥ 6.8 for
 * overlayfs's `lowerdir+`/`datadir+`), as libcomposefs does: erofs straight from the image file
 * (file-backed erofs, no loop device; a loop device where the kernel lacks that), detached, then
 * overlayfs with that mount as its lower layer via /proc/self/fd (attached to a private directory
 * first where the kernel refuses detached layers, before 6.15), then one move_mount onto the
 * target. Nothing is left behind on failure, and the detached erofs mount goes away with its fd.
 * `idmap=` (an idmapped lower layer and idmapped object directories) needs this path.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import koffi from 'koffi';
import type { ComposefsOptions } from './options.js';

interface Api {
  fsopen: (fsname: string, flags: number) => number;
  fsconfig: (fd: number, cmd: number, key: string | null, value: string | null, aux: number) => number;
  fsmount: (fd: number, flags: number, attrs: number) => number;
  move_mount: (fromFd: number, fromPath: string, toFd: number, toPath: string, flags: number) => number;
  open_tree: (dfd: number, path: string, flags: number) => number;
  mount_setattr: (fd: number, path: string, flags: number, attr: Buffer, size: number) => number;
  umount2: (path: string, flags: number) => number;
}

// x86_64 / aarch64 / generic syscall numbers (the same on all architectures since 5.2)
const SYS = { open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, mount_setattr: 442 };
const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const FSCONFIG_SET_FLAG = 0;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const MOUNT_ATTR_RDONLY = 0x1;
const MOUNT_ATTR_IDMAP = 0x100000;
const MOVE_MOUNT_F_EMPTY_PATH = 4;
const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const OPEN_TREE_CLONE = 1;
const OPEN_TREE_CLOEXEC = 0o2000000;
const MNT_DETACH = 2;

/** Where temporary mount points go (/run/composefs-ts, else under the temp dir). */
export function runDir(): string {
  const dir = fs.existsSync('/run') ? '/run/composefs-ts' : path.join(os.tmpdir(), 'composefs-ts');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

let api: Api | null | undefined;
function load(): Api | null {
  if (api !== undefined) return api;
  try {
    const lib = koffi.load('libc.so.6');
    // syscall(2) is variadic; declared per call shape, the register ABI is the same.
    const s3 = lib.func('long syscall(long nr, long a, long b, long c)');
    const sPtr = lib.func('long syscall(long nr, long a, const char *b, long c)');
    const sCfg = lib.func('long syscall(long nr, long fd, long cmd, const char *key, const char *value, long aux)');
    const sMove = lib.func('long syscall(long nr, long a, const char *b, long c, const char *d, long e)');
    const sOpen = lib.func('long syscall(long nr, const char *a, long b)');
    const sAttr = lib.func('long syscall(long nr, long fd, const char *path, long flags, void *attr, long size)');
    api = {
      fsopen: (n, f) => Number(sOpen(SYS.fsopen, n, f)),
      fsconfig: (fd, c, k, v, a) => Number(sCfg(SYS.fsconfig, fd, c, k, v, a)),
      fsmount: (fd, f, a) => Number(s3(SYS.fsmount, fd, f, a)),
      move_mount: (a, b, c, d, e) => Number(sMove(SYS.move_mount, a, b, c, d, e)),
      open_tree: (d, p, f) => Number(sPtr(SYS.open_tree, d, p, f)),
      mount_setattr: (fd, p, f, attr, size) => Number(sAttr(SYS.mount_setattr, fd, p, f, attr, size)),
      umount2: lib.func('int umount2(const char *target, int flags)'),
    };
  } catch {
    api = null;
  }
  return api;
}

/** A failed step; `unsupported` when the kernel lacks the feature (the caller may fall back). */
export class FsmountError extends Error {
  constructor(
    message: string,
    readonly unsupported: boolean,
    readonly errno = 0,
    /** Set when creating the `overlay` or `erofs` mount failed. */
    readonly creating?: 'overlay' | 'erofs',
  ) {
    super(message);
  }
}

const ENOSYS = 38;
const EINVAL = 22;
const ENODEV = 19;
const ENOTBLK = 15;
const EOPNOTSUPP = 95;

function strerror(e: number): string {
  return ({ 1: 'EPERM', 2: 'ENOENT', 13: 'EACCES', 15: 'ENOTBLK', 19: 'ENODEV', 22: 'EINVAL', 38: 'ENOSYS', 95: 'EOPNOTSUPP' } as Record<number, string>)[e] ?? `errno ${e}`;
}

/** The kernel's own messages about an fs context ("e ..." lines), best effort. */
function contextLog(fd: number): string {
  const out: string[] = [];
  const buf = Buffer.alloc(1024);
  for (let i = 0; i < 16; i++) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, buf.length, null);
    } catch {
      break;
    }
    if (n <= 0) break;
    out.push(buf.toString('utf8', 0, n).replace(/^[ewi] /, ''));
  }
  return out.join('; ');
}

class Fds {
  private fds: number[] = [];
  add(fd: number): number {
    if (fd >= 0) this.fds.push(fd);
    return fd;
  }
  closeAll(): void {
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
  }
}

function sysFail(what: string, ctx: number | null, unsupportedErrnos: number[] = [ENOSYS], creating?: 'overlay' | 'erofs'): never {
  const e = koffi.errno();
  const log = ctx !== null && ctx >= 0 ? contextLog(ctx) : '';
  throw new FsmountError(`${what}: ${strerror(e)}${log ? ` (${log})` : ''}`, unsupportedErrnos.includes(e), e, creating);
}

function setString(a: Api, fd: number, key: string, value: string, unsupported: number[] = []): void {
  if (a.fsconfig(fd, FSCONFIG_SET_STRING, key, value, 0) < 0) sysFail(`fsconfig ${key}=${value}`, fd, unsupported);
}

function setFlag(a: Api, fd: number, key: string): void {
  if (a.fsconfig(fd, FSCONFIG_SET_FLAG, key, null, 0) < 0) sysFail(`fsconfig ${key}`, fd);
}

function create(a: Api, fd: number, what: 'overlay' | 'erofs', unsupported: number[] = []): void {
  if (a.fsconfig(fd, FSCONFIG_CMD_CREATE, null, null, 0) < 0) sysFail(`creating the ${what} mount`, fd, unsupported, what);
}

/** mount_setattr(MOUNT_ATTR_IDMAP) with the user namespace at `usernsPath`. */
function idmap(a: Api, mfd: number, usernsFd: number, what: string): void {
  const attr = Buffer.alloc(32); // struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd }
  attr.writeBigUInt64LE(BigInt(MOUNT_ATTR_IDMAP), 0);
  attr.writeBigUInt64LE(BigInt(usernsFd), 24);
  if (a.mount_setattr(mfd, '', AT_EMPTY_PATH, attr, attr.length) < 0) sysFail(`idmapping ${what}`, null, [ENOSYS, EINVAL]);
}

/** A loop device for the image, read-only, autoclear (freed when the mount lets go of it). */
function loopDevice(image: string): string {
  const r = spawnSync('losetup', ['--find', '--show', '--read-only', '--', image], { encoding: 'utf8' });
  if (r.status !== 0) throw new FsmountError(`losetup failed: ${(r.stderr || r.error?.message || '').trim()}`, false);
  return r.stdout.trim();
}

function detachLoop(dev: string): void {
  spawnSync('losetup', ['--detach', dev]);
}

/** The detached, read-only erofs mount of the image (file-backed, else on a loop device). */
function erofsMount(a: Api, fds: Fds, image: string): number {
  const tryMount = (source: string): number => {
    const ctx = fds.add(a.fsopen('erofs', FSOPEN_CLOEXEC));
    if (ctx < 0) sysFail('fsopen erofs', null, [ENOSYS, ENODEV]);
    setString(a, ctx, 'source', source);
    setFlag(a, ctx, 'ro');
    create(a, ctx, 'erofs', [ENOTBLK, EINVAL, EOPNOTSUPP]);
    const mfd = fds.add(a.fsmount(ctx, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY));
    if (mfd < 0) sysFail('fsmount erofs', ctx);
    return mfd;
  };
  try {
    return tryMount(image);
  } catch (e) {
    if (!(e instanceof FsmountError && e.unsupported)) throw e;
  }
  // kernels without file-backed erofs (CONFIG_EROFS_FS_BACKED_BY_FILE, 6.12+)
  const dev = loopDevice(image);
  try {
    return tryMount(dev);
  } finally {
    detachLoop(dev); // autoclear: the mount keeps it until it goes away
  }
}

/** The overlay over `lower` and `dataDirs` (paths), moved onto `target`. */
function overlayMount(a: Api, fds: Fds, o: ComposefsOptions, lower: string, dataDirs: string[], target: string): void {
  const ctx = fds.add(a.fsopen('overlay', FSOPEN_CLOEXEC));
  if (ctx < 0) sysFail('fsopen overlay', null, [ENOSYS, ENODEV]);
  setString(a, ctx, 'source', 'composefs');
  // lowerdir+/datadir+ arrived in 6.8: EINVAL before that
  setString(a, ctx, 'lowerdir+', lower, [EINVAL]);
  for (const d of dataDirs) setString(a, ctx, 'datadir+', d, [EINVAL]);
  setString(a, ctx, 'metacopy', 'on');
  setString(a, ctx, 'redirect_dir', 'on');
  if (o.upperdir) {
    setString(a, ctx, 'upperdir', o.upperdir);
    setString(a, ctx, 'workdir', o.workdir!);
  }
  if (o.verity) setString(a, ctx, 'verity', 'require');
  const ro = o.readOnly || !o.upperdir;
  if (ro) setFlag(a, ctx, 'ro');
  create(a, ctx, 'overlay');
  const mfd = fds.add(a.fsmount(ctx, FSMOUNT_CLOEXEC, ro ? MOUNT_ATTR_RDONLY : 0));
  if (mfd < 0) sysFail('fsmount overlay', ctx);
  if (a.move_mount(mfd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) sysFail(`move_mount onto ${target}`, null);
}

/**
 * Mount `o` at `target` with the new mount API. Throws FsmountError; `unsupported` means this
 * kernel lacks something this path needs and the classic path may still work.
 */
export function fsmountComposefs(o: ComposefsOptions, target: string): void {
  const a = load();
  if (!a) throw new FsmountError('libc not loadable', true);
  const fds = new Fds();
  try {
    const usernsFd = o.idmap ? fds.add(fs.openSync(o.idmap, 'r')) : -1;
    const lower = erofsMount(a, fds, o.image);
    if (usernsFd >= 0) idmap(a, lower, usernsFd, 'the image');
    // idmapped object directories are detached clones (-1: the directory itself)
    const dataFds = o.basedirs.map((b) => {
      if (usernsFd < 0) return -1;
      const t = fds.add(a.open_tree(AT_FDCWD, b, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (t < 0) sysFail(`open_tree ${b}`, null);
      idmap(a, t, usernsFd, b);
      return t;
    });
    try {
      // CFS_MOUNT_ATTACHED_LAYERS=1 takes the path of kernels before 6.15 (for tests)
      if (process.env.CFS_MOUNT_ATTACHED_LAYERS) throw new FsmountError('creating the overlay mount: forced', false, EINVAL, 'overlay');
      const dataDirs = o.basedirs.map((b, i) => (dataFds[i] < 0 ? b : `/proc/self/fd/${dataFds[i]}`));
      overlayMount(a, fds, o, `/proc/self/fd/${lower}`, dataDirs, target);
    } catch (e) {
      // overlayfs takes detached mounts as layers only from 6.15 ("failed to clone lowerpath"):
      // attach them to private directories first, and let go of those once the overlay is up
      if (!(e instanceof FsmountError && e.errno === EINVAL && e.creating === 'overlay')) throw e;
      const dirs: string[] = [];
      try {
        const attach = (fd: number, what: string): string => {
          const dir = fs.mkdtempSync(path.join(runDir(), 'layer-'));
          dirs.push(dir);
          if (a.move_mount(fd, '', AT_FDCWD, dir, MOVE_MOUNT_F_EMPTY_PATH) < 0) sysFail(`attaching ${what}`, null);
          return dir;
        };
        const lowerDir = attach(lower, 'the image');
        const data = o.basedirs.map((b, i) => (dataFds[i] < 0 ? b : attach(dataFds[i], b)));
        overlayMount(a, fds, o, lowerDir, data, target);
      } finally {
        for (const d of dirs) {
          a.umount2(d, MNT_DETACH);
          fs.rmdirSync(d); // never recursive: something may still be mounted there
        }
      }
    }
  } finally {
    fds.closeAll();
  }
}
