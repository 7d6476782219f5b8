#!/bin/sh
# manifest.sh DIR: everything a user sees of the tree at DIR, in four sorted sections: metadata
# (mode in hex, owner, size, mtime with nanoseconds, link count, device numbers), symlink
# targets, content hashes and xattrs. Run with busybox's applets (and getfattr) both on the host,
# over the source tree, and in the guest, over the mount, so the two outputs compare with diff.
# Directory sizes and link counts are left out: they differ between file systems by design.
# A file that cannot be read (EIO) simply has no hash line.
cd "$1" || exit 1
export LC_ALL=C TZ=UTC
echo "# stat: path|mode|uid:gid|size|mtime|nlink|rdev"
find . -exec stat -c '%f|%u|%g|%s|%Y|%y|%h|%t:%T|%n' {} + | awk -F'|' '{
    name = $0
    for (i = 1; i <= 8; i++) sub(/^[^|]*\|/, "", name)
    split($6, t, "."); nsec = substr(t[2], 1, 9)
    size = $4; nlink = $7
    if (length($1) == 4 && substr($1, 1, 1) == "4") { size = "-"; nlink = "-" }
    print name "|" $1 "|" $2 ":" $3 "|" size "|" $5 "." nsec "|" nlink "|" $8
}' | sort
echo "# symlinks"
find . -type l | sort | while IFS= read -r l; do printf '%s -> %s\n' "$l" "$(readlink "$l")"; done
echo "# sha256"
find . -type f -exec sha256sum {} + 2>/dev/null | awk '{ h = $1; sub(/^[^ ]+  /, ""); print $0 " " h }' | sort
echo "# xattrs"
getfattr -h -R -d -m - -e hex . 2>/dev/null | awk '/^# file: /{ f = substr($0, 9); next } /=/{ print f " " $0 }' | sort
