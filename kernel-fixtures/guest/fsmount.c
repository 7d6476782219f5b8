/*
 * fsmount IMAGE OBJECTS TARGET: the new-mount-API path of mount/fsmount.ts, in C for the guests
 * (which have no node): erofs straight from the image file (file-backed, no loop device),
 * detached; overlayfs with it as `lowerdir+` (via /proc/self/fd, or attached to a private
 * directory where the kernel refuses a detached layer) and OBJECTS as `datadir+`, metacopy and
 * redirect_dir on, read-only; one move_mount onto TARGET.
 * Exit 0 mounted, 2 the kernel lacks something this path needs (mount/kernel.ts then falls back
 * to mount(8)), 1 any other failure. Built statically by kernel-fixtures/composefs.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mount.h> /* glibc 2.36: the new mount API's constants */
#include <sys/syscall.h>
#include <unistd.h>

static int unsupported;

static int fail(const char *what, int fd, int unsupported_errno) {
	int e = errno;
	char log[512];
	ssize_t n = fd >= 0 ? read(fd, log, sizeof log - 1) : -1;
	if (n > 0) log[log[n - 1] == '\n' ? n - 1 : n] = 0;
	/* the kernel's own message, "e ..." */
	if (n > 0)
		fprintf(stderr, "fsmount: %s: %s (kernel: %s)\n", what, strerror(e), log + (n > 2 && log[1] == ' ' ? 2 : 0));
	else
		fprintf(stderr, "fsmount: %s: %s\n", what, strerror(e));
	if (e == ENOSYS || e == ENODEV || e == unsupported_errno) unsupported = 1;
	return -1;
}

static int set(int fd, unsigned cmd, const char *key, const char *value, int unsupported_errno) {
	if (syscall(SYS_fsconfig, fd, cmd, key, value, 0) == 0) return 0;
	return fail(key ? key : "create", fd, unsupported_errno);
}

/* The overlay with `lower` as its lower layer, moved onto target; errno EINVAL at create if the
 * kernel cannot take a detached mount as a layer (before 6.15). */
static int overlay(const char *lower, const char *objects, const char *target) {
	int o = syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (o < 0) return fail("fsopen overlay", -1, 0);
	if (set(o, FSCONFIG_SET_STRING, "source", "composefs", 0) ||
	    set(o, FSCONFIG_SET_STRING, "lowerdir+", lower, EINVAL) || /* lowerdir+/datadir+: 6.8 */
	    set(o, FSCONFIG_SET_STRING, "datadir+", objects, EINVAL) ||
	    set(o, FSCONFIG_SET_STRING, "metacopy", "on", 0) || set(o, FSCONFIG_SET_STRING, "redirect_dir", "on", 0) ||
	    set(o, FSCONFIG_SET_FLAG, "ro", NULL, 0))
		return -1;
	if (syscall(SYS_fsconfig, o, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) return -2;
	int om = syscall(SYS_fsmount, o, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY);
	if (om < 0) return fail("fsmount overlay", o, 0);
	if (syscall(SYS_move_mount, om, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) return fail("move_mount", -1, 0);
	return 0;
}

static int mount_all(const char *image, const char *objects, const char *target) {
	char lower[64];
	int e = syscall(SYS_fsopen, "erofs", FSOPEN_CLOEXEC);
	if (e < 0) return fail("fsopen erofs", -1, 0);
	if (set(e, FSCONFIG_SET_STRING, "source", image, 0) || set(e, FSCONFIG_SET_FLAG, "ro", NULL, 0) ||
	    set(e, FSCONFIG_CMD_CREATE, NULL, NULL, ENOTBLK)) /* no file-backed erofs: wants a block device */
		return -1;
	int em = syscall(SYS_fsmount, e, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY);
	if (em < 0) return fail("fsmount erofs", e, 0);
	snprintf(lower, sizeof lower, "/proc/self/fd/%d", em);
	int r = overlay(lower, objects, target);
	if (r != -2) return r;
	/* a detached lower layer is refused before 6.15: attach it to a private directory first */
	char dir[] = "/tmp/cfs-fsmount-XXXXXX";
	if (!mkdtemp(dir)) return fail("mkdtemp", -1, 0);
	if (syscall(SYS_move_mount, em, "", AT_FDCWD, dir, MOVE_MOUNT_F_EMPTY_PATH) < 0) return fail("move_mount erofs", -1, 0);
	r = overlay(dir, objects, target);
	if (r == -2) r = fail("create overlay", -1, 0);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	return r;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: fsmount IMAGE OBJECTS TARGET\n");
		return 1;
	}
	if (mount_all(argv[1], argv[2], argv[3]) == 0) return 0;
	return unsupported ? 2 : 1;
}
