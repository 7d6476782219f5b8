#!/bin/sh
# /init of the test initramfs: load the modules listed in /modules.list (dependencies first),
# run /check.sh, which prints "RESULT <name> PASS|FAIL|SKIP <detail>" lines, then power off.
# "=== END" tells the host that the checks ran to completion.
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "=== BOOT $(uname -r)"
failed=
while read -r m; do
    out=$(insmod "/lib/modules/$m.ko" 2>&1) || failed="$failed $m($out)"
done < /modules.list
if [ -n "$failed" ]; then
    echo "RESULT modules FAIL insmod failed:$failed"
else
    echo "RESULT modules PASS $(tr '\n' ' ' < /modules.list)"
fi
dmesg -c > /dev/null
sh /check.sh
echo "=== END"
sync
poweroff -f
