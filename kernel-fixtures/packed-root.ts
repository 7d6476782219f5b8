/**
 * The microVM case of cfs-pack (issue 10): the make-tree.sh tree plus a static busybox, packed
 * with cfs-pack into one image that a Debian kernel gets as its root block device (virtio,
 * `root=/dev/vda rootfstype=erofs`). The initramfs loads erofs and virtio_blk (modules in
 * Debian's kernels), mounts /dev/vda read-only and runs a check from the image itself under
 * chroot: every file's sha256 and every entry's type, mode, owner, link count and mtime equal
 * what busybox printed for the source tree on the host.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROJECT_ROOT, SHARED, run } from './composefs.js';
import { BUSYBOX, DEBIAN_KERNELS, fetchKernel, runGuest } from './index.js';
import type { Run } from './report.js';

export const PACKED_ROOT_CHECKS = ['packed-root:mounted', 'packed-root:content', 'packed-root:metadata'];

/** What busybox says about the tree at `.` (run on the host and, chrooted, in the guest); $1 = where to. */
const LISTING = `busybox find . -mindepth 1 ! -path './check' ! -path './check/*' -type f -print0 | busybox sort -z | busybox xargs -0 busybox sha256sum > "$1/sha256"
busybox find . -mindepth 1 ! -path './check' ! -path './check/*' -print0 | busybox sort -z | busybox xargs -0 busybox stat -c '%n %f %u:%g %h %Y' > "$1/stat"
busybox find . -mindepth 1 ! -path './check' ! -path './check/*' -type l -print0 | busybox sort -z | busybox xargs -0 busybox stat -c '%N' >> "$1/stat"
`;

export async function runPackedRoot(work: string, timeoutMs: number): Promise<Run> {
  const label = 'debian-6.12';
  const k = fetchKernel(DEBIAN_KERNELS.find((x) => x.label === label)!.meta);
  const name = `${label} packed root (${k.release})`;
  const root = path.join(work, 'packed-root');
  run('bash', [path.join(SHARED, 'vectors', 'make-tree.sh'), root]);
  fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin', 'busybox'));
  fs.chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
  // the host's listing, made with the same busybox, stored in the image under /check
  const check = path.join(root, 'check');
  fs.mkdirSync(check);
  fs.writeFileSync(path.join(check, 'listing.sh'), LISTING);
  run(BUSYBOX, ['sh', path.join(check, 'listing.sh'), check], { cwd: root });
  const image = path.join(work, 'packed-root.erofs');
  run(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'cfs-pack.js'), root, image]);

  // the host's answers are in /check of the image; the guest's go to a tmpfs mounted over it
  const inner = `#!/bin/sh
mkdir -p /newroot /want
if mount -t erofs -o ro /dev/vda /newroot 2>/tmp/err; then echo "RESULT packed-root:mounted PASS"; else echo "RESULT packed-root:mounted FAIL $(cat /tmp/err)"; fi
grep -q 'root=/dev/vda rootfstype=erofs' /proc/cmdline || echo "RESULT packed-root:mounted FAIL no root= on the command line"
cp /newroot/check/sha256 /newroot/check/stat /newroot/check/listing.sh /want/
mount -t tmpfs out /newroot/check
cp /want/listing.sh /newroot/check/
chroot /newroot /bin/busybox sh /check/listing.sh /check
for f in sha256 stat; do
    n=$(diff /want/$f /newroot/check/$f | grep -c '^[-+][^-+]')
    c=$([ "$f" = sha256 ] && echo content || echo metadata)
    if [ -s /newroot/check/$f ] && [ "$n" = 0 ]; then echo "RESULT packed-root:$c PASS $(wc -l < /want/$f) lines"
    else echo "RESULT packed-root:$c FAIL $n lines differ"; diff /want/$f /newroot/check/$f | head -5 | sed 's/^/ERR packed-root:'$c': /'; fi
done
`;
  const r = await runGuest(k, {
    modules: ['erofs', 'virtio_pci', 'virtio_blk'],
    script: inner,
    drives: [{ file: image, readOnly: true }],
    append: 'root=/dev/vda rootfstype=erofs',
    timeoutMs,
  });
  const how = `${r.accel}, ${(r.ms / 1000).toFixed(1)} s`;
  console.log(`${name}: booted (${how})${r.ended ? '' : r.timedOut ? ', TIMED OUT' : ', did not finish'}`);
  return { kernel: name, results: r.results, log: r.log, error: r.ended ? undefined : `the guest did not reach the end of the checks (${how})` };
}
