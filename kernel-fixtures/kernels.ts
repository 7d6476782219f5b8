/**
 * Debian kernels for the VM tests: resolved through apt's meta packages (the ABI name changes
 * with every security update), downloaded with `apt-get download` (never installed) into a cache
 * directory, unpacked there once. Modules are picked with their dependencies read from each
 * module's `.modinfo` section, since the package has no modules.dep (depmod runs at install).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Kernel {
  /** Package name, e.g. linux-image-6.1.0-56-cloud-amd64. */
  pkg: string;
  /** `uname -r`. */
  release: string;
  /** [major, minor] of the release. */
  version: [number, number];
  vmlinuz: string;
  /** CONFIG_* values from boot/config-RELEASE (`y`, `m`, strings). */
  config: Map<string, string>;
  /** lib/modules/RELEASE */
  modulesDir: string;
}

/** The kernels the tests boot: bookworm's own and the newest 6.12 Debian offers (bookworm-security). */
export const DEBIAN_KERNELS = [
  { label: 'debian-6.1', meta: 'linux-image-cloud-amd64' },
  { label: 'debian-6.12', meta: 'linux-image-6.12-cloud-amd64' },
];

export function defaultCacheDir(): string {
  if (process.env.CFS_KERNEL_CACHE) return process.env.CFS_KERNEL_CACHE;
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'composefs-ts', 'kernels');
}

function sh(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
  return r.stdout;
}

/** The kernel image package a meta package currently points at (its candidate's first Depends). */
export function resolveMeta(meta: string): string {
  const show = sh('apt-cache', ['show', '--no-all-versions', meta]);
  const dep = /^Depends: ([^\s,(]+)/m.exec(show);
  if (!dep || !dep[1].startsWith('linux-image-')) throw new Error(`apt-cache show ${meta}: no linux-image dependency`);
  return dep[1];
}

/**
 * Download (if not cached) and unpack the kernel package a meta package points at. Without apt
 * lists (offline), the newest cached unpacked kernel of that flavour is used.
 */
export function fetchKernel(meta: string, cacheDir = defaultCacheDir()): Kernel {
  fs.mkdirSync(cacheDir, { recursive: true });
  let pkg: string;
  try {
    pkg = resolveMeta(meta);
  } catch (e) {
    const cached = fs.readdirSync(cacheDir).filter((d) => fs.existsSync(path.join(cacheDir, d, '.unpacked')) && metaMatches(meta, d));
    if (!cached.length) throw e;
    pkg = cached.sort().pop()!;
  }
  const dir = path.join(cacheDir, pkg);
  if (!fs.existsSync(path.join(dir, '.unpacked'))) {
    const debs = () => fs.readdirSync(cacheDir).filter((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!debs().length) sh('apt-get', ['download', '-q', pkg], cacheDir);
    const deb = debs()[0];
    if (!deb) throw new Error(`apt-get download ${pkg}: no .deb appeared in ${cacheDir}`);
    fs.rmSync(dir, { recursive: true, force: true });
    sh('dpkg-deb', ['-x', path.join(cacheDir, deb), dir]);
    fs.writeFileSync(path.join(dir, '.unpacked'), `${deb}\n`);
  }
  return loadKernel(pkg, dir);
}

/** linux-image-cloud-amd64 → linux-image-6.1.0-N-cloud-amd64; linux-image-6.12-cloud-amd64 → linux-image-6.12.N+deb12-cloud-amd64. */
function metaMatches(meta: string, pkg: string): boolean {
  const m = /^linux-image-(?:(\d+\.\d+)-)?(.+)$/.exec(meta)!;
  const [series, flavour] = [m[1] ?? '6.1', m[2]];
  return pkg.startsWith(`linux-image-${series}.`) && pkg.endsWith(`-${flavour}`);
}

export function loadKernel(pkg: string, dir: string): Kernel {
  const boot = path.join(dir, 'boot');
  const vmlinuz = fs.readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error(`${pkg}: no boot/vmlinuz-*`);
  const release = vmlinuz.slice('vmlinuz-'.length);
  const config = new Map<string, string>();
  for (const line of fs.readFileSync(path.join(boot, `config-${release}`), 'utf8').split('\n')) {
    const m = /^CONFIG_(\w+)=(.*)$/.exec(line);
    if (m) config.set(m[1], m[2].replace(/^"(.*)"$/, '$1'));
  }
  const v = /^(\d+)\.(\d+)/.exec(release)!;
  return { pkg, release, version: [Number(v[1]), Number(v[2])], vmlinuz: path.join(boot, vmlinuz), config, modulesDir: path.join(dir, 'lib', 'modules', release) };
}

export const atLeast = (k: { version: [number, number] }, major: number, minor: number): boolean =>
  k.version[0] > major || (k.version[0] === major && k.version[1] >= minor);

const norm = (name: string): string => name.replace(/-/g, '_');

/** NUL-separated `key=value` strings of an ELF64 module's .modinfo section. */
export function readModinfo(ko: Buffer): Map<string, string[]> {
  if (ko.readUInt32BE(0) !== 0x7f454c46 || ko[4] !== 2) throw new Error('not an ELF64 file');
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  const section = (i: number) => {
    const h = shoff + i * shentsize;
    return { name: ko.readUInt32LE(h), offset: Number(ko.readBigUInt64LE(h + 0x18)), size: Number(ko.readBigUInt64LE(h + 0x20)) };
  };
  const strtab = section(shstrndx);
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameEnd = ko.indexOf(0, strtab.offset + s.name);
    if (ko.toString('latin1', strtab.offset + s.name, nameEnd) !== '.modinfo') continue;
    for (const kv of ko.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq > 0) out.set(kv.slice(0, eq), [...(out.get(kv.slice(0, eq)) ?? []), kv.slice(eq + 1)]);
    }
  }
  return out;
}

/** A module file's bytes as init_module(2) wants them (busybox insmod cannot decompress). */
export function moduleBytes(file: string): Buffer {
  if (file.endsWith('.ko')) return fs.readFileSync(file);
  if (file.endsWith('.ko.xz')) {
    const r = spawnSync('xz', ['-dc', file], { maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`xz -dc ${file}: ${r.error?.message ?? r.stderr.toString().trim()}`);
    return r.stdout;
  }
  throw new Error(`${file}: unsupported module compression`);
}

export interface ModuleFile {
  name: string;
  file: string;
}

/**
 * The modules to insmod, dependencies first, for the wanted names; built-in ones are left out.
 * `softdep pre:` entries are followed too (libcrc32c needs crc32c registered before it loads).
 */
export function resolveModules(k: Kernel, wanted: string[]): ModuleFile[] {
  const files = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ko(\.xz)?$/.test(e.name)) files.set(norm(e.name.replace(/\.ko(\.xz)?$/, '')), p);
    }
  };
  walk(path.join(k.modulesDir, 'kernel'));
  const builtinList = path.join(k.modulesDir, 'modules.builtin');
  const builtin = new Set(
    fs.existsSync(builtinList) ? fs.readFileSync(builtinList, 'utf8').split('\n').filter(Boolean).map((l) => norm(path.basename(l, '.ko'))) : [],
  );
  // the crc32c algorithm, when modular, comes from crc32c_generic (crc32c-intel needs SSE4.2, which TCG's CPU lacks)
  const alias = new Map([['crc32c', k.config.get('CRYPTO_CRC32C') === 'm' ? 'crc32c_generic' : '']]);
  const order: ModuleFile[] = [];
  const seen = new Set<string>();
  const visit = (raw: string, optional: boolean): void => {
    const name = alias.get(norm(raw)) ?? norm(raw);
    if (!name || seen.has(name) || builtin.has(name)) return;
    seen.add(name);
    const file = files.get(name);
    if (!file) {
      if (optional) return;
      throw new Error(`${k.release}: module ${name} is neither built in nor shipped`);
    }
    const info = readModinfo(moduleBytes(file));
    for (const sd of info.get('softdep') ?? []) {
      const pre = /pre:\s*([^:]*?)(?:\s+post:|$)/.exec(sd);
      for (const dep of pre?.[1].split(/\s+/).filter(Boolean) ?? []) visit(dep, true);
    }
    for (const dep of (info.get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean)) visit(dep, false);
    order.push({ name, file });
  };
  for (const w of wanted) visit(w, false);
  return order;
}
