/**
 * The manifest (guest/manifest.sh's format) a mount of a vector image must show, from upstream
 * composefs-info's canonical dump of that image. The vectors' objects are not shipped: each is
 * stood in for by a small file holding its own path, so a redirected file
 * reads as that text (its payload), which proves the redirect went to the right object; the inode's size still
 * comes from the image. What the kernel shows differs from the dump where the kernel rules:
 * - overlayfs hides `trusted.overlay.*` xattrs and shows the escaped `trusted.overlay.overlay.*`
 *   ones without the extra prefix (6.7 and later; before, guest/composefs-checks.sh drops them);
 * - only user, trusted, security and POSIX ACL xattrs with a non-empty name after the prefix are
 *   listed, and user.* ones only on regular files and directories (xattr_permission());
 * - POSIX ACL entries without a qualifier report id -1 (posix_acl_to_xattr());
 * - uid/gid 4294967295 is no valid id and reads as the overflow id 65534.
 */
import { createHash } from 'node:crypto';
import { type Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, parseDump } from '../format/index.js';

/** new_decode_dev(): how erofs turns its 32-bit rdev into major:minor. */
const majorMinor = (rdev: number): string => `${((rdev & 0xfff00) >>> 8).toString(16)}:${((rdev & 0xff) | ((rdev >>> 12) & 0xfff00)).toString(16)}`;

const OVERFLOW_ID = 65534;
const id = (n: number): number => (n === 0xffffffff ? OVERFLOW_ID : n);

function visibleXattr(key: string, type: number): string | null {
  if (key.startsWith('trusted.overlay.overlay.')) return `trusted.overlay.${key.slice('trusted.overlay.overlay.'.length)}`;
  if (key.startsWith('trusted.overlay.')) return null;
  if (key.startsWith('user.') && type !== S_IFREG && type !== S_IFDIR) return null;
  return /^(user|trusted|security)\..|^system\.posix_acl_(access|default)$/.test(key) ? key : null;
}

const ACL_USER = 2;
const ACL_GROUP = 8;

/** A POSIX ACL xattr value as the kernel reports it: entries (tag u16, perm u16, id u32) after a u32 version. */
function aclValue(v: Buffer): Buffer {
  const out = Buffer.from(v);
  for (let off = 4; off + 8 <= out.length; off += 8) {
    const tag = out.readUInt16LE(off);
    if (tag !== ACL_USER && tag !== ACL_GROUP) out.writeUInt32LE(0xffffffff, off + 4);
  }
  return out;
}

/** Regular files' payloads (object paths) by path (`./a/b`), for every name of a hardlinked file. */
function payloads(dump: Buffer, input: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (p: string, n: Inode): void => {
    if ((n.mode & S_IFMT) === S_IFREG && n.payload) out.set(p, n.payload);
    for (const d of n.children ?? []) visit(`${p}/${d.name}`, d.inode);
  };
  visit('.', parseDump(dump, { input }));
  return out;
}

export interface VectorCase {
  manifest: string;
  /** Pairs of names of one inode. */
  hardlinks: [string, string][];
  /** Stand-in objects: path under the base directory → content. */
  objects: Map<string, string>;
}

/**
 * `inputDump` is what our writer gets, `canonicalDump` upstream's dump of its image. Payloads
 * come from the input: composefs-info 1.0.8 may append junk to short ones. They must be in the
 * `XX/…` object layout, which the image root's whiteouts hide in the fallback (plain lower
 * list) form; other base directory entries would show through there.
 */
export function vectorCase(inputDump: Buffer, canonicalDump: Buffer, input: string): VectorCase {
  const objects = new Map<string, string>();
  const paths = payloads(inputDump, input);
  for (const obj of paths.values()) {
    if (!/^\/?[0-9a-f]{2}\/[^/]+$/.test(obj)) throw new Error(`${input}: payload ${JSON.stringify(obj)} is not in the XX/… object layout`);
    objects.set(obj.replace(/^\//, ''), obj);
  }
  const root = parseDump(canonicalDump, { input });
  const stat: string[] = [];
  const links: string[] = [];
  const hashes: string[] = [];
  const xattrs: string[] = [];
  const hardlinks: [string, string][] = [];
  const firstName = new Map<Inode, string>();
  const visit = (p: string, n: Inode): void => {
    if (!/^[\x20-\x5b\x5d-\x7e]*$/.test(p)) throw new Error(`${input}: ${JSON.stringify(p)}: only printable names are supported`);
    const first = firstName.get(n);
    if (first) hardlinks.push([first.slice(2), p.slice(2)]);
    else firstName.set(n, p);
    const type = n.mode & S_IFMT;
    const isDir = type === S_IFDIR;
    const mtime = `${n.mtimeSec}.${String(n.mtimeNsec).padStart(9, '0')}`;
    stat.push([p, n.mode.toString(16), `${id(n.uid)}:${id(n.gid)}`, isDir ? '-' : n.size, mtime, isDir ? '-' : n.nlink, majorMinor(n.rdev)].join('|'));
    if (type === S_IFLNK) links.push(`${p} -> ${n.payload}`);
    if (type === S_IFREG) {
      const content = n.content ?? paths.get(p) ?? '';
      hashes.push(`${p} ${createHash('sha256').update(Buffer.from(content, 'latin1')).digest('hex')}`);
    }
    for (const x of n.xattrs) {
      const key = visibleXattr(x.key, type);
      if (!key) continue;
      const value = Buffer.from(x.value, 'latin1');
      xattrs.push(`${p === '.' ? '.' : p.slice(2)} ${key}=0x${(key.startsWith('system.posix_acl_') ? aclValue(value) : value).toString('hex')}`);
    }
    for (const d of n.children ?? []) visit(`${p}/${d.name}`, d.inode);
  };
  visit('.', root);
  const sorted = (a: string[]): string => a.sort().map((l) => `${l}\n`).join('');
  const manifest =
    '# stat: path|mode|uid:gid|size|mtime|nlink|rdev\n' + sorted(stat) + '# symlinks\n' + sorted(links) + '# sha256\n' + sorted(hashes) + '# xattrs\n' + sorted(xattrs);
  return { manifest, hardlinks, objects };
}
