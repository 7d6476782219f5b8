/**
 * The VM test harness, for any check that needs a real kernel: fetch a Debian kernel, pack a
 * script (plus modules, files, programs) into an initramfs, boot it, get the RESULT lines.
 *
 *   const k = fetchKernel('linux-image-6.12-cloud-amd64');
 *   const r = await runGuest(k, {
 *     modules: ['erofs', 'virtio_pci', 'virtio_blk'],
 *     script: 'mount -t erofs -o ro /dev/vda /mnt && echo "RESULT rootfs PASS" || echo "RESULT rootfs FAIL"',
 *     drives: [{ file: 'rootfs.erofs', readOnly: true }],
 *     append: 'root=/dev/vda rootfstype=erofs',
 *   });
 *   // r.ended, r.results: [{ name: 'rootfs', status: 'PASS', detail: '' }], r.log
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type InitramfsOptions, buildInitramfs } from './initramfs.js';
import type { Kernel } from './kernels.js';
import { type BootOptions, type BootResult, bootKernel } from './vm.js';

export { Cpio } from './cpio.js';
export { BUSYBOX, GUEST_DIR, buildInitramfs, type InitramfsOptions } from './initramfs.js';
export { DEBIAN_KERNELS, atLeast, defaultCacheDir, fetchKernel, loadKernel, readModinfo, resolveModules, type Kernel } from './kernels.js';
export { QEMU, bootKernel, kvmUsable, parseResults, type BootOptions, type BootResult, type CheckResult, type Drive, type Status } from './vm.js';

export type GuestOptions = InitramfsOptions & Pick<BootOptions, 'drives' | 'append' | 'timeoutMs' | 'memoryMb'>;

/** Build the initramfs in a temporary file, boot `k` with it, and return what the guest reported. */
export async function runGuest(k: Kernel, o: GuestOptions): Promise<BootResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-guest-'));
  try {
    const initrd = path.join(dir, 'initrd.gz');
    fs.writeFileSync(initrd, buildInitramfs(k, o).image);
    return await bootKernel({ vmlinuz: k.vmlinuz, initrd, drives: o.drives, append: o.append, timeoutMs: o.timeoutMs, memoryMb: o.memoryMb });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
