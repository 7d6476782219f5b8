/** The cfs-dump commands as functions over decoded trees: text out through a callback. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  type Inode,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  escapeDumpField,
  escapeLsPath,
  ownerPaths,
} from '../format/index.js';

type Out = (s: string) => void;

/** `ls`: every name, depth first; dirs end in `/`, symlinks show `-> target`, files `@ payload`. */
export function printLs(root: Inode, out: Out): void {
  const walk = (dir: Inode, prefix: string): void => {
    for (const d of dir.children!) {
      const p = `${prefix}/${d.name}`;
      let line = escapeLsPath(p);
      if (!d.link) {
        const type = d.inode.mode & S_IFMT;
        if (type === S_IFDIR) line += '/\t';
        else if (type === S_IFLNK) line += '\t-> ' + escapeDumpField(d.inode.payload ?? '');
        else if (type === S_IFREG && d.inode.payload !== null) line += '\t@ ' + escapeDumpField(d.inode.payload);
      }
      out(line + '\n');
      if (!d.link && d.inode.children) walk(d.inode, p);
    }
  };
  walk(root, '');
}

/** Payloads of regular files (backing objects), added to `into`. */
export function collectObjects(root: Inode, into: Set<string>): void {
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop()!;
    for (const d of dir.children!) {
      if (d.link) continue;
      const n = d.inode;
      if ((n.mode & S_IFMT) === S_IFREG && n.payload !== null) into.add(n.payload);
      if (n.children) stack.push(n);
    }
  }
}

/** Sorted (byte order) objects, optionally only those missing under `basedir`. */
export function listObjects(objects: Set<string>, basedir?: string): string[] {
  let list = [...objects];
  if (basedir !== undefined) {
    list = list.filter((p) => !fs.existsSync(path.join(basedir, Buffer.from(p.replace(/^\/+/, ''), 'latin1').toString())));
  }
  return list.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

const TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [S_IFREG, 'file'],
  [S_IFDIR, 'dir'],
  [S_IFLNK, 'symlink'],
  [S_IFCHR, 'chardev'],
  [S_IFBLK, 'blockdev'],
  [S_IFIFO, 'fifo'],
  [S_IFSOCK, 'socket'],
]);

/** A byte string for JSON: text when it is valid UTF-8, else base64 under `<key>Base64`. */
function bytesField(obj: Record<string, unknown>, key: string, s: string | null): void {
  if (s === null) return;
  const b = Buffer.from(s, 'latin1');
  const text = b.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(b)) obj[key] = text;
  else obj[`${key}Base64`] = b.toString('base64');
}

/** `--json`: one JSON object per line (NDJSON), in the order of the dump. */
export function printJson(root: Inode, out: Out): void {
  const owners = ownerPaths(root);
  const line = (p: string, inode: Inode, link: boolean): void => {
    const o: Record<string, unknown> = {};
    bytesField(o, 'path', p);
    o.type = TYPE_NAMES.get(inode.mode & S_IFMT);
    if (link) bytesField(o, 'hardlinkTo', owners.get(inode) ?? null);
    o.mode = inode.mode & 0o7777;
    o.size = inode.size;
    o.nlink = inode.nlink;
    o.uid = inode.uid;
    o.gid = inode.gid;
    if ((inode.mode & S_IFMT) === S_IFCHR || (inode.mode & S_IFMT) === S_IFBLK) o.rdev = inode.rdev;
    o.mtime = { sec: inode.mtimeSec.toString(), nsec: inode.mtimeNsec };
    if ((inode.mode & S_IFMT) === S_IFLNK) bytesField(o, 'target', inode.payload);
    else bytesField(o, 'payload', inode.payload);
    if (inode.content !== null) o.contentBase64 = Buffer.from(inode.content, 'latin1').toString('base64');
    if (inode.digest !== null) o.digest = inode.digest;
    if (inode.xattrs.length) {
      o.xattrs = inode.xattrs.map((x) => {
        const e: Record<string, unknown> = {};
        bytesField(e, 'name', x.key);
        e.valueBase64 = Buffer.from(x.value, 'latin1').toString('base64');
        return e;
      });
    }
    out(JSON.stringify(o) + '\n');
  };
  line('/', root, false);
  const walk = (dir: Inode, prefix: string): void => {
    for (const d of dir.children!) {
      const p = `${prefix}/${d.name}`;
      line(p, d.inode, d.link);
      if (!d.link && d.inode.children) walk(d.inode, p);
    }
  };
  walk(root, '');
}
