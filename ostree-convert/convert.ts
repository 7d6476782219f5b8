/**
 * One OSTree commit → one composefs image, following ostree's own composefs images
 * (ostree-repo-composefs.c): every mtime 0, modes/owners/xattrs as committed, no hardlinks
 * (identical content objects are separate inodes with the same payload), regular files never
 * inline, empty files without payload or digest.
 *
 * Payloads:
 *   base-objects  `XX/REST.file` relative to REPO/objects (bare modes), so base=REPO/objects mounts it;
 *   store         the content goes into a cfs-cas store under its fs-verity digest (every mode).
 * Nothing touches the store until the whole commit has been read and its image encoded; a
 * corrupt, truncated or missing object fails the conversion with nothing written.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { CfsError, ErrorCode, FsVerityHasher, S_IFDIR, encodeImage, newInode } from '../format/index.js';
import type { Inode } from '../format/tree.js';
import { MAX_DEPTH } from '../format/layout.js';
import { HashPool, defaultThreads } from '../cas/hash-pool.js';
import { type Store, objectRelPath } from '../cas/store.js';
import type { Meta } from './objects.js';
import { type Content, Repo } from './repo.js';

/** Most entries one commit may expand to (dirtrees can be shared, so a small repo can describe a huge tree). */
export const MAX_ENTRIES = 1 << 21;
/** Directories ostree adds at the root of a deployment (ostree_repo_checkout_composefs). */
export const DEPLOYMENT_DIRS = ['usr', 'etc', 'boot', 'var', 'sysroot'];
const SELINUX = 'security.selinux';
/** Archive objects up to this compressed size are inflated in one call, larger ones streamed. */
const INFLATE_AT_ONCE = 4 << 20;
/** Below this many bytes to hash, starting worker threads costs more than it saves. */
const POOL_MIN_BYTES = 32 << 20;

export interface ConvertOptions {
  payloads: 'base-objects' | 'store';
  /** payloads 'store': where the contents go and the image is registered. */
  store?: Store;
  /** Ref name of the image in the store. */
  name?: string;
  dropSelinux?: boolean;
  deployment?: boolean;
  /** Content checksum → fs-verity digest, kept across the commits of one run. */
  digests?: Map<string, string>;
  /** Most entries the commit may expand to (default MAX_ENTRIES). */
  maxEntries?: number;
  /** Called as content objects are hashed. */
  progress?: (done: number, total: number) => void;
}

export interface ObjectCounts {
  /** Distinct non-empty regular-file contents in the commit. */
  unique: number;
  /** Of those, objects added to the store, and bytes. */
  new: number;
  newBytes: number;
  /** Already in the store (or added earlier in this commit). */
  dedup: number;
  dedupBytes: number;
}

export interface ConvertResult {
  commit: string;
  image: Buffer;
  entries: number;
  /** Regular files, and their total size. */
  files: number;
  bytes: number;
  objects: ObjectCounts;
  /** payloads 'store': the image's digest in the store. */
  storeImage?: string;
}

/** A content object the image needs: its metadata and the inodes that show it. */
interface Wanted {
  content: Content;
  inodes: Inode[];
}

export async function convertCommit(repo: Repo, commit: string, opts: ConvertOptions): Promise<ConvertResult> {
  if (opts.payloads === 'base-objects' && repo.mode === 'archive') {
    throw new CfsError(ErrorCode.Usage, 'an archive repo has no plain object files to point at: use --store', { input: repo.root });
  }
  if (opts.payloads === 'store' && !opts.store) throw new CfsError(ErrorCode.Usage, 'payloads in a store need a store');
  const c = repo.commit(commit);
  const { root, entries, files, bytes, wanted } = buildTree(repo, c.rootTree, c.rootMeta, opts);
  const input = `commit ${commit}`;

  const digests = opts.digests ?? new Map<string, string>();
  const objects: ObjectCounts = { unique: wanted.size, new: 0, newBytes: 0, dedup: 0, dedupBytes: 0 };
  const stager = opts.payloads === 'store' ? opts.store!.stager({ imageFollows: true }) : null;
  try {
    if (repo.mode !== 'archive') {
      const todo = [...wanted.values()].map((w) => w.content).filter((c) => !digests.has(c.checksum));
      await hashObjects(todo, digests, opts.progress);
    }
    let done = 0;
    for (const w of wanted.values()) {
      const c = w.content;
      let digest = digests.get(c.checksum);
      if (repo.mode === 'archive') {
        // Inflate once, to hash it and, unless the store has it, into the store.
        if (!digest || (stager && !stager.has(digest, c.size))) {
          const file = stager?.newFile() ?? null;
          digest = await inflateObject(c, file);
          if (file && stager!.has(digest, c.size)) fs.rmSync(file, { force: true });
          else if (file) stager!.addWritten(digest, file, c.size);
        }
        digests.set(c.checksum, digest);
        opts.progress?.(done + 1, wanted.size);
      } else if (digest) {
        stager?.add({ path: c.file, digest, size: c.size });
      }
      if (!digest) throw new Error(`no digest for ${c.checksum}`);
      for (const inode of w.inodes) {
        inode.digest = digest;
        inode.payload = opts.payloads === 'store' ? objectRelPath(digest) : Repo.relPath(c.checksum, 'file');
      }
      done++;
    }

    const image = encodeImage(root, { input });
    const result: ConvertResult = { commit, image, entries, files, bytes, objects };
    if (stager) {
      const store = opts.store!;
      // Durable before visible: the contents first, then the image that needs them.
      const t = await stager.commit();
      objects.new = t.newObjects;
      objects.newBytes = t.newBytes;
      objects.dedup = t.dedupObjects;
      objects.dedupBytes = t.dedupBytes;
      const needs = { objects: [...new Set([...wanted.values()].map((w) => digests.get(w.content.checksum)!))].sort(), logical: bytesWithPayload(wanted) };
      result.storeImage = store.addImage(image, { name: opts.name, input, needs }).digest;
    }
    return result;
  } finally {
    await stager?.close();
  }
}

/** fs-verity digests of plain object files (bare modes), on worker threads when there is enough to hash. */
async function hashObjects(todo: Content[], digests: Map<string, string>, progress?: (done: number, total: number) => void): Promise<void> {
  const total = todo.reduce((n, c) => n + c.size, 0);
  let failure: CfsError | null = null;
  let done = 0;
  const pool = new HashPool(total >= POOL_MIN_BYTES ? defaultThreads() : 0, (i, r) => {
    const c = todo[i];
    if (r.digest === undefined) failure ??= new CfsError(ErrorCode.Io, `cannot read object: ${r.error}`, { input: c.file });
    else if (r.size !== c.size) failure ??= new CfsError(ErrorCode.Io, `object changed while being read (${r.size} bytes, expected ${c.size})`, { input: c.file });
    else digests.set(c.checksum, r.digest);
    progress?.(++done, todo.length);
  });
  try {
    for (const c of todo) pool.submit(Buffer.from(c.file), c.size);
    await pool.drain();
  } finally {
    await pool.close();
  }
  if (failure) throw failure;
}

function bytesWithPayload(wanted: Map<string, Wanted>): number {
  let n = 0;
  for (const w of wanted.values()) n += w.content.size * w.inodes.length;
  return n;
}

/** The commit's tree as inodes; regular files with content are collected by content checksum. */
function buildTree(repo: Repo, rootTree: string, rootMeta: string, opts: ConvertOptions) {
  const wanted = new Map<string, Wanted>();
  const contents = new Map<string, Content>();
  const maxEntries = opts.maxEntries ?? MAX_ENTRIES;
  let entries = 1;
  let files = 0;
  let bytes = 0;
  const xattrs = (m: Meta): Inode['xattrs'] => (opts.dropSelinux ? m.xattrs.filter((x) => x.key !== SELINUX) : m.xattrs.slice());
  const dirInode = (m: Meta): Inode => newInode(m.mode, { uid: m.uid, gid: m.gid, xattrs: xattrs(m) });

  const root = dirInode(repo.dirmeta(rootMeta));
  const stack: [Inode, string, number, string][] = [[root, rootTree, 0, '']];
  while (stack.length) {
    const [dir, treeChecksum, depth, where] = stack.pop()!;
    if (depth >= MAX_DEPTH) throw new CfsError(ErrorCode.TooLarge, `directories nest deeper than ${MAX_DEPTH} at ${where}`, { input: `dirtree ${treeChecksum}` });
    const tree = repo.dirtree(treeChecksum);
    entries += tree.files.length + tree.dirs.length;
    if (entries > maxEntries) throw new CfsError(ErrorCode.TooLarge, `the commit expands to more than ${maxEntries} entries`, { input: `dirtree ${treeChecksum}` });
    const children = dir.children!;
    // Both lists are sorted; merge them into one sorted list of children.
    let i = 0;
    let j = 0;
    while (i < tree.files.length || j < tree.dirs.length) {
      if (j >= tree.dirs.length || (i < tree.files.length && tree.files[i].name < tree.dirs[j].name)) {
        const f = tree.files[i++];
        let c = contents.get(f.checksum);
        if (!c) contents.set(f.checksum, (c = repo.content(f.checksum)));
        const inode = newInode(c.mode, { uid: c.uid, gid: c.gid, size: c.size, xattrs: xattrs(c) });
        if (c.target !== null) inode.payload = c.target;
        else {
          files++;
          bytes += c.size;
          if (c.size > 0) {
            const w = wanted.get(f.checksum);
            if (w) w.inodes.push(inode);
            else wanted.set(f.checksum, { content: c, inodes: [inode] });
          }
        }
        children.push({ name: f.name, inode, link: false });
      } else {
        const d = tree.dirs[j++];
        const inode = dirInode(repo.dirmeta(d.meta));
        children.push({ name: d.name, inode, link: false });
        stack.push([inode, d.tree, depth + 1, `${where}/${d.name}`]);
      }
    }
  }
  if (opts.deployment) {
    for (const name of DEPLOYMENT_DIRS) {
      if (!root.children!.some((d) => d.name === name)) {
        root.children!.push({ name, inode: newInode(S_IFDIR | 0o755), link: false });
      }
    }
    root.children!.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return { root, entries, files, bytes, wanted };
}

/**
 * Inflate an archive object's content: its fs-verity digest, written to `dest` too when given.
 * The content must be exactly the size its header says.
 */
async function inflateObject(c: Content, dest: string | null): Promise<string> {
  const input = `content object ${Repo.relPath(c.checksum, 'filez')}`;
  const bad = (msg: string): never => {
    throw new CfsError(ErrorCode.BadObject, msg, { input });
  };
  const hasher = new FsVerityHasher();
  let total = 0;
  const fd = dest ? fs.openSync(dest, 'wx', 0o644) : -1;
  const take = (chunk: Buffer): void => {
    total += chunk.length;
    if (total > c.size) bad(`content is larger than the ${c.size} bytes its header says`);
    hasher.update(chunk);
    if (fd >= 0) for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off, chunk.length - off);
  };
  try {
    const compressed = fs.statSync(c.file).size - c.dataOffset;
    if (compressed <= INFLATE_AT_ONCE) {
      const raw = Buffer.alloc(compressed);
      const rfd = fs.openSync(c.file, 'r');
      try {
        fs.readSync(rfd, raw, 0, compressed, c.dataOffset);
      } finally {
        fs.closeSync(rfd);
      }
      let out: Buffer;
      try {
        out = zlib.inflateRawSync(raw, { maxOutputLength: c.size + 1 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') bad(`content is larger than the ${c.size} bytes its header says`);
        return bad(`corrupt compressed content: ${(e as Error).message}`);
      }
      take(out);
    } else {
      // pipeline() may reject with the AbortError of another stage: keep our own error
      let ours: unknown = null;
      try {
        await pipeline(fs.createReadStream(c.file, { start: c.dataOffset, highWaterMark: 1 << 20 }), zlib.createInflateRaw(), async (chunks: AsyncIterable<Buffer>) => {
          for await (const chunk of chunks) {
            try {
              take(chunk);
            } catch (e) {
              throw (ours = e);
            }
          }
        });
      } catch (e) {
        if (ours) throw ours;
        bad(`corrupt compressed content: ${(e as Error).message}`);
      }
    }
    if (total !== c.size) bad(`content is ${total} bytes, its header says ${c.size}`);
    return hasher.digest().toString('hex');
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
