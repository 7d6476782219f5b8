/**
 * OSTree object formats (pure: bytes in, values out). See ../shared/notes/ostree.md.
 *
 *   commit   (a{sv}aya(say)sstayay)  metadata, parent, related, subject, body, timestamp, root dirtree, root dirmeta
 *   dirtree  (a(say)a(sayay))        files (name, content checksum), dirs (name, dirtree, dirmeta)
 *   dirmeta  (uuua(ayay))            uid, gid, mode, xattrs
 *   archive content header (tuuuusa(ayay)): size, uid, gid, mode, rdev, symlink target, xattrs
 *   bare-user `user.ostreemeta` xattr (uuua(ayay)): uid, gid, mode, xattrs
 * OSTree stores its own integers (uid, gid, mode, timestamp, size) big-endian inside the
 * little-endian GVariant; xattr names carry their trailing NUL.
 */
import { CfsError, ErrorCode } from '../format/errors.js';
import { MAX_NAME_LEN, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../format/layout.js';
import type { Xattr } from '../format/tree.js';
import { type GValue, parseType, readGVariant } from './gvariant.js';

export const COMMIT_TYPE = parseType('(a{sv}aya(say)sstayay)');
export const DIRTREE_TYPE = parseType('(a(say)a(sayay))');
export const DIRMETA_TYPE = parseType('(uuua(ayay))');
export const ARCHIVE_HEADER_TYPE = parseType('(tuuuusa(ayay))');

export type ObjectKind = 'commit' | 'dirtree' | 'dirmeta' | 'file' | 'filez';

export interface Commit {
  /** Parent commit checksum (hex), or null. */
  parent: string | null;
  subject: string;
  /** Seconds since the epoch. */
  timestamp: bigint;
  rootTree: string;
  rootMeta: string;
}

export interface DirtreeFile {
  name: string;
  checksum: string;
}
export interface DirtreeDir {
  name: string;
  tree: string;
  meta: string;
}
export interface Dirtree {
  files: DirtreeFile[];
  dirs: DirtreeDir[];
}

/** Metadata of a directory or a content object, in host byte order. */
export interface Meta {
  uid: number;
  gid: number;
  mode: number;
  xattrs: Xattr[];
}

export interface ArchiveHeader extends Meta {
  size: number;
  /** Symlink target (latin1 bytes), '' for regular files. */
  target: string;
}

const bad = (input: string, msg: string): never => {
  throw new CfsError(ErrorCode.BadObject, msg, { input });
};

const bswap32 = (n: number): number => ((n & 0xff) << 24 | (n & 0xff00) << 8 | (n >>> 8) & 0xff00 | n >>> 24) >>> 0;
const bswap64 = (n: bigint): bigint => {
  let out = 0n;
  for (let i = 0; i < 8; i++) out = (out << 8n) | ((n >> BigInt(8 * i)) & 0xffn);
  return out;
};

const hex = (b: GValue): string => Buffer.from(b as Uint8Array).toString('hex');

function checksum(v: GValue, what: string, input: string): string {
  const b = v as Uint8Array;
  if (b.length !== 32) bad(input, `${what} is ${b.length} bytes, not a SHA-256 checksum`);
  return hex(b);
}

/** A dirtree entry name: a single path component (ostree's ot_util_filename_validate, plus the length limit). */
function checkName(name: string, input: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/')) bad(input, `invalid file name ${JSON.stringify(name)}`);
  if (name.length > MAX_NAME_LEN) bad(input, `file name of ${name.length} bytes (more than ${MAX_NAME_LEN})`);
  return name;
}

/** a(ayay) → xattrs: names NUL-terminated, unique. */
function xattrsOf(v: GValue, input: string): Xattr[] {
  const out: Xattr[] = [];
  const seen = new Set<string>();
  for (const pair of v as GValue[][]) {
    const name = pair[0] as Uint8Array;
    const value = pair[1] as Uint8Array;
    if (name.length < 2 || name[name.length - 1] !== 0 || name.indexOf(0) !== name.length - 1) bad(input, 'xattr name is not a non-empty NUL-terminated string');
    const key = Buffer.from(name.buffer, name.byteOffset, name.length - 1).toString('latin1');
    if (seen.has(key)) bad(input, `xattr ${key} appears twice`);
    seen.add(key);
    out.push({ key, value: Buffer.from(value.buffer, value.byteOffset, value.length).toString('latin1') });
  }
  return out;
}

/** Mode of a content object: a regular file or a symlink, permission bits only (ostree's validate_structureof_file_mode). */
export function checkFileMode(mode: number, input: string): number {
  const type = mode & S_IFMT;
  if ((type !== S_IFREG && type !== S_IFLNK) || (mode & ~(S_IFMT | 0o7777)) !== 0) bad(input, `invalid file mode 0${mode.toString(8)}`);
  return mode;
}

export function parseCommit(buf: Uint8Array, input: string): Commit {
  const v = readGVariant(buf, COMMIT_TYPE, input) as GValue[];
  const parent = v[1] as Uint8Array;
  return {
    parent: parent.length === 0 ? null : checksum(parent, 'parent checksum', input),
    subject: v[3] as string,
    timestamp: bswap64(v[5] as bigint),
    rootTree: checksum(v[6], 'root dirtree checksum', input),
    rootMeta: checksum(v[7], 'root dirmeta checksum', input),
  };
}

export function parseDirtree(buf: Uint8Array, input: string): Dirtree {
  const v = readGVariant(buf, DIRTREE_TYPE, input) as GValue[][];
  const files = (v[0] as GValue[][]).map((e) => ({ name: checkName(e[0] as string, input), checksum: checksum(e[1], 'file checksum', input) }));
  const dirs = (v[1] as GValue[][]).map((e) => ({
    name: checkName(e[0] as string, input),
    tree: checksum(e[1], 'dirtree checksum', input),
    meta: checksum(e[2], 'dirmeta checksum', input),
  }));
  // Sorted and unique, as ostree writes them; a name may not be both a file and a directory.
  for (const list of [files, dirs]) {
    for (let i = 1; i < list.length; i++) if (!(list[i - 1].name < list[i].name)) bad(input, `entries out of order or repeated: ${JSON.stringify(list[i].name)}`);
  }
  const names = new Set(files.map((f) => f.name));
  for (const d of dirs) if (names.has(d.name)) bad(input, `${JSON.stringify(d.name)} is both a file and a directory`);
  return { files, dirs };
}

/** (uuua(ayay)), the dirmeta and the bare-user `user.ostreemeta` layout. */
function parseMeta(buf: Uint8Array, input: string): Meta {
  const v = readGVariant(buf, DIRMETA_TYPE, input) as GValue[];
  return { uid: bswap32(v[0] as number), gid: bswap32(v[1] as number), mode: bswap32(v[2] as number), xattrs: xattrsOf(v[3], input) };
}

export function parseDirmeta(buf: Uint8Array, input: string): Meta {
  const m = parseMeta(buf, input);
  if ((m.mode & S_IFMT) !== S_IFDIR || (m.mode & ~(S_IFMT | 0o7777)) !== 0) bad(input, `invalid directory mode 0${m.mode.toString(8)}`);
  return m;
}

export function parseOstreemeta(buf: Uint8Array, input: string): Meta {
  const m = parseMeta(buf, input);
  checkFileMode(m.mode, input);
  return m;
}

export function parseArchiveHeader(buf: Uint8Array, input: string): ArchiveHeader {
  const v = readGVariant(buf, ARCHIVE_HEADER_TYPE, input) as GValue[];
  const size = bswap64(v[0] as bigint);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) bad(input, `content size ${size} out of range`);
  const mode = checkFileMode(bswap32(v[3] as number), input);
  if (v[4] !== 0) bad(input, `rdev ${bswap32(v[4] as number)} in a content object`);
  const target = v[5] as string;
  const isLink = (mode & S_IFMT) === S_IFLNK;
  if (isLink ? target === '' : target !== '') bad(input, isLink ? 'symlink without a target' : 'regular file with a symlink target');
  if (isLink && size !== 0n) bad(input, `symlink with a content size of ${size}`);
  return { size: Number(size), uid: bswap32(v[1] as number), gid: bswap32(v[2] as number), mode, target, xattrs: xattrsOf(v[6], input) };
}

/** A .filez object starts with the header length (u32 BE) and 4 zero bytes. */
export const FILEZ_PREFIX = 8;
export function filezHeaderLength(prefix: Uint8Array, input: string): number {
  if (prefix.length < FILEZ_PREFIX) bad(input, 'truncated archive object (no header)');
  const view = new DataView(prefix.buffer, prefix.byteOffset, FILEZ_PREFIX);
  if (view.getUint32(4) !== 0) bad(input, 'archive object header: padding is not zero');
  return view.getUint32(0);
}
