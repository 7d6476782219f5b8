/**
 * Commit a writable mount: fold its overlayfs upper directory into the lower image's tree and
 * write a new image. New and changed files go into the store; whiteouts (char 0:0, or
 * fuse-overlayfs's `.wh.NAME` files) delete;
 * opaque directories drop what was below; metacopy-only entries keep the lower content with new
 * metadata; redirects (renamed directories and metacopy files) take their content from the lower
 * path they name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CfsError,
  ErrorCode,
  type Dirent,
  type Inode,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  addChild,
  decodeImage,
  encodeImage,
  findChild,
  newInode,
} from '../format/index.js';
import { readXattrs } from '../cas/xattrs.js';
import { objectRelPath, type Store } from '../cas/store.js';

const INLINE_MAX = 64;
const OVL = 'trusted.overlay.';
/** fuse-overlayfs without privileges writes user.fuseoverlayfs.* instead. */
const OVL_PREFIXES = [OVL, 'user.fuseoverlayfs.'];
/** fuse-overlayfs's whiteouts where it cannot make a char 0:0 device: `.wh.NAME`, and an opaque marker file. */
const WH_PREFIX = '.wh.';
const WH_OPAQUE = '.wh..wh..opq';
const NSEC = 1_000_000_000n;

export interface CommitResult {
  image: Buffer;
  changed: number;
  deleted: number;
  newObjects: number;
}

/** A deep copy of a subtree (links keep pointing at the shared inode). */
function cloneTree(inode: Inode, seen = new Map<Inode, Inode>()): Inode {
  const prev = seen.get(inode);
  if (prev) return prev;
  const copy: Inode = { ...inode, xattrs: inode.xattrs.map((x) => ({ ...x })), children: null };
  seen.set(inode, copy);
  if (inode.children) copy.children = inode.children.map((d) => ({ name: d.name, link: d.link, inode: cloneTree(d.inode, seen) }));
  return copy;
}

function lookup(root: Inode, rel: string): Inode | null {
  let cur = root;
  for (const part of rel.split('/')) {
    if (!part) continue;
    if (!cur.children) return null;
    const i = findChild(cur.children, part);
    if (i < 0) return null;
    cur = cur.children[i].inode;
  }
  return cur;
}

/** Stat + xattrs of an upper entry into an inode (content handled by the caller). */
function metadataOf(p: Buffer, st: fs.BigIntStats): Inode {
  const inode = newInode(Number(st.mode));
  inode.uid = Number(st.uid);
  inode.gid = Number(st.gid);
  inode.rdev = Number(st.rdev & 0xffffffffn);
  inode.size = Number(st.size);
  const nsec = ((st.mtimeNs % NSEC) + NSEC) % NSEC;
  inode.mtimeSec = (st.mtimeNs - nsec) / NSEC;
  inode.mtimeNsec = Number(nsec);
  for (const [key, value] of readXattrs(p)) if (!OVL_PREFIXES.some((x) => key.startsWith(x))) inode.xattrs.push({ key, value });
  return inode;
}

/** Overlay xattrs by kernel name (trusted.overlay.X), also from fuse-overlayfs's unprivileged ones. */
function overlayXattrs(p: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const [key, value] of readXattrs(p, (k) => OVL_PREFIXES.some((x) => k.startsWith(x)))) {
    const prefix = OVL_PREFIXES.find((x) => key.startsWith(x))!;
    const name = OVL + key.slice(prefix.length);
    if (prefix === OVL || !m.has(name)) m.set(name, value);
  }
  return m;
}

/** Fold `upper` into the tree of `lowerImage`; file contents go into `store`. */
export function commitUpper(lowerImage: Buffer, upper: string, store: Store, input?: string): CommitResult {
  const lower = decodeImage(lowerImage, { input, owner: 'image' }).root;
  const pristine = cloneTree(lower);
  const res: CommitResult = { image: Buffer.alloc(0), changed: 0, deleted: 0, newObjects: 0 };

  const remove = (dir: Inode, name: string): void => {
    const i = findChild(dir.children!, name);
    if (i >= 0) {
      dir.children!.splice(i, 1);
      res.deleted++;
    }
  };
  const put = (dir: Inode, d: Dirent): void => {
    const i = findChild(dir.children!, d.name);
    if (i >= 0) dir.children![i] = d;
    else addChild(dir, d);
  };

  const walk = (upperDir: Buffer, dir: Inode, rel: string): void => {
    for (const nameBuf of fs.readdirSync(upperDir, { encoding: 'buffer' })) {
      const name = nameBuf.toString('latin1');
      if (name === WH_OPAQUE) continue; // read with its directory
      if (name.startsWith(WH_PREFIX)) {
        remove(dir, name.slice(WH_PREFIX.length));
        continue;
      }
      const p = Buffer.concat([upperDir, Buffer.from('/'), nameBuf]);
      const childRel = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p, { bigint: true });
      const type = Number(st.mode) & S_IFMT;
      if (type === S_IFCHR && st.rdev === 0n) {
        remove(dir, name); // whiteout
        continue;
      }
      const ovl = overlayXattrs(p);
      const inode = metadataOf(p, st);
      const existing = dir.children![findChild(dir.children!, name)]?.inode;
      res.changed++;
      if (type === S_IFDIR) {
        const redirect = ovl.get(`${OVL}redirect`);
        const opaque = ovl.get(`${OVL}opaque`) === 'y' || fs.existsSync(Buffer.concat([p, Buffer.from('/' + WH_OPAQUE)]));
        let base: Inode | null = null;
        if (redirect !== undefined) {
          const from = redirect.startsWith('/') ? redirect : path.posix.join(rel, redirect);
          base = lookup(pristine, from);
        } else if (!opaque && existing && (existing.mode & S_IFMT) === S_IFDIR) {
          base = existing;
        }
        inode.children = base && !opaque ? cloneTree(base).children! : [];
        put(dir, { name, inode, link: false });
        walk(p, inode, childRel);
      } else if (type === S_IFREG) {
        if (ovl.has(`${OVL}metacopy`)) {
          // metadata copied up, content still in the lower layer
          const redirect = ovl.get(`${OVL}redirect`);
          const from = lookup(pristine, redirect !== undefined ? redirect : `/${childRel}`);
          if (!from) throw new CfsError(ErrorCode.InvalidTree, `metacopy entry without its lower file`, { input: childRel });
          inode.payload = from.payload;
          inode.digest = from.digest;
          inode.content = from.content;
          inode.size = from.size;
        } else if (inode.size > INLINE_MAX) {
          const r = store.putFile(p);
          if (r.added) res.newObjects++;
          inode.digest = r.digest;
          inode.payload = objectRelPath(r.digest);
        } else if (inode.size > 0) {
          inode.content = fs.readFileSync(p).toString('latin1');
        }
        put(dir, { name, inode, link: false });
      } else {
        if (type === S_IFLNK) {
          inode.payload = fs.readlinkSync(p, { encoding: 'buffer' }).toString('latin1');
          inode.size = inode.payload.length;
        }
        put(dir, { name, inode, link: false });
      }
    }
  };

  const upperBuf = Buffer.from(path.resolve(upper));
  if (!fs.statSync(upperBuf, { throwIfNoEntry: false })?.isDirectory()) {
    throw new CfsError(ErrorCode.Io, 'upper directory not found', { input: upper });
  }
  // the upper root's own metadata replaces the root's when it was copied up
  walk(upperBuf, lower, '');
  // names whose owner was deleted lose their link status: the first remaining name owns
  const owned = new Set<Inode>();
  const fix = (dir: Inode): void => {
    for (const d of dir.children!) {
      if (!d.link) owned.add(d.inode);
      if (!d.link && d.inode.children) fix(d.inode);
    }
  };
  fix(lower);
  const relink = (dir: Inode): void => {
    for (const d of dir.children!) {
      if (d.link && !owned.has(d.inode)) {
        d.link = false;
        owned.add(d.inode);
      }
      if (!d.link && d.inode.children) relink(d.inode);
    }
  };
  relink(lower);
  if ((lower.mode & S_IFMT) !== S_IFDIR) throw new CfsError(ErrorCode.InvalidTree, 'root is not a directory');
  res.image = encodeImage(lower, { input });
  return res;
}
