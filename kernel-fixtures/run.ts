/**
 * `npm run test:kernel`: the composefs checks under Debian's 6.1 and 6.12 kernels in qemu, and on
 * the host kernel directly when running as root; prints a table kernel × check and exits 1 on any
 * unexpected result, a boot that did not finish, or a negative control that did not fail.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelHas } from '../mount/kernel.js';
import { NEGATIVE_CONTROLS, VECTOR_CASES, expectations, stageComposefs, type Staged } from './composefs.js';
import { BUSYBOX, DEBIAN_KERNELS, GUEST_DIR, QEMU, fetchKernel, parseResults, runGuest } from './index.js';
import { PACKED_ROOT_CHECKS, runPackedRoot } from './packed-root.js';
import { judge, type Run } from './report.js';

const BOOT_TIMEOUT_MS = Number(process.env.CFS_BOOT_TIMEOUT_MS ?? 180_000);
/** Guest programs busybox lacks, copied with their libraries. */
const BINARIES = ['/usr/bin/getfattr', '/usr/bin/fsverity'];


const checkEnv = (vars: Record<string, string>): string =>
  Object.entries(vars)
    .map(([k, v]) => `${k}='${v.replace(/'/g, `'\\''`)}'`)
    .join(' ');

async function runDebianKernel(meta: string, label: string, staged: Staged, work: string): Promise<Run> {
  const k = fetchKernel(meta);
  const name = `${label} (${k.release})`;
  const env = { DATA: '/data', W: '/t', VDISK: '/dev/vda', ...expectations(k, 'required') };
  const vdisk = path.join(work, `${label}.ext4`);
  fs.copyFileSync(staged.vdisk, vdisk);
  const r = await runGuest(k, {
    modules: ['loop', 'erofs', 'overlay', 'virtio_pci', 'virtio_blk'],
    binaries: BINARIES,
    script: `#!/bin/sh\n${checkEnv(env)} exec sh /checks/composefs-checks.sh\n`,
    files: (c) => {
      c.tree('data', staged.data);
      c.tree('checks', GUEST_DIR);
    },
    drives: [{ file: vdisk }],
    timeoutMs: BOOT_TIMEOUT_MS,
  });
  const how = `${r.accel}, ${(r.ms / 1000).toFixed(1)} s`;
  console.log(`${name}: booted (${how})${r.ended ? '' : r.timedOut ? ', TIMED OUT' : ', did not finish'}`);
  return { kernel: name, results: r.results, log: r.log, error: r.ended ? undefined : `the guest did not reach the end of the checks (${how})` };
}

/** The same script on the host kernel, with busybox's applets first in PATH. */
async function runHost(staged: Staged, work: string): Promise<Run> {
  const release = os.release();
  const v = /^(\d+)\.(\d+)/.exec(release)!;
  const name = `host (${release})`;
  const w = path.join(work, 'host');
  const vdisk = path.join(work, 'host.ext4');
  fs.copyFileSync(staged.vdisk, vdisk);
  const env = { ...process.env, PATH: `${staged.applets}:${process.env.PATH}`, DATA: staged.data, W: w, VDISK: vdisk, NO_DMESG: '1' };
  const t0 = Date.now();
  // asynchronously, so the VMs boot meanwhile
  const r = await new Promise<{ code: number | null; log: string }>((resolve, reject) => {
    const p = spawn(BUSYBOX, ['sh', path.join(GUEST_DIR, 'composefs-checks.sh')], {
      env: { ...env, ...expectations({ version: [Number(v[1]), Number(v[2])] }, 'probe') },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: BOOT_TIMEOUT_MS,
    });
    const out: Buffer[] = [];
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => out.push(b));
    p.on('error', reject);
    p.on('close', (code, signal) => resolve({ code: code ?? (signal ? -1 : null), log: Buffer.concat(out).toString('latin1') }));
  });
  const leftover = unmountUnder(w);
  const log = r.log;
  const error = r.code !== 0 ? `the check script exited with ${r.code}` : leftover ? `${leftover} mount(s) left behind` : undefined;
  console.log(`${name}: ran on the host kernel (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return { kernel: name, results: parseResults(log), log, error };
}

/** Unmount whatever the host run left under `dir`, deepest first; returns how many there were. */
function unmountUnder(dir: string): number {
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m) => m && (m === dir || m.startsWith(`${dir}/`)))
    .sort()
    .reverse();
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  return mounts.length;
}

/** Checks every kernel must report. */
function requiredChecks(): string[] {
  const cases = ['tree', ...NEGATIVE_CONTROLS, ...VECTOR_CASES.map((v) => `v-${v}`)];
  return [
    ...cases.flatMap((c) => [`mount:${c}`, `manifest:${c}`, `whiteouts:${c}`]),
    'hardlinks:tree',
    'hardlinks:v-hardlinks',
    'xwhiteout',
    'fsmount:tree',
    ...['digest', 'digest-wrong', 'verity', 'verity-tamper'].map((c) => `${c}:tree`),
  ];
}

/** The negative controls must fail, and for the planted reason alone: one file's hash line differs. */
const EXPECTED_FAILS = new Map(NEGATIVE_CONTROLS.map((n) => [`manifest:${n}`, /^2 manifest lines differ$/]));

async function main(): Promise<number> {
  const missing = [
    process.getuid?.() !== 0 && 'root (make-tree.sh makes devices and trusted.* xattrs)',
    spawnSync(QEMU, ['--version']).status !== 0 && QEMU,
    spawnSync(BUSYBOX, ['--help']).status === null && 'busybox (busybox-static)',
    ...BINARIES.filter((b) => !fs.existsSync(b)),
    spawnSync('apt-get', ['--version']).status !== 0 && 'apt-get',
  ].filter(Boolean);
  if (missing.length) {
    console.log(`kernel tests skipped: missing ${missing.join(', ')}`);
    return 0;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-kernel-'));
  try {
    const t0 = Date.now();
    const staged = stageComposefs(work);
    console.log(`staged images, objects and manifests in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const pending: Promise<Run>[] = [];
    const only = process.env.CFS_KERNELS?.split(',');
    for (const { meta, label } of DEBIAN_KERNELS.filter((k) => !only || only.includes(k.label))) {
      pending.push(runDebianKernel(meta, label, staged, work).catch((e: Error) => ({ kernel: label, results: [], error: e.message })));
    }
    if (only && !only.includes('host')) console.log('host kernel run skipped: not in CFS_KERNELS');
    else if (kernelHas('erofs') && kernelHas('overlay')) pending.unshift(runHost(staged, work));
    else console.log('host kernel run skipped: no erofs or overlay in /proc/filesystems');
    // cfs-pack's microVM case: a packed tree as the root block device
    const packed = !only || only.includes('packed-root') ? runPackedRoot(work, BOOT_TIMEOUT_MS).catch((e: Error) => ({ kernel: 'packed root', results: [], error: e.message })) : null;
    const runs = await Promise.all(pending);
    const packedRun = await packed;
    console.log(`total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const v = judge(runs, requiredChecks(), EXPECTED_FAILS);
    console.log(v.text);
    let failed = v.failed;
    if (packedRun) {
      const p = judge([packedRun], PACKED_ROOT_CHECKS, new Map());
      console.log(p.text);
      failed += p.failed;
    }
    return failed === 0 ? 0 : 1;
  } finally {
    if (unmountUnder(work) === 0) fs.rmSync(work, { recursive: true, force: true });
    else console.log(`left ${work} in place: something was still mounted under it`);
  }
}

process.exitCode = await main();
