/**
 * import-tar: stream a tar archive straight into the store and build the composefs image of its
 * tree. Nothing is extracted: each file's bytes are hashed while they are staged under STORE/tmp,
 * and the staged objects are moved into objects/ only after the whole archive parsed and its
 * image encoded, so a bad or truncated archive leaves the store as it was.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import {
  CfsError, ErrorCode, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG,
  addChild, encodeImage, findChild, makedev32, newInode, type Dirent, type Inode,
} from '../format/index.js';
import { Store, checkRefName, imageNeeds, objectRelPath } from './store.js';
import { newVerityHasher } from './sha256-native.js';

/** Files up to this size are stored inline in the image, as mkcomposefs does. */
export const MAX_INLINE = 64;
/** Files up to this size are hashed in memory and written only if the object is new. */
const BUFFER_LIMIT = 1 << 20;
const MAX_NAME = 255;

/** pax records; values are byte strings (latin1), see decodePaxBytes. */
type TarHeader = tar.Header & { pax?: Record<string, string> | null };

/**
 * tar-stream decodes pax records as UTF-8, which mangles binary xattr values (security.capability)
 * and non-UTF-8 paths. Its extractor calls headers.decodePax through the module object, so we
 * swap in a decoder that keeps every byte (latin1 strings, like the rest of the tree).
 */
function decodePaxBytes(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0) break; // NUL padding
    const sp = buf.indexOf(0x20, off);
    const len = sp > off ? Number(buf.toString('latin1', off, sp)) : NaN;
    if (!Number.isSafeInteger(len) || len <= sp - off + 2 || off + len > buf.length || buf[off + len - 1] !== 0x0a) {
      throw new Error(`malformed pax record at byte ${off} of an extended header`);
    }
    const rec = buf.toString('latin1', sp + 1, off + len - 1);
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new Error(`malformed pax record at byte ${off} of an extended header`);
    out[rec.slice(0, eq)] = rec.slice(eq + 1);
    off += len;
  }
  return out;
}
{
  const req = createRequire(import.meta.url);
  const headers = req(path.join(path.dirname(req.resolve('tar-stream')), 'headers.js')) as { decodePax: typeof decodePaxBytes };
  headers.decodePax = decodePaxBytes;
}
const PATH_MAX = 4096;

export interface ImportResult {
  image: string;
  entries: number;
  files: number;
  newObjects: number;
  newBytes: number;
  dedupObjects: number;
  dedupBytes: number;
  missing: string[];
}

/**
 * Import one tar stream; `input` names it in errors. `beforeCommit` runs once the archive has
 * parsed and before any object or the image becomes visible (a caller's last check, such as the
 * digest of the bytes it streamed in); if it throws, the store stays as it was.
 */
export async function importTar(store: Store, stream: Readable, opts: { name?: string; input: string; beforeCommit?: () => Promise<void> }): Promise<ImportResult> {
  const input = opts.input;
  const bad = (msg: string): CfsError => new CfsError(ErrorCode.InvalidTree, msg, { input });
  if (opts.name !== undefined) checkRefName(opts.name); // before reading anything
  const stager = store.stager();
  const res: ImportResult = { image: '', entries: 0, files: 0, newObjects: 0, newBytes: 0, dedupObjects: 0, dedupBytes: 0, missing: [] };
  try {
    const root = newInode(S_IFDIR | 0o755);
    const extract = tar.extract({ filenameEncoding: "latin1" } as Parameters<typeof tar.extract>[0]);
    let streamError: Error | null = null;
    pipeline(stream, extract, (e) => {
      if (e) streamError = e;
    });
    try {
      for await (const entry of extract) {
        const h = entry.header as TarHeader;
        res.entries++;
        const name = h.pax?.path ?? h.name;
        const parts = splitPath(name, bad);
        const where = JSON.stringify(name);
        let inode: Inode;
        const perm = (h.mode ?? 0) & 0o7777;
        switch (h.type) {
          case 'file':
          case 'contiguous-file': {
            const size = h.size ?? 0;
            if (!Number.isSafeInteger(size) || size < 0) throw bad(`${where}: impossible size ${size}`);
            inode = newInode(S_IFREG | perm, { size });
            await readContent(entry, inode, size);
            res.files++;
            break;
          }
          case 'directory':
            inode = newInode(S_IFDIR | perm);
            break;
          case 'symlink': {
            const target = h.pax?.linkpath ?? h.linkname ?? '';
            if (target.length === 0 || target.length >= PATH_MAX) throw bad(`${where}: symlink target of ${target.length} bytes`);
            inode = newInode(S_IFLNK | 0o777, { payload: target, size: target.length });
            break;
          }
          case 'character-device':
          case 'block-device':
            inode = newInode((h.type === 'block-device' ? S_IFBLK : S_IFCHR) | perm, { rdev: makedev32(h.devmajor ?? 0, h.devminor ?? 0) });
            break;
          case 'fifo':
            inode = newInode(S_IFIFO | perm);
            break;
          case 'link': {
            const target = h.pax?.linkpath ?? h.linkname ?? '';
            const t = lookup(root, splitPath(target, bad));
            if (!t) throw bad(`${where}: hardlink to ${JSON.stringify(target)}, which is not in the archive before it`);
            if ((t.mode & S_IFMT) === S_IFDIR) throw bad(`${where}: hardlink to a directory`);
            entry.resume();
            place(root, parts, t, true, where, bad);
            continue;
          }
          default:
            throw bad(`${where}: unsupported tar entry type ${h.type ?? '?'}`);
        }
        if (h.type !== 'file' && h.type !== 'contiguous-file') entry.resume();
        inode.uid = h.uid ?? 0;
        inode.gid = h.gid ?? 0;
        setMtime(inode, h, where, bad);
        inode.xattrs = paxXattrs(h.pax);
        place(root, parts, inode, false, where, bad);
      }
    } catch (e) {
      throw streamError ? tarError(streamError, input) : e instanceof CfsError ? e : tarError(e as Error, input);
    }
    if (streamError) throw tarError(streamError, input);

    settleHardlinks(root);
    const image = encodeImage(root, { input });
    await opts.beforeCommit?.();

    // Durable before visible: staged data into objects/, then register.
    const t = await stager.commit();
    res.newObjects = t.newObjects;
    res.newBytes = t.newBytes;
    res.dedupObjects = t.dedupObjects;
    res.dedupBytes = t.dedupBytes;
    const reg = store.addImage(image, { name: opts.name, input, needs: treeNeeds(root) });
    res.image = reg.digest;
    res.missing = reg.missing;
    return res;
  } finally {
    await stager.close();
  }

  /** Hash a regular file's bytes; inline small ones, stage new large ones. */
  async function readContent(entry: AsyncIterable<unknown>, inode: Inode, size: number): Promise<void> {
    if (size <= MAX_INLINE) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      const data = Buffer.concat(chunks);
      if (data.length !== size) throw new CfsError(ErrorCode.Io, 'truncated tar data', { input });
      if (size > 0) inode.content = data.toString('latin1');
      return;
    }
    const hasher = newVerityHasher();
    let chunks: Buffer[] | null = [];
    let held = 0;
    let fd = -1;
    let file = '';
    try {
      for await (const c of entry) {
        const b = c as Buffer;
        hasher.update(b);
        if (chunks) {
          chunks.push(b);
          held += b.length;
          if (held <= BUFFER_LIMIT) continue;
          file = stager.newFile();
          fd = fs.openSync(file, 'wx', 0o644);
          for (const b of chunks) writeAll(fd, b);
          chunks = null;
        } else writeAll(fd, b);
      }
      const digest = hasher.digest().toString('hex');
      inode.digest = digest;
      inode.payload = objectRelPath(digest);
      if (stager.has(digest, size)) {
        if (fd >= 0) fs.rmSync(file, { force: true });
        return;
      }
      if (chunks) {
        file = stager.newFile();
        fd = fs.openSync(file, 'wx', 0o644);
        for (const b of chunks) writeAll(fd, b);
      }
      stager.addWritten(digest, file, size);
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  }
}

function writeAll(fd: number, b: Buffer): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
}


function tarError(e: Error, input: string): CfsError {
  if (e instanceof CfsError) return e;
  const msg = /Unexpected end of data|premature close/i.test(e.message) ? 'truncated archive (unexpected end of data)' : `bad tar: ${e.message}`;
  return new CfsError(ErrorCode.Io, msg, { input });
}

/** Components of an archive path; rejects absolute paths, `..`, and over-long names. */
function splitPath(name: string, bad: (m: string) => CfsError): string[] {
  if (name.startsWith('/')) throw bad(`absolute path ${JSON.stringify(name)} in archive`);
  if (name.length >= PATH_MAX) throw bad(`path of ${name.length} bytes in archive`);
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw bad(`path ${JSON.stringify(name)} escapes the archive root (..)`);
    if (p.length > MAX_NAME) throw bad(`name of ${p.length} bytes in ${JSON.stringify(name)} (max ${MAX_NAME})`);
    if (p.includes('\0')) throw bad(`NUL byte in ${JSON.stringify(name)}`);
    parts.push(p);
  }
  return parts;
}

function lookup(root: Inode, parts: string[]): Inode | null {
  let cur = root;
  for (const p of parts) {
    if (!cur.children) return null;
    const i = findChild(cur.children, p);
    if (i < 0) return null;
    cur = cur.children[i].inode;
  }
  return cur;
}

/** Put an inode at `parts`, creating missing parents; a later entry replaces an earlier one. */
function place(root: Inode, parts: string[], inode: Inode, link: boolean, where: string, bad: (m: string) => CfsError): void {
  if (parts.length === 0) {
    if ((inode.mode & S_IFMT) !== S_IFDIR) throw bad(`${where}: the archive root must be a directory`);
    Object.assign(root, { ...inode, children: root.children });
    return;
  }
  let dir = root;
  for (const p of parts.slice(0, -1)) {
    const i = findChild(dir.children!, p);
    if (i < 0) {
      const d = newInode(S_IFDIR | 0o755);
      addChild(dir, { name: p, inode: d, link: false });
      dir = d;
      continue;
    }
    const next = dir.children![i].inode;
    const t = next.mode & S_IFMT;
    if (t === S_IFLNK) throw bad(`${where}: parent ${JSON.stringify(p)} is a symlink`);
    if (t !== S_IFDIR) throw bad(`${where}: parent ${JSON.stringify(p)} is not a directory`);
    dir = next;
  }
  const name = parts[parts.length - 1];
  const i = findChild(dir.children!, name);
  if (i >= 0) {
    const old = dir.children![i];
    const oldDir = (old.inode.mode & S_IFMT) === S_IFDIR;
    const newDir = (inode.mode & S_IFMT) === S_IFDIR;
    if (oldDir && newDir) {
      Object.assign(old.inode, { ...inode, children: old.inode.children });
      return;
    }
    if (oldDir && old.inode.children!.length > 0) throw bad(`${where}: replaces a non-empty directory`);
    if (old.inode === inode) return;
    dir.children![i] = { name, inode, link };
    return;
  }
  addChild(dir, { name, inode, link });
}

/** nlink = names per inode; the first name depth-first owns a hardlinked inode. */
export function settleHardlinks(root: Inode): void {
  const count = new Map<Inode, number>();
  const walk = (d: Inode, visit: (e: Dirent) => void): void => {
    for (const e of d.children!) {
      visit(e);
      if (e.inode.children) walk(e.inode, visit);
    }
  };
  let dirs = 0;
  walk(root, (e) => {
    if (e.inode.children) dirs++;
    else count.set(e.inode, (count.get(e.inode) ?? 0) + 1);
  });
  const owned = new Set<Inode>();
  walk(root, (e) => {
    if (e.inode.children) {
      e.inode.nlink = 2 + e.inode.children.filter((c) => c.inode.children).length;
      e.link = false;
      return;
    }
    e.inode.nlink = count.get(e.inode)!;
    e.link = owned.has(e.inode);
    owned.add(e.inode);
  });
  root.nlink = 2 + root.children!.filter((c) => c.inode.children).length;
  void dirs;
}

/** The objects a finished tree needs and their total size, as imageNeeds would find them. */
export function treeNeeds(root: Inode): { objects: string[]; logical: number } {
  const objects = new Set<string>();
  let logical = 0;
  const walk = (d: Inode): void => {
    for (const e of d.children!) {
      if (e.inode.children) walk(e.inode);
      else if (!e.link && e.inode.digest && (e.inode.mode & S_IFMT) === S_IFREG) {
        objects.add(e.inode.digest);
        logical += e.inode.size;
      }
    }
  };
  walk(root);
  return { objects: [...objects].sort(), logical };
}

function setMtime(inode: Inode, h: TarHeader, where: string, bad: (m: string) => CfsError): void {
  const pax = h.pax?.mtime;
  if (pax !== undefined) {
    const m = /^(-?\d+)(?:\.(\d{1,9})\d*)?$/.exec(pax);
    if (!m) throw bad(`${where}: bad pax mtime ${JSON.stringify(pax)}`);
    inode.mtimeSec = BigInt(m[1]);
    inode.mtimeNsec = m[2] ? Number(m[2].padEnd(9, '0')) : 0;
    return;
  }
  const ms = h.mtime?.getTime() ?? 0;
  inode.mtimeSec = BigInt(Math.floor(ms / 1000));
}

/** SCHILY.xattr.KEY=value (GNU tar, bsdtar) and LIBARCHIVE.xattr.KEY=base64 (bsdtar). */
function paxXattrs(pax: Record<string, string> | null | undefined): { key: string; value: string }[] {
  if (!pax) return [];
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(pax)) {
    if (k.startsWith('SCHILY.xattr.')) out.set(k.slice(13), v);
    else if (k.startsWith('LIBARCHIVE.xattr.')) {
      const key = Buffer.from(decodeURIComponent(Buffer.from(k.slice(17), 'latin1').toString('utf8')), 'utf8').toString('latin1');
      out.set(key, Buffer.from(v, 'base64').toString('latin1'));
    }
  }
  return [...out].map(([key, value]) => ({ key, value }));
}

/** A tar file changed within this long before an import is not cached (its stamp may not tell). */
const RACY_NS = 1_000_000_000n;

function tarStamp(st: fs.BigIntStats): { file: string; stamp: string } {
  return { file: `${st.dev}:${st.ino}`, stamp: `${st.size}:${st.mtimeNs}:${st.ctimeNs}` };
}

/**
 * importTar of a tar file, with a cache in the store's index: a file whose (dev, ino, size,
 * mtime, ctime) are those of an earlier import, whose image is still in the store with every
 * object it needs, is registered again without reading it. `cache: false` reads it anyway
 * (and refreshes the cache).
 */
export async function importTarFile(store: Store, file: string, opts: { name?: string; cache?: boolean }): Promise<ImportResult & { cached: boolean }> {
  if (opts.name !== undefined) checkRefName(opts.name);
  const startNs = BigInt(Date.now()) * 1_000_000n;
  const before = fs.statSync(file, { bigint: true });
  if (before.isDirectory()) throw new CfsError(ErrorCode.Io, 'is a directory', { input: file });
  const key = tarStamp(before);
  const hit = opts.cache === false ? undefined : store.index.tarImport(key.file, key.stamp);
  if (hit) {
    const r = reuseImport(store, hit.image, hit.result, opts.name);
    if (r) return { ...r, cached: true };
  }
  const res = await importTar(store, fs.createReadStream(file, { highWaterMark: 1 << 20 }), { name: opts.name, input: file });
  const after = tarStamp(fs.statSync(file, { bigint: true }));
  const racy = before.mtimeNs >= startNs - RACY_NS || before.ctimeNs >= startNs - RACY_NS;
  if (!racy && after.file === key.file && after.stamp === key.stamp && res.missing.length === 0) {
    const { entries, files } = res;
    store.index.putTarImport(key.file, key.stamp, res.image, JSON.stringify({ entries, files, bytes: res.newBytes + res.dedupBytes }));
  }
  return { ...res, cached: false };
}

/** Register the image of a cached import again; null if it or one of its objects is gone. */
function reuseImport(store: Store, image: string, result: string, name: string | undefined): ImportResult | null {
  store.lock('shared'); // no gc between the checks and the new ref
  let data: Buffer;
  let counts: { entries: number; files: number; bytes: number };
  try {
    data = fs.readFileSync(path.join(store.imagesDir, image));
    counts = JSON.parse(result) as typeof counts;
  } catch {
    return null;
  }
  const needs = imageNeeds(data, image);
  if (!needs.objects.every((o) => store.has(o))) return null;
  // addImage checks the content against its name and points the ref at it
  const reg = store.addImage(data, { name, input: image, needs });
  if (reg.digest !== image || reg.missing.length > 0) return null;
  return { image, entries: counts.entries, files: counts.files, newObjects: 0, newBytes: 0, dedupObjects: counts.files, dedupBytes: counts.bytes, missing: [] };
}
