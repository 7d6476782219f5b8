/**
 * Deterministic generator of a large, rootfs-like composefs-dump(5) file for benchmarking.
 *
 * The output is a pure function of (entries, seed): a directory tree 1..6 levels deep (about 1% of
 * the entries), and regular files with external payloads, small inline files and symlinks spread
 * unevenly over it, most carrying a security.selinux xattr. Every line is emitted with its parent
 * directory already written (depth-first order), names are unique within their directory, and all
 * fields are plain printable ASCII, so no dump escaping is ever needed.
 */
import * as fs from 'node:fs';
import { prng } from '../test-support/fuzz.js';

export interface GenerateOptions {
  /** Total number of lines (entries), including the root directory. At least 1. */
  entries: number;
  /** PRNG seed; the same seed and entry count always give the same file. */
  seed?: number;
}

export interface GenerateStats {
  entries: number;
  dirs: number;
  externalFiles: number;
  inlineFiles: number;
  symlinks: number;
  bytes: number;
}

const MAX_DEPTH = 6;
/** Relative weights of directory depths 1..6 (index = depth - 1); depth 1 is just TOP_LEVEL. */
const DEPTH_WEIGHTS = [0, 14, 30, 28, 18, 10];
const TOP_LEVEL = ['usr', 'etc', 'var', 'lib', 'bin', 'sbin', 'opt', 'srv', 'home', 'root', 'run', 'boot'];

const DIR_WORDS = [
  'lib', 'share', 'include', 'local', 'python3', 'site-packages', 'locale', 'man', 'doc', 'systemd',
  'system', 'network', 'x11', 'fonts', 'icons', 'hicolor', 'perl5', 'gcc', 'pkgconfig', 'cache',
  'log', 'spool', 'conf.d', 'modules', 'firmware', 'kernel', 'drivers', 'net', 'crypto', 'sound',
  'gtk-3.0', 'glib-2.0', 'dbus-1', 'polkit-1', 'security', 'ssl', 'certs', 'profile.d', 'udev', 'rules.d',
];
const FILE_WORDS = [
  'libc', 'libssl', 'libcrypto', 'libz', 'libglib', 'libgtk', 'libdbus', 'libsystemd', 'libpython', 'libstdc',
  'readme', 'license', 'config', 'index', 'main', 'utils', 'init', 'core', 'server', 'client',
  'module', 'helper', 'test', 'data', 'font', 'icon', 'locale', 'messages', 'policy', 'service',
];
const FILE_EXTS = [
  '', '', '.so', '.so.1', '.so.6', '.so.3.0.2', '.py', '.pyc', '.h', '.conf', '.txt', '.json', '.gz', '.mo',
  '.png', '.svg', '.service', '.rules', '.pem', '.ko.xz', '.pl', '.js', '.xml', '.md',
];
const LINK_TARGETS = [
  '../lib/libfoo.so.1', '../../lib64/ld-linux-x86-64.so.2', '/usr/bin/busybox', 'libz.so.1.3.1',
  '../share/zoneinfo/UTC', '/proc/self/mounts', '../../usr/lib/systemd/systemd', 'python3.12',
  '/etc/alternatives/java', '../libexec/git-core/git', 'libssl.so.3', '/dev/null',
];
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789._-';
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const HEX = '0123456789abcdef';

const ROOT_LINE = '/ 4096 40755 2 0 0 0 1700000000.0 - - -';
const SELINUX = ' security.selinux=system_u:object_r:usr_t:s0';
const SELINUX_ETC = ' security.selinux=system_u:object_r:etc_t:s0';
const USER_FOO = ' user.foo=bar';

interface Dir {
  path: string;
  depth: number;
  subdirs: Dir[];
  /** Names already used in this directory (subdirectory names are registered at creation). */
  names: Set<string>;
  fileCount: number;
}

/** Buffered synchronous line writer. */
class LineWriter {
  private readonly fd: number;
  private chunk: string[] = [];
  private chunkLen = 0;
  bytes = 0;

  constructor(path: string) {
    this.fd = fs.openSync(path, 'w');
  }

  line(s: string): void {
    this.chunk.push(s, '\n');
    this.chunkLen += s.length + 1;
    if (this.chunkLen >= 1 << 20) this.flush();
  }

  flush(): void {
    if (this.chunkLen === 0) return;
    const buf = Buffer.from(this.chunk.join(''), 'latin1');
    fs.writeSync(this.fd, buf);
    this.bytes += buf.length;
    this.chunk = [];
    this.chunkLen = 0;
  }

  close(): void {
    this.flush();
    fs.closeSync(this.fd);
  }
}

class Generator {
  /** Uniform float in [0, 1). */
  readonly rand: () => number;

  constructor(seed: number) {
    this.rand = prng(seed);
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)];
  }

  chance(p: number): boolean {
    return this.rand() < p;
  }

  chars(alphabet: string, n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.rand() * alphabet.length)];
    return s;
  }

  hex64(): string {
    let s = '';
    for (let i = 0; i < 8; i++) {
      const w = Math.floor(this.rand() * 4294967296);
      for (let shift = 28; shift >= 0; shift -= 4) s += HEX[(w >>> shift) & 0xf];
    }
    return s;
  }

  /** A name starting with a letter (so never "." or ".."), made unique within `taken`. */
  uniqueName(base: string, taken: Set<string>): string {
    let name = base;
    for (let n = 1; taken.has(name); n++) name = `${base}-${n}`;
    taken.add(name);
    return name;
  }

  dirName(): string {
    if (this.chance(0.6)) return this.pick(DIR_WORDS);
    return this.chars(LOWER, 1) + this.chars(ALNUM, this.int(2, 10));
  }

  fileName(): string {
    const r = this.rand();
    if (r < 0.5) return this.pick(FILE_WORDS) + this.chars(NAME_CHARS, this.int(0, 6)) + this.pick(FILE_EXTS);
    if (r < 0.8) return this.chars(LOWER, 1) + this.chars(NAME_CHARS, this.int(3, 24)) + this.pick(FILE_EXTS);
    // Long-ish names, as in Python/package caches.
    return this.chars(LOWER, 1) + this.chars(NAME_CHARS, this.int(30, 80));
  }

  mtime(): string {
    if (!this.chance(0.05)) return '1700000000.0';
    return `${this.int(1500000000, 1735689599)}.${this.int(0, 999999999)}`;
  }

  owner(): string {
    return this.chance(0.02) ? '1000 1000' : '0 0';
  }

  xattrs(path: string): string {
    let s = '';
    if (this.chance(0.9)) s += path.startsWith('/etc') ? SELINUX_ETC : SELINUX;
    if (this.chance(0.01)) s += USER_FOO;
    return s;
  }
}

function buildTree(g: Generator, root: Dir, dirCount: number): Dir[] {
  const all: Dir[] = [root];
  const byDepth: Dir[][] = [[root]];
  for (let d = 1; d <= MAX_DEPTH; d++) byDepth.push([]);
  const totalWeight = DEPTH_WEIGHTS.reduce((a, b) => a + b, 0);

  const addDir = (parent: Dir, base: string): void => {
    const name = g.uniqueName(base, parent.names);
    const dir: Dir = {
      path: parent.path === '/' ? `/${name}` : `${parent.path}/${name}`,
      depth: parent.depth + 1,
      subdirs: [],
      names: new Set(),
      fileCount: 0,
    };
    parent.subdirs.push(dir);
    all.push(dir);
    byDepth[dir.depth].push(dir);
  };

  for (let i = 0; i < dirCount; i++) {
    if (i < TOP_LEVEL.length) {
      addDir(root, TOP_LEVEL[i]);
      continue;
    }
    // Pick a target depth, then a parent one level up (falling back to the deepest level present).
    let w = g.int(0, totalWeight - 1);
    let depth = 1;
    while (w >= DEPTH_WEIGHTS[depth - 1]) w -= DEPTH_WEIGHTS[depth++ - 1];
    while (byDepth[depth - 1].length === 0) depth--;
    addDir(g.pick(byDepth[depth - 1]), g.dirName());
  }
  return all;
}

/** Write the dump to `path` and return what went into it. */
export function generateDump(path: string, opts: GenerateOptions): GenerateStats {
  const entries = Math.max(1, Math.floor(opts.entries));
  const g = new Generator(opts.seed ?? 0x5eed1234);
  const stats: GenerateStats = { entries, dirs: 1, externalFiles: 0, inlineFiles: 0, symlinks: 0, bytes: 0 };

  const root: Dir = { path: '/', depth: 0, subdirs: [], names: new Set(), fileCount: 0 };
  const dirCount = Math.min(entries - 1, Math.max(1, Math.round(entries / 100)));
  const dirs = buildTree(g, root, dirCount);
  stats.dirs = dirs.length;

  // Spread the non-directory entries unevenly over the non-root dirs: low-index (top-level and
  // early) dirs get the most, up to ~1% of all entries in one dir, like /usr/bin or /usr/lib.
  const first = dirs.length > 1 ? 1 : 0;
  for (let i = dirs.length; i < entries; i++) {
    const r = g.rand();
    dirs[first + Math.floor((dirs.length - first) * r * r)].fileCount++;
  }

  const out = new LineWriter(path);
  try {
    const emitDir = (dir: Dir): void => {
      if (dir === root) {
        out.line(ROOT_LINE);
      } else {
        // Writers recompute directory link counts (2 + subdirectories); write the right value anyway.
        const nlink = 2 + dir.subdirs.length;
        out.line(`${dir.path} 4096 40755 ${nlink} 0 0 0 ${g.mtime()} - - -${g.xattrs(dir.path)}`);
      }
      const prefix = dir.path === '/' ? '/' : `${dir.path}/`;
      for (let i = 0; i < dir.fileCount; i++) {
        const path = prefix + g.uniqueName(g.fileName(), dir.names);
        const ids = `${g.owner()} 0 ${g.mtime()}`; // UID GID RDEV MTIME
        const r = g.rand();
        if (r < 0.7) {
          // Log-uniform size in [100, 10_000_000].
          const size = Math.min(10_000_000, Math.floor(100 * Math.pow(100_000, g.rand())));
          const digest = g.hex64();
          out.line(`${path} ${size} 100644 1 ${ids} ${digest.slice(0, 2)}/${digest.slice(2)} - ${digest}${g.xattrs(path)}`);
          stats.externalFiles++;
        } else if (r < 0.85) {
          const size = g.int(1, 64);
          out.line(`${path} ${size} 100644 1 ${ids} - ${g.chars(LOWER, size)} -${g.xattrs(path)}`);
          stats.inlineFiles++;
        } else {
          const target = g.pick(LINK_TARGETS);
          out.line(`${path} ${target.length} 120777 1 ${ids} ${target} - -${g.xattrs(path)}`);
          stats.symlinks++;
        }
      }
      dir.names.clear();
      for (const sub of dir.subdirs) emitDir(sub);
    };
    emitDir(root);
  } finally {
    out.close();
  }
  stats.bytes = out.bytes;
  return stats;
}
