#!/bin/sh
# The composefs checks, run in a test VM (and on the host kernel): each case's image is mounted
# the way mount/kernel.ts mounts it and compared with the manifest made on the host from the
# source; then fs-verity: objects enabled on an ext4 disk, verity=require over them and over a
# tampered copy, and the kernel's measurement of the image against the digest= value.
# Prints "RESULT <check>:<case> PASS|FAIL|SKIP <detail>", plus ERR/DMESG lines on failure.
#
# Environment: DATA (staged data: cases/*/, written by kernel-fixtures/composefs.ts), W (scratch
# directory for mount points), VDISK (the ext4 disk, a device or an image file), EXPECT_FORM
# (data-only or legacy), OVL_ESCAPE (yes: escaped trusted.overlay.overlay.* xattrs are shown;
# no: the kernel hides every trusted.overlay.* xattr), OVL_VERITY (yes, or why not), FSVERITY
# (required or probe), NO_DMESG (set on the host: its kernel log is not ours to clear).
HERE=$(dirname "$0")
mkdir -p "$W"

result() { echo "RESULT $1 $2 ${3:-}"; }
# a failed step's stderr and the kernel's messages since the last step
context() {
    [ -s "$W/err" ] && sed "s|^|ERR $1: |" "$W/err" | head -20
    [ -z "${NO_DMESG:-}" ] && dmesg -c | tail -5 | sed "s|^|DMESG $1: |"
    return 0
}
step() { [ -z "${NO_DMESG:-}" ] && dmesg -c > /dev/null; : > "$W/err"; }

# The option strings are written by the host with mount/options.ts overlayOptions(); the image
# mount point and the data paths are filled in here.
opts() { sed -e "s|/@LOWER@|$2|" -e "s|/@DATA@|$DATA|g" -e "s|/@VDISK@|$W/vdisk|g" "$1"; }

# cfs_mount CASEDIR VARIANT TARGET: mountComposefs() of mount/kernel.ts, step by step: the image
# as erofs over a loop device; overlayfs with data-only lower layers (`::`); if the kernel
# refuses that, the plain lower list (the image root's whiteouts hide the object directories);
# then the erofs mount is detached, so the overlay alone holds it. Sets FORM.
cfs_mount() {
    lower=$W/lower
    mkdir -p "$lower" "$3"
    FORM=none
    mount -t erofs -o ro,loop "$1/image" "$lower" 2>> "$W/err" || return 1
    if mount -t overlay composefs -o "$(opts "$1/$2.data-only" "$lower")" "$3" 2>> "$W/err"; then
        FORM=data-only
    elif mount -t overlay composefs -o "$(opts "$1/$2.legacy" "$lower")" "$3" 2>> "$W/err"; then
        FORM=legacy
    fi
    umount -l "$lower"
    [ "$FORM" != none ]
}

compare() { # NAME EXPECTED MOUNT
    sh "$HERE/manifest.sh" "$3" > "$W/got" 2>> "$W/err"
    if [ "$OVL_ESCAPE" = yes ]; then cp "$2" "$W/expected"; else grep -v '^[^|]* trusted\.overlay\.' "$2" > "$W/expected"; fi
    if diff "$W/expected" "$W/got" > "$W/diff"; then
        result "$1" PASS "$(grep -c '|' "$2") entries identical"
    else
        result "$1" FAIL "$(grep -c '^[-+][^-+]' "$W/diff") manifest lines differ"
        grep '^[-+][^-+]' "$W/diff" | head -12 | sed "s|^|ERR $1: |"
    fi
}

check_case() { # CASEDIR
    c=$1 name=$(basename "$1") mnt=$W/mnt-$(basename "$1")
    step
    if ! cfs_mount "$c" ro "$mnt"; then
        result "mount:$name" FAIL "neither overlay form mounted"; context "mount:$name"
        return
    fi
    if [ "$FORM" = "$EXPECT_FORM" ]; then
        result "mount:$name" PASS "form=$FORM"
    else
        result "mount:$name" FAIL "form=$FORM, expected $EXPECT_FORM"; context "mount:$name"
    fi
    step
    compare "manifest:$name" "$c/expected" "$mnt"
    # the image root's whiteouts (00..ff) and the object directories stay hidden
    shown=
    for n in $(ls -a "$mnt" | grep -xE '[0-9a-f]{2}'); do
        grep -q "^\./$n|" "$c/expected" || shown="$shown $n"
    done
    wo=$(find "$mnt" -type c -exec stat -c '%t:%T %n' {} + | grep '^0:0 ')
    if [ -z "$shown$wo" ]; then
        result "whiteouts:$name" PASS "no whiteout or object directory visible"
    else
        result "whiteouts:$name" FAIL "visible:$shown $wo"
    fi
    if [ -s "$c/hardlinks" ]; then
        bad=
        while read -r a b; do
            [ "$(stat -c %i "$mnt/$a")" = "$(stat -c %i "$mnt/$b")" ] && [ "$(stat -c %h "$mnt/$a")" -gt 1 ] || bad="$bad $a=$b"
        done < "$c/hardlinks"
        if [ -z "$bad" ]; then result "hardlinks:$name" PASS "$(wc -l < "$c/hardlinks") pair(s) share an inode"
        else result "hardlinks:$name" FAIL "not one inode:$bad"; fi
    fi
    umount "$mnt"
}

for c in "$DATA"/cases/*; do check_case "$c"; done

# ---- an overlay whiteout inside an image (stored escaped) shows as a plain file in the mount and
# hides the name only in an overlay that has the mount as a lower layer (xattr whiteouts, 6.7+)
if [ "$OVL_ESCAPE" != yes ]; then
    result xwhiteout SKIP "overlayfs before 6.7 has no xattr whiteouts"
else
    step
    x=$W/mnt-xwhiteout
    mkdir -p "$W/below/dev" "$W/stack"
    echo below > "$W/below/dev/wh"
    echo below > "$W/below/dev/other"
    if cfs_mount "$DATA/xwhiteout" ro "$x" && mount -t overlay stack -o "ro,lowerdir=$x:$W/below" "$W/stack" 2>> "$W/err"; then
        stacked=$(ls "$W/stack/dev" | tr '\n' ' ')
        direct=$(stat -c %F "$x/dev/wh" 2>&1)
        if [ "$stacked" = "keep other " ] && [ "$direct" = "regular empty file" ]; then
            result xwhiteout PASS "stacked dev/: $stacked; in the mount itself wh is a $direct"
        else
            result xwhiteout FAIL "stacked dev/: $stacked; in the mount itself wh: $direct"
        fi
        umount "$W/stack"
        umount "$x"
    else
        result xwhiteout FAIL "mounting the image or the stacked overlay failed"; context xwhiteout
        umount "$x" 2> /dev/null
    fi
fi

# ---- fs-verity: the tree case's objects and image on an ext4 file system with verity
c=$DATA/cases/tree
skip_verity() { for n in digest digest-wrong verity verity-tamper; do result "$n:tree" SKIP "$1"; done; }
step
mkdir -p "$W/vdisk"
if ! mount -t ext4 "$VDISK" "$W/vdisk" 2>> "$W/err"; then
    if [ "$FSVERITY" = required ]; then result verity-disk:tree FAIL "cannot mount the ext4 disk"; context verity-disk:tree
    else skip_verity "cannot mount the ext4 verity disk: $(head -1 "$W/err")"; fi
    exit 0
fi
# ---- the new mount API (mount/fsmount.ts, in C: $DATA/fsmount): file-backed erofs from the ext4
# disk (not tmpfs), lowerdir+ via /proc/self/fd, datadir+, one move_mount
step
m=$W/mnt-fsmount
mkdir -p "$m"
if [ -f "$DATA/fsmount.skip" ]; then
    result fsmount:tree SKIP "$(cat "$DATA/fsmount.skip")"
else
    "$DATA/fsmount" "$W/vdisk/images/tree.img" "$W/vdisk/objects" "$m" 2>> "$W/err"
    rc=$?
    if [ $rc = 0 ]; then
        compare fsmount:tree "$c/expected" "$m"
        umount "$m"
    elif [ $rc = 2 ] && [ "$EXPECT_FSMOUNT" != yes ]; then
        result fsmount:tree SKIP "this kernel lacks it (mount.composefs falls back to mount(8)): $(head -1 "$W/err")"
    else
        result fsmount:tree FAIL "exit $rc: $(head -1 "$W/err")"; context fsmount:tree
    fi
fi

enabled=0
for f in $(find "$W/vdisk/objects" "$W/vdisk/tampered" "$W/vdisk/images" -type f); do
    fsverity enable "$f" 2>> "$W/err" || break
    enabled=$((enabled + 1))
done
total=$(find "$W/vdisk/objects" "$W/vdisk/tampered" "$W/vdisk/images" -type f | wc -l)
if [ "$enabled" != "$total" ]; then
    if [ "$FSVERITY" = required ]; then result verity-enable:tree FAIL "fs-verity enabled on $enabled of $total files"; context verity-enable:tree
    else skip_verity "the kernel has no fs-verity: $(head -1 "$W/err" | sed "s/ on '[^']*'//")"; fi
    umount "$W/vdisk"
    exit 0
fi

# digest=: the kernel's own measurement of the image must equal the digest our code computed
# (mount/kernel.ts preflight compares it before mounting); a wrong image is refused
expected=$(cat "$c/digest")
measure() { fsverity measure "$1" 2>> "$W/err" | sed -n 's/^sha256:\([0-9a-f]*\) .*/\1/p'; }
got=$(measure "$W/vdisk/images/tree.img")
step
if [ "$got" = "$expected" ] && cfs_mount "$c" ro "$W/mnt-digest"; then
    result digest:tree PASS "kernel measures $got; mounted"
    umount "$W/mnt-digest"
else
    result digest:tree FAIL "kernel measures '$got', expected $expected"; context digest:tree
fi
got=$(measure "$W/vdisk/images/wrong.img")
if [ -n "$got" ] && [ "$got" != "$expected" ]; then
    result digest-wrong:tree PASS "refused: kernel measures $got"
else
    result digest-wrong:tree FAIL "wrong image measured '$got', not refused"
fi

if [ "$OVL_VERITY" != yes ]; then
    for n in verity verity-tamper; do result "$n:tree" SKIP "$OVL_VERITY"; done
else
    step
    if cfs_mount "$c" verity "$W/mnt-verity"; then
        compare verity:tree "$c/expected" "$W/mnt-verity"
        umount "$W/mnt-verity"
    else
        result verity:tree FAIL "verity=require mount failed"; context verity:tree
    fi
    step
    tampered=$(cat "$c/tampered")
    if cfs_mount "$c" tampered "$W/mnt-tampered"; then
        if cat "$W/mnt-tampered/$tampered" > /dev/null 2> "$W/err"; then
            result verity-tamper:tree FAIL "tampered object $tampered read without error"
        elif grep -q 'Input/output error' "$W/err"; then
            result verity-tamper:tree PASS "$tampered: EIO"
        else
            result verity-tamper:tree FAIL "$tampered: not EIO"; context verity-tamper:tree
        fi
        umount "$W/mnt-tampered"
    else
        result verity-tamper:tree FAIL "verity=require mount failed"; context verity-tamper:tree
    fi
fi
umount "$W/vdisk"
