/**
 * A small initramfs for a test boot: static busybox with a symlink per applet, the chosen kernel
 * modules (dependencies first, decompressed), any host binaries with the shared libraries they
 * need, the caller's files, and guest/init.sh as /init, which loads the modules, runs
 * /check.sh and powers off.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cpio } from './cpio.js';
import { type Kernel, moduleBytes, resolveModules } from './kernels.js';

/** kernel-fixtures/guest in the source tree (this file runs from dist/kernel-fixtures/). */
export const GUEST_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../kernel-fixtures/guest');

export const BUSYBOX = process.env.CFS_BUSYBOX ?? '/bin/busybox';

export interface InitramfsOptions {
  /** Modules to load (by name), with their dependencies; built-in ones are skipped. */
  modules: string[];
  /** The shell script /init runs (as /check.sh) after loading the modules. */
  script: string;
  /** Dynamically linked host programs to copy, with their libraries, at the same paths. */
  binaries?: string[];
  /** Adds the caller's files (e.g. `c.tree('data', dir)`). */
  files?: (c: Cpio) => void;
}

/** Shared libraries a dynamic executable loads (ldd), as absolute host paths. */
function sharedLibs(bin: string): string[] {
  const r = spawnSync('ldd', [bin], { encoding: 'utf8' });
  if (r.status !== 0) return []; // a static binary
  return [...r.stdout.matchAll(/(?:=> )?(\/\S+) \(0x/g)].map((m) => m[1]);
}

/** Busybox's applets, for /bin symlinks (skipping `busybox` itself, which would loop). */
function applets(): string[] {
  const r = spawnSync(BUSYBOX, ['--list'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${BUSYBOX} --list failed: is busybox-static installed?`);
  if (sharedLibs(BUSYBOX).length) throw new Error(`${BUSYBOX} is dynamically linked: install busybox-static`);
  return r.stdout.split('\n').filter((a) => a && a !== 'busybox');
}

/** The gzip-compressed initramfs, and the modules it loads in order. */
export function buildInitramfs(k: Kernel, o: InitramfsOptions): { image: Buffer; modules: string[] } {
  const c = new Cpio();
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib/modules']) c.dir(d);
  c.chardev('dev/console', 5, 1).chardev('dev/null', 1, 3, 0o666);
  c.file('bin/busybox', fs.readFileSync(BUSYBOX), 0o755);
  for (const a of applets()) c.symlink(`bin/${a}`, 'busybox');
  const mods = resolveModules(k, o.modules);
  for (const m of mods) c.file(`lib/modules/${m.name}.ko`, moduleBytes(m.file));
  c.file('modules.list', mods.map((m) => `${m.name}\n`).join(''));
  for (const bin of o.binaries ?? []) {
    for (const f of [bin, ...sharedLibs(bin)]) if (!c.has(f)) c.file(f, fs.readFileSync(f), 0o755);
  }
  c.file('init', fs.readFileSync(path.join(GUEST_DIR, 'init.sh')), 0o755);
  c.file('check.sh', o.script, 0o755);
  o.files?.(c);
  return { image: c.finish(), modules: mods.map((m) => m.name) };
}
