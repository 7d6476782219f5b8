/**
 * `cfs-mount --fuse`: start the FUSE view in the background (a detached child process that
 * serves; we return once the kernel has connected to it, as squashfuse does), optionally with
 * Debian's fuse-overlayfs stacked on top for a writable mount, and take it all down again.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfsError, ErrorCode } from '../format/index.js';
import { fuseUnmount } from './fuse-dev.js';
import { checkMountPath } from './options.js';

const LAUNCHER = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/cfs-mount.js');
/** How long the background server may take to decode the image and mount. */
const READY_TIMEOUT_MS = 120_000;

export interface FuseMountState {
  /** Server process of our FUSE view. */
  pid: number;
  /** Where our FUSE view is mounted: the mount point, or the lower dir under fuse-overlayfs. */
  view: string;
  /** Writable mounts: the directory holding upper/, work/, lower/ and lower.json. */
  rwDir?: string;
  /** The rwDir was made by us and goes away on unmount. */
  rwTemp?: boolean;
}

/**
 * Start a background server for `image` at `view`; resolves with its pid once the mount is live,
 * or with null when it failed (it has said why on stderr, which is `logFile` if given, appended,
 * and then is copied to our stderr).
 */
export function startFuseServer(image: string, basedirs: string[], view: string, logFile?: string): Promise<number | null> {
  const args = [LAUNCHER, 'mount', '--fuse', '--foreground', '--ready-fd', '3', ...basedirs.flatMap((b) => ['--base', b]), '--', image, view];
  const logFd = logFile ? fs.openSync(path.resolve(logFile), 'a') : 'inherit';
  const logStart = typeof logFd === 'number' ? fs.fstatSync(logFd).size : 0;
  // its own session (no SIGHUP from our terminal), in / (keeps no directory busy); all paths are absolute
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', logFd, 'pipe'], detached: true, cwd: '/' });
  if (typeof logFd === 'number') fs.closeSync(logFd);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new CfsError(ErrorCode.Io, 'the FUSE server did not come up in time', { input: view }));
    }, READY_TIMEOUT_MS);
    const ready = child.stdio[3]!;
    ready.on('data', () => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      ready.destroy();
      child.unref();
      resolve(child.pid!);
    });
    child.on('exit', () => {
      clearTimeout(timer);
      if (logFile) process.stderr.write(fs.readFileSync(logFile).subarray(logStart));
      resolve(null);
    });
  });
}

/** Stack fuse-overlayfs (it daemonizes itself) over the view at `rwDir/lower`. */
export function startOverlay(rwDir: string, target: string): void {
  const d = (n: string): string => checkMountPath('writable directory', path.join(rwDir, n));
  const r = spawnSync('fuse-overlayfs', ['-o', `lowerdir=${d('lower')},upperdir=${d('upper')},workdir=${d('work')}`, target], { encoding: 'utf8' });
  if (r.error) throw new CfsError(ErrorCode.Io, `cannot run fuse-overlayfs (apt install fuse-overlayfs): ${r.error.message}`, { input: target });
  if (r.status !== 0) throw new CfsError(ErrorCode.Io, `fuse-overlayfs failed: ${(r.stderr || r.stdout).trim()}`, { input: target });
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Wait (bounded) for a server to exit after its mount went away. */
export async function waitExit(pid: number, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !alive(pid);
}

/** Unmount a --fuse mount: fuse-overlayfs (if writable), then our view; the server then exits. */
export async function stopFuse(target: string, state: FuseMountState | undefined): Promise<void> {
  const err = fuseUnmount(target);
  if (err) throw new CfsError(ErrorCode.Io, `unmounting failed: ${err}`, { input: target });
  if (!state) return;
  if (state.view !== target) {
    // fuse-overlayfs lets go of the view only once its process has exited: retry while busy
    let e2 = fuseUnmount(state.view);
    for (const end = Date.now() + 10_000; e2 && /busy/i.test(e2) && Date.now() < end; e2 = fuseUnmount(state.view)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    if (e2) throw new CfsError(ErrorCode.Io, `unmounting the FUSE view failed: ${e2}`, { input: state.view });
  }
  if (!(await waitExit(state.pid))) throw new CfsError(ErrorCode.Io, `the FUSE server (pid ${state.pid}) did not exit`, { input: target });
  if (state.rwTemp && state.rwDir) fs.rmSync(state.rwDir, { recursive: true, force: true });
}
