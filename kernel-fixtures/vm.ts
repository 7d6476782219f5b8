/**
 * Boot a kernel with an initramfs in qemu (KVM where /dev/kvm is usable, TCG otherwise) and read
 * the checks' `RESULT name PASS|FAIL|SKIP detail` lines from the serial console. A boot that
 * does not print `=== END` (crash, panic, timeout) is reported as not ended, with its whole log.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';

export type Status = 'PASS' | 'FAIL' | 'SKIP';

export interface CheckResult {
  name: string;
  status: Status;
  detail: string;
}

export interface Drive {
  /** A raw disk image; the guest sees drives in order as /dev/vda, /dev/vdb… (load virtio_blk). */
  file: string;
  readOnly?: boolean;
}

export interface BootOptions {
  vmlinuz: string;
  /** The initramfs file (see buildInitramfs). */
  initrd: string;
  drives?: Drive[];
  /** Added to `console=ttyS0 panic=-1 quiet loglevel=3`, e.g. `root=/dev/vda rootfstype=erofs`. */
  append?: string;
  /** Kill qemu after this long (default 120 s). */
  timeoutMs?: number;
  memoryMb?: number;
}

export interface BootResult {
  results: CheckResult[];
  /** The guest printed `=== END`: every check ran. */
  ended: boolean;
  timedOut: boolean;
  /** The serial console, `\r` and escape sequences removed. */
  log: string;
  ms: number;
  accel: 'kvm' | 'tcg';
}

const DEFAULT_TIMEOUT_MS = 120_000;

export const QEMU = process.env.CFS_QEMU ?? 'qemu-system-x86_64';

/** Set once KVM failed to run a guest (e.g. nested under another hypervisor): TCG from then on. */
let kvmBroken = false;
const KVM_FAILURE = /KVM internal error|failed to set MSR|kvm_\w+: Assertion|Could not access KVM/;

export function kvmUsable(): boolean {
  if (process.env.CFS_NO_KVM || kvmBroken) return false;
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
    return true;
  } catch {
    return false;
  }
}

/** `RESULT` lines of a console log. */
export function parseResults(log: string): CheckResult[] {
  const out: CheckResult[] = [];
  for (const line of log.split('\n')) {
    const m = /^RESULT (\S+) (PASS|FAIL|SKIP)(?: (.*))?$/.exec(line);
    if (m) out.push({ name: m[1], status: m[2] as Status, detail: m[3] ?? '' });
  }
  return out;
}

export async function bootKernel(o: BootOptions): Promise<BootResult> {
  if (kvmUsable()) {
    // KVM under another hypervisor may stop or stall the guest: a boot that does not end in a
    // tenth of its time limit (a KVM boot takes seconds) is retried with TCG, and KVM is dropped
    const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const r = await boot({ ...o, timeoutMs: Math.min(timeoutMs, Math.max(10_000, timeoutMs / 10)) }, 'kvm');
    if (r.ended) return r;
    kvmBroken = true;
  }
  return boot(o, 'tcg');
}

function boot(o: BootOptions, accel: BootResult['accel']): Promise<BootResult> {
  const args = [
    ...['-accel', accel, '-m', String(o.memoryMb ?? 512), '-display', 'none', '-no-reboot', '-nodefaults', '-serial', 'stdio'],
    ...['-kernel', o.vmlinuz, '-initrd', o.initrd, '-append', `console=ttyS0 panic=-1 quiet loglevel=3 ${o.append ?? ''}`.trim()],
  ];
  for (const d of o.drives ?? []) args.push('-drive', `file=${d.file},if=virtio,format=raw${d.readOnly ? ',readonly=on' : ''}`);
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const q = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    const onData = (b: Buffer): void => {
      chunks.push(b);
      // a KVM failure leaves the guest stopped, not exited
      if (accel === 'kvm' && KVM_FAILURE.test(b.toString('latin1'))) q.kill('SIGKILL');
    };
    q.stdout.on('data', onData);
    q.stderr.on('data', onData);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      q.kill('SIGKILL');
    }, o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    q.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${QEMU}: ${e.message}`));
    });
    q.on('close', () => {
      clearTimeout(timer);
      const log = Buffer.concat(chunks)
        .toString('latin1')
        .replace(/\x1b(\[[0-9;?]*[A-Za-z]|c|[()][A-Z0-9])/g, '')
        .replace(/\r/g, '');
      resolve({ results: parseResults(log), ended: /^=== END$/m.test(log), timedOut, log, ms: Date.now() - start, accel });
    });
  });
}
