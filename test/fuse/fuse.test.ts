/**
 * cfs-mount --fuse, as an unprivileged user: the FUSE view shows exactly the source tree, serves
 * concurrent readers, fails one file (EIO) for a missing object, ends with umount or
 * fusermount3 -u; --writable (fuse-overlayfs) + commit round trip; the FUSE view and the kernel
 * mount of one image list identically. As root the test creates a user for this and lets it (only
 * it) use /dev/fuse during the test, then puts everything back.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelHas } from '../../mount/kernel.js';
import { runBin } from '../cli/run.js';
import { PROJECT_ROOT, VECTORS } from '../support/vectors.js';

const isRoot = process.getuid?.() === 0;
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const reason = !fs.existsSync('/dev/fuse')
  ? 'no /dev/fuse'
  : !isRoot
    ? 'not root (the test creates an unprivileged user)'
    : !has('fusermount3') || !has('fuse-overlayfs')
      ? 'fusermount3 or fuse-overlayfs missing (apt install fuse3 fuse-overlayfs)'
      : null;
if (reason) console.log(`FUSE tests skipped: ${reason}`);

const USER = `cfsfuse${process.pid}`;
const BIN = path.join(PROJECT_ROOT, 'bin', 'cfs-mount.js');

/** Run a command as the test user. */
function asUser(cmd: string, args: string[], opts: { input?: string } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('runuser', ['-u', USER, '--', cmd, ...args], { encoding: 'latin1', input: opts.input, maxBuffer: 1 << 28 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const cfsMountAsUser = (...args: string[]) => asUser(process.execPath, [BIN, ...args]);

/** Everything a user sees of a tree: type, mode, owner, size, mtime (ns), link count, symlink target, content, user xattrs. */
const LISTING = `cd "$1" && find . -mindepth 1 -printf "%p %y %m %U:%G %s %T@ %n %l\\n" | LC_ALL=C sort &&
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum &&
  find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m "^user\\." 2>/dev/null; true`;
/** Directory sizes depend on the file system holding them. */
const dirSizes = (s: string): string => s.replace(/^(.* d \S+ \S+) \d+ /gm, '$1 - ');
const listingAsRoot = (root: string): string => dirSizes(execFileSync('sh', ['-c', LISTING, 'sh', root], { encoding: 'latin1', maxBuffer: 1 << 28 }));
function listingAsUser(root: string): string {
  const r = asUser('sh', ['-c', LISTING, 'sh', root]);
  expect(r.stderr).toBe('');
  return dirSizes(r.stdout);
}

const fuseMounts = (): string[] =>
  fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - fuse(\.composefs|\.fuse-overlayfs)? /.test(l));
const userProcesses = (): number => spawnSync('pgrep', ['-u', USER]).stdout.toString().split('\n').filter(Boolean).length;

async function waitFor(cond: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (cond()) return true;
  return cond();
}

describe.runIf(!reason)('cfs-mount --fuse (unprivileged)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-fuse-'));
  const tree = path.join(tmp, 'tree');
  const objects = path.join(tmp, 'objects');
  const img = path.join(tmp, 'tree.img');
  const mnt = path.join(tmp, 'mnt');
  const userDir = path.join(tmp, 'user');
  const log = path.join(userDir, 'server.log');
  let devFuse: fs.Stats;
  let skipUser: string | null = null;
  /** Directories above the checkout made traversable for the user during the test (e.g. /root). */
  const opened: [string, number][] = [];
  const mountsBefore = fuseMounts().length;

  beforeAll(() => {
    const r = spawnSync('bash', [path.join(VECTORS, 'make-tree.sh'), tree], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    fs.rmSync(path.join(tree, 'dev', 'whiteout')); // an overlay whiteout: shown as-is by neither mount
    // a directory that needs many READDIR(PLUS) calls and offsets
    fs.mkdirSync(path.join(tree, 'huge'));
    for (let i = 0; i < 600; i++) fs.writeFileSync(path.join(tree, 'huge', `entry-${i}-${'x'.repeat(i % 97)}`), i % 7 === 0 ? `content ${i}\n`.repeat(20) : '');
    fs.utimesSync(path.join(tree, 'huge'), 1700000000, 1700000000);
    // the user must be able to read everything to compare it (modes still vary: 4755, 1777, 0444…)
    execFileSync('chmod', ['-R', 'a+rX', tree]);
    const w = runBin('cfs-writer', ['--hardlinks', '--digest-store', objects, tree, img]);
    if (w.code !== 0) throw new Error(w.stderr);
    execFileSync('useradd', ['--no-create-home', '--user-group', '--shell', '/bin/sh', USER]);
    devFuse = fs.statSync('/dev/fuse');
    // only this user's group may use /dev/fuse, and only during the test
    fs.chownSync('/dev/fuse', devFuse.uid, Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim()));
    fs.chmodSync('/dev/fuse', 0o660);
    fs.chmodSync(tmp, 0o755);
    const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
    for (const d of [mnt, userDir]) {
      fs.mkdirSync(d);
      fs.chownSync(d, uid, devFuse.gid);
    }
    // a checkout under a private directory (/root is 0700): let others traverse it for the test
    for (let d = path.dirname(PROJECT_ROOT); d !== path.dirname(d); d = path.dirname(d)) {
      const mode = fs.statSync(d).mode & 0o7777;
      if (!(mode & 0o001)) {
        opened.push([d, mode]);
        fs.chmodSync(d, mode | 0o001);
      }
    }
    if (asUser('test', ['-r', BIN]).code !== 0) skipUser = `${USER} cannot read ${BIN}`;
    if (skipUser) console.log(`FUSE tests skipped: ${skipUser}`);
  });

  afterAll(() => {
    for (const [d, mode] of opened) fs.chmodSync(d, mode);
    spawnSync('fusermount3', ['-u', '-z', mnt]);
    spawnSync('pkill', ['-u', USER]);
    if (devFuse) {
      fs.chownSync('/dev/fuse', devFuse.uid, devFuse.gid);
      fs.chmodSync('/dev/fuse', devFuse.mode & 0o7777);
    }
    const uid = spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout.trim();
    if (uid) fs.rmSync(path.join(os.tmpdir(), `composefs-ts-${uid}`), { recursive: true, force: true }); // its runtime dir
    spawnSync('userdel', ['--force', '--remove', USER]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('mounts without root; the view is the source tree; concurrent readers; umount ends the server', async () => {
    if (skipUser) return;
    const m = cfsMountAsUser('--fuse', '--base', objects, '--log', log, img, mnt);
    expect(m.code, m.stderr).toBe(0);
    let inos = '';
    try {
      expect(listingAsUser(mnt)).toBe(listingAsRoot(tree));
      // inode numbers: hardlinks share one, and the numbers survive a remount
      inos = asUser('stat', ['-c', '%i %h', path.join(mnt, 'link-a'), path.join(mnt, 'link-b'), path.join(mnt, 'huge')]).stdout;
      const [a, b] = inos.split('\n');
      expect(a).toBe(b);
      expect(a).toMatch(/ 2$/);
      // several processes read every file at once, in different orders
      const want = execFileSync('sh', ['-c', 'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum', 'sh', tree], { encoding: 'latin1' });
      const orders = ['LC_ALL=C sort -z', 'LC_ALL=C sort -rz', 'shuf -z'];
      const outs = await Promise.all(
        orders.map(
          (order) =>
            new Promise<{ order: string; out: string; err: string }>((resolve, reject) => {
              const c = spawn('runuser', ['-u', USER, '--', 'sh', '-c', `cd "$1" && find . -type f -print0 | ${order} | xargs -0 sha256sum | LC_ALL=C sort -k2`, 'sh', mnt]);
              let out = '';
              let err = '';
              c.stdout.setEncoding('latin1').on('data', (d: string) => (out += d));
              c.stderr.setEncoding('latin1').on('data', (d: string) => (err += d));
              c.on('error', reject);
              c.on('close', (code) => (code === 0 ? resolve({ order, out, err }) : reject(new Error(`reader exit ${code}: ${err}`))));
            }),
        ),
      );
      const sorted = want.split('\n').filter(Boolean).sort((x, y) => (x.slice(66) < y.slice(66) ? -1 : 1)).join('\n') + '\n';
      // a pipeline's status is its last command's: what the others said is in err
      for (const { order, out, err } of outs) expect(out, `reader (${order}) stderr: ${err}`).toBe(sorted);
    } finally {
      const u = cfsMountAsUser('umount', mnt);
      expect(u.code, u.stderr).toBe(0);
    }
    expect(fuseMounts().length).toBe(mountsBefore);
    expect(userProcesses()).toBe(0); // the server is gone
    expect(fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '').toBe('');
    // remount: the same inode numbers
    expect(cfsMountAsUser('--fuse', '--base', objects, '--log', log, img, mnt).code).toBe(0);
    try {
      expect(asUser('stat', ['-c', '%i %h', path.join(mnt, 'link-a'), path.join(mnt, 'link-b'), path.join(mnt, 'huge')]).stdout).toBe(inos);
    } finally {
      expect(cfsMountAsUser('umount', mnt).code).toBe(0);
    }
  });

  it('a missing object: EIO on that file only, one log line; fusermount3 -u ends the server', async () => {
    if (skipUser) return;
    const partial = path.join(tmp, 'partial');
    execFileSync('cp', ['-a', objects, partial]);
    const payload = runBin('cfs-dump', ['dump', img]).stdout.toString('latin1').split('\n').find((l) => l.startsWith('/sizes/three-mib '))!.split(' ')[8];
    fs.rmSync(path.join(partial, payload));
    expect(cfsMountAsUser('--fuse', '--base', partial, '--log', log, img, mnt).code).toBe(0);
    const bad = asUser('cat', [path.join(mnt, 'sizes', 'three-mib')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/Input\/output error/);
    expect(asUser('cat', [path.join(mnt, 'sizes', 'f100000')]).stdout).toBe(fs.readFileSync(path.join(tree, 'sizes', 'f100000'), 'latin1'));
    expect(asUser('cat', [path.join(mnt, 'sizes', 'three-mib')]).code).not.toBe(0);
    expect(asUser('fusermount3', ['-u', mnt]).code).toBe(0);
    expect(await waitFor(() => userProcesses() === 0)).toBe(true);
    expect(fs.readFileSync(log, 'utf8')).toBe(`cfs-mount: ${mnt}: /sizes/three-mib: object ${payload} not found in ${partial}; reading it gives EIO\n`);
    fs.rmSync(log);
  });

  it('clear errors: a corrupt image, a mount point the user cannot use', () => {
    if (skipUser) return;
    const corrupt = path.join(tmp, 'corrupt.img');
    fs.writeFileSync(corrupt, fs.readFileSync(img).subarray(0, 5000));
    fs.chmodSync(corrupt, 0o644);
    const r = cfsMountAsUser('--fuse', '--base', objects, corrupt, mnt);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cfs-mount: .*corrupt\.img.*\n$/);
    const r2 = cfsMountAsUser('--fuse', '--base', objects, img, tree);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/fusermount3 failed/);
    expect(fuseMounts().length).toBe(mountsBefore);
    expect(userProcesses()).toBe(0);
  });

  it('--writable (fuse-overlayfs) + commit: the new image shows exactly the changed tree', () => {
    if (skipUser) return;
    const home = userDir;
    const script = (s: string): void => {
      const r = asUser('sh', ['-ec', s, 'sh', home, process.execPath, path.join(PROJECT_ROOT, 'bin')]);
      expect(r.code, r.stderr).toBe(0);
    };
    // a tree the user owns, so that it may change it through the mount
    script(`cd "$1" && mkdir -p src/d/sub src/many && echo hello > src/hello.txt && head -c 200000 /dev/zero | tr '\\0' z > src/big &&
      ln -s hello.txt src/sym && echo x > src/d/sub/f && setfattr -n user.k -v v src/hello.txt &&
      for i in $(seq 1 60); do echo "$i" > src/many/f$i; done &&
      "$2" "$3/cfs-writer.js" --snapshot --store cas --name base src >/dev/null && cp -a src expected`);
    const changes = `echo new > created.txt && head -c 5000 /dev/zero | tr '\\0' y > created-big && rm -r d && rm sym &&
      echo more >> hello.txt && chmod 600 big && mv many many-renamed && mkdir nd && ln -s t nd/l && setfattr -n user.new -v 1 created.txt`;
    script(`cd "$1" && mkdir mnt-rw && "$2" "$3/cfs-mount.js" --fuse --writable --store cas --log log base mnt-rw`);
    try {
      script(`cd "$1/mnt-rw" && ${changes} && cd "$1/expected" && ${changes}`);
    } finally {
      script(`cd "$1" && "$2" "$3/cfs-mount.js" commit mnt-rw --store cas --name changed >/dev/null 2>&1 && "$2" "$3/cfs-mount.js" umount mnt-rw`);
    }
    expect(fuseMounts().length).toBe(mountsBefore);
    script(`cd "$1" && "$2" "$3/cfs-mount.js" --fuse --store cas changed mnt-rw`);
    try {
      // what the test touched has mtimes of now in both trees, not the same ones
      const t0 = Math.floor(Date.now() / 1000) - 60;
      const recent = (l: string): string => l.replace(/\b(\d{10})\.\d{10}\b/g, (m, sec) => (Number(sec) >= t0 ? 'NOW' : m));
      expect(recent(listingAsUser(path.join(home, 'mnt-rw')))).toBe(recent(listingAsUser(path.join(home, 'expected'))));
    } finally {
      script(`cd "$1" && "$2" "$3/cfs-mount.js" umount mnt-rw`);
    }
    expect(userProcesses()).toBe(0);
  });

  it('the FUSE view and the kernel mount of one image list identically (as root)', () => {
    if (!kernelHas('erofs') || !kernelHas('overlay')) return void console.log('FUSE vs kernel skipped: no erofs/overlay');
    const kmnt = path.join(tmp, 'kmnt');
    fs.mkdirSync(kmnt);
    const ls = (root: string): string =>
      execFileSync('sh', ['-c', 'cd "$1" && ls -lRan --time-style=+%s.%N . | grep -v "^total " && getfattr -R -h -d -m "^user\\." . 2>/dev/null; true', 'sh', root], {
        encoding: 'latin1',
        maxBuffer: 1 << 28,
      }); // "total" sums st_blocks, which depend on where the objects are stored
    expect(runBin('cfs-mount', ['--base', objects, img, kmnt]).code).toBe(0);
    try {
      const r = runBin('cfs-mount', ['--fuse', '--base', objects, '--log', path.join(tmp, 'root.log'), img, mnt]);
      expect(r.code, r.stderr).toBe(0);
      try {
        expect(ls(mnt)).toBe(ls(kmnt));
      } finally {
        expect(runBin('cfs-mount', ['umount', mnt]).code).toBe(0);
      }
    } finally {
      runBin('cfs-mount', ['umount', kmnt]);
    }
  });
});
