/**
 * The composefs image format in one place: the composefs header, the EROFS on-disk structs it
 * uses, magics, feature bits and enum tables. Field names follow the kernel's erofs_fs.h with
 * the i_/h_/e_ prefix dropped, in camelCase. Encoders and decoders address fields only by name.
 * All integers are little endian.
 */

export interface Field {
  readonly offset: number;
  readonly width: number;
}
export interface Struct<F extends string> {
  readonly name: string;
  readonly SIZE: number;
  readonly fields: Readonly<Record<F, Field>>;
  /** Field offsets by name, for hot paths. */
  readonly off: Readonly<Record<F, number>>;
}

function defineStruct<F extends string>(name: string, size: number, fields: Record<F, Field>): Struct<F> {
  const off = {} as Record<F, number>;
  for (const k of Object.keys(fields) as F[]) off[k] = fields[k].offset;
  return { name, SIZE: size, fields, off };
}
const u8 = (offset: number): Field => ({ offset, width: 1 });
const u16 = (offset: number): Field => ({ offset, width: 2 });
const u32 = (offset: number): Field => ({ offset, width: 4 });
const u64 = (offset: number): Field => ({ offset, width: 8 });
const b16 = (offset: number): Field => ({ offset, width: 16 });
const bytes = (offset: number, width: number): Field => ({ offset, width });

export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;
/** Inodes are addressed in 32-byte slots: nid = byte offset / 32 (meta_blkaddr is 0). */
export const SLOT_SIZE = 32;

/** composefs header at offset 0 (32 bytes used, zero padded to the superblock). */
export const CFS_HEADER = defineStruct('composefs header', 32, {
  magic: u32(0), //          LCFS magic 0xd078629a
  version: u32(4), //        header version, always 1
  flags: u32(8), //          bit 0: image has a POSIX ACL xattr
  composefsVersion: u32(12), // format version 0 or 1
  unused: b16(16), //        zero
});
export const CFS_MAGIC = 0xd078629a;
export const CFS_HEADER_VERSION = 1;
export const CFS_FLAG_HAS_ACL = 1;
export const CFS_VERSION_MAX = 1;

/**
 * cfs-pack header at offset 0 of a packed image (a plain EROFS image whose files carry their
 * data), in the 1024 bytes EROFS leaves to boot loaders; the kernel never reads it. It tells a
 * reader how much of the image is metadata: every inode, xattr, directory and symlink block lies
 * before `metaBlocks`, file data after it.
 */
export const PACK_HEADER = defineStruct('pack header', 32, {
  magic: u32(0), //          PACK_MAGIC
  version: u32(4), //        PACK_VERSION
  metaBlocks: u32(8), //     blocks before the first file data block
  unused: bytes(12, 20), //  zero
});
export const PACK_MAGIC = 0x6b636170; // "pack"
export const PACK_VERSION = 1;

/** EROFS superblock, at byte 1024. */
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK = defineStruct('superblock', 128, {
  magic: u32(0), //           0xe0f5e1e2
  checksum: u32(4), //        crc32c, unused (SB_CHKSUM not set)
  featureCompat: u32(8), //   MTIME | XATTR_FILTER
  blkszbits: u8(12), //       log2 of the block size: 12
  extslots: u8(13), //        superblock size = 128 + extslots * 16; 0
  rootNid: u16(14), //        nid of the root directory
  inos: u64(16), //           number of inodes
  buildTime: u64(24), //      seconds of the minimum mtime: the mtime of compact inodes
  buildTimeNsec: u32(32), //  nanoseconds of that mtime
  blocks: u32(36), //         total blocks in the image
  metaBlkaddr: u32(40), //    block of the inode area start; nids count from here
  xattrBlkaddr: u32(44), //   block holding the start of the shared xattr table
  uuid: b16(48), //           zero
  volumeName: b16(64), //     zero
  featureIncompat: u32(80), // 0
  u1: u16(84), //             available_compr_algs / lz4_max_distance: 0
  extraDevices: u16(86), //   0
  devtSlotoff: u16(88), //    0
  dirblkbits: u8(90), //      0: directory block = block size
  xattrPrefixCount: u8(91), // 0: no long xattr prefixes
  xattrPrefixStart: u32(92), // 0
  packedNid: u64(96), //      0
  xattrFilterReserved: u8(104), // 0
  reserved: bytes(105, 23), // zero
});
export const EROFS_SUPER_MAGIC = 0xe0f5e1e2;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;
/** incompat bits this code understands; any other set bit means "reject". */
export const KNOWN_INCOMPAT = 0x4; // CHUNKED_FILE (composefs uses chunks without advertising it)

/** i_format: bit 0 = extended inode, bits 1..3 = data layout. */
export const INODE_FORMAT_EXTENDED = 1;
export const DATALAYOUT_SHIFT = 1;
export const DATALAYOUT_MASK = 0x7;
export const DataLayout = { FlatPlain: 0, CompressedFull: 1, FlatInline: 2, CompressedCompact: 3, ChunkBased: 4 } as const;

/** 32-byte compact inode. Its mtime is the superblock build time. */
export const INODE_COMPACT = defineStruct('compact inode', 32, {
  format: u16(0), //       i_format
  xattrIcount: u16(2), //  xattr area = 12 + 4 * (icount - 1) bytes; 0 = none
  mode: u16(4),
  nlink: u16(6),
  size: u32(8),
  reserved: u32(12),
  u: u32(16), //           raw_blkaddr, rdev, or chunk format (low u16)
  ino: u32(20), //         0-based inode number (BFS index)
  uid: u16(24),
  gid: u16(26),
  reserved2: u32(28),
});

/** 64-byte extended inode. */
export const INODE_EXTENDED = defineStruct('extended inode', 64, {
  format: u16(0),
  xattrIcount: u16(2),
  mode: u16(4),
  reserved: u16(6),
  size: u64(8),
  u: u32(16),
  ino: u32(20),
  uid: u32(24),
  gid: u32(28),
  mtime: u64(32), //       seconds, signed
  mtimeNsec: u32(40),
  nlink: u32(44),
  reserved2: b16(48),
});

/** Header of an inode's xattr area, followed by shared refs (u32 each) and inline entries. */
export const XATTR_IBODY_HEADER = defineStruct('xattr ibody header', 12, {
  nameFilter: u32(0), //  bloom filter of names, inverted: bit set = name definitely absent
  sharedCount: u8(4), //  number of u32 shared xattr references that follow
  reserved: bytes(5, 7), //   zero
});

/** An xattr entry, followed by name suffix and value, padded to 4 bytes. */
export const XATTR_ENTRY = defineStruct('xattr entry', 4, {
  nameLen: u8(0),
  nameIndex: u8(1),
  valueSize: u16(2),
});
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const XATTR_FILTER_BITS = 32;
/** At most this many shared references per inode (EROFS_XATTR_LONG_PREFIX). */
export const MAX_SHARED_XATTRS_PER_INODE = 128;
export const XATTR_LONG_PREFIX_BIT = 0x80;

/** Directory entry; names follow all dirents of a block. */
export const DIRENT = defineStruct('dirent', 12, {
  nid: u64(0),
  nameoff: u16(8),
  fileType: u8(10),
  reserved: u8(11),
});

/** Chunk index entry used for external files: a 4-byte block address, all 0xFFFFFFFF (holes). */
export const CHUNK_ENTRY_SIZE = 4;
export const NULL_ADDR = 0xffffffff;
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const MAX_CHUNKS = 1024;

/** Mode type bits. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** EROFS dirent file types by mode type; the reverse map is built from it. */
export const FILE_TYPES: ReadonlyMap<number, number> = new Map([
  [S_IFREG, 1],
  [S_IFDIR, 2],
  [S_IFCHR, 3],
  [S_IFBLK, 4],
  [S_IFIFO, 5],
  [S_IFSOCK, 6],
  [S_IFLNK, 7],
]);
export const MODE_OF_FILE_TYPE: ReadonlyMap<number, number> = new Map([...FILE_TYPES].map(([m, t]) => [t, m]));

export function isValidModeType(mode: number): boolean {
  return FILE_TYPES.has(mode & S_IFMT);
}

/** A device number as the image stores it: glibc's makedev(major, minor), low 32 bits. */
export function makedev32(major: number, minor: number): number {
  return (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)) >>> 0;
}

/**
 * xattr name prefixes, matched in this order (the table order of mkcomposefs); the stored name is
 * the remainder. Index 5 (lustre.) is never written but can be read.
 */
export const XATTR_PREFIXES: readonly (readonly [string, number])[] = [
  ['user.', 1],
  ['system.posix_acl_access', 2],
  ['system.posix_acl_default', 3],
  ['trusted.', 4],
  ['security.', 6],
];
export const XATTR_PREFIX_OF_INDEX: readonly string[] = [
  '',
  'user.',
  'system.posix_acl_access',
  'system.posix_acl_default',
  'trusted.',
  'lustre.',
  'security.',
];

/** Limits. */
export const MAX_NAME_LEN = 255;
export const MAX_XATTR_NAME_LEN = 255;
export const MAX_XATTR_VALUE_LEN = 65535;
/** Per-inode xattr budget for external input (LCFS_INODE_EXTERNAL_XATTR_MAX). */
export const MAX_INODE_XATTR_SIZE = 32767;
export const MAX_INLINE_CONTENT = 5000;
export const PATH_MAX = 4096;
/** Largest external file: 1024 chunks of 2^43 bytes. */
export const MAX_FILE_SIZE = 2 ** 53;
export const MAX_IMAGE_SIZE = 2 ** 31;
export const MAX_DEPTH = 4096;

/** Overlay xattrs written by mkcomposefs. */
export const OVERLAY_PREFIX = 'trusted.overlay.';
export const OVERLAY_ESCAPED_PREFIX = 'trusted.overlay.overlay.';
export const XATTR_METACOPY = 'trusted.overlay.metacopy';
export const XATTR_REDIRECT = 'trusted.overlay.redirect';
export const XATTR_OPAQUE = 'trusted.overlay.opaque';
export const XATTR_ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
export const XATTR_ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
export const XATTR_ESCAPED_OPAQUE = 'trusted.overlay.overlay.opaque';
export const XATTR_USER_WHITEOUT = 'user.overlay.whiteout';
export const XATTR_USER_WHITEOUTS = 'user.overlay.whiteouts';
export const XATTR_USER_OPAQUE = 'user.overlay.opaque';
export const ACL_XATTRS = ['system.posix_acl_access', 'system.posix_acl_default'];
/** metacopy value header: version 0, length 36, flags 0, hash algorithm 1 (sha256). */
export const METACOPY_HEADER = [0, 36, 0, 1];
export const METACOPY_SIZE = 36;
export const DIGEST_SIZE = 32;

export const ALL_STRUCTS: readonly Struct<string>[] = [
  CFS_HEADER,
  PACK_HEADER,
  SUPERBLOCK,
  INODE_COMPACT,
  INODE_EXTENDED,
  XATTR_IBODY_HEADER,
  XATTR_ENTRY,
  DIRENT,
];
