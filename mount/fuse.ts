/**
 * The FUSE view of an image, for mounts without root: a read-only file system served straight
 * over /dev/fuse (no libfuse), from the decoded image tree. Regular files read from their store
 * objects (the payload is a path relative to each base directory, tried in order) or from the
 * inline content in the image. Lazy: an object is opened when its file is opened and closed on
 * release. Inode numbers are the tree's breadth-first order (root = 1), so they are the same on
 * every mount of the image. Overlay internals (trusted.overlay.*) are not shown as xattrs.
 * A missing or unreadable object makes opening that file fail with EIO and logs one line.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { type Inode, S_IFDIR, S_IFMT, S_IFREG, findChild } from '../format/index.js';
import { fuseMount, fuseUnmount, rawClose, rawOpen } from './fuse-dev.js';
import { CfsError, ErrorCode } from '../format/index.js';
import {
  ATTR,
  ATTR_OUT,
  DIRENT,
  ENTRY_OUT,
  Errno,
  FOPEN_CACHE_DIR,
  FOPEN_KEEP_CACHE,
  FUSE_KERNEL_MINOR,
  FUSE_KERNEL_VERSION,
  FUSE_ROOT_ID,
  GETXATTR_IN,
  GETXATTR_OUT,
  IN_HEADER,
  INIT_IN,
  INIT_OUT,
  Init,
  KSTATFS,
  OPEN_IN,
  OPEN_OUT,
  OUT_HEADER,
  Op,
  READ_IN,
  RELEASE_IN,
  direntSize,
} from './fuse-proto.js';

/** Seconds the kernel may cache names and attributes: the image never changes. */
const VALID = 365 * 86400;
const MAX_WRITE = 128 * 1024;
const MAX_PAGES = 256;
const OVERLAY_XATTRS = 'trusted.overlay.';

export interface FuseServeOptions {
  /** The image file. */
  image: string;
  /** Object directories, tried in order. */
  basedirs: string[];
  target: string;
  /** One line per problem (missing objects, protocol errors). */
  log: (line: string) => void;
  /** Called once the kernel has connected (the mount is usable). */
  onReady?: () => void;
}

interface Node {
  inode: Inode;
  parent: number;
  /** First name (latin1 bytes), for log lines. */
  name: string;
}

/** The decoded tree with node ids: nodes[id], id 1 = root, hardlinks share one id. */
export class ImageView {
  readonly nodes: Node[] = [];
  readonly ids = new Map<Inode, number>();
  constructor(root: Inode) {
    this.nodes[FUSE_ROOT_ID] = { inode: root, parent: FUSE_ROOT_ID, name: '' };
    this.ids.set(root, FUSE_ROOT_ID);
    const queue = [FUSE_ROOT_ID];
    for (let q = 0; q < queue.length; q++) {
      const dirId = queue[q];
      for (const d of this.nodes[dirId].inode.children!) {
        if (this.ids.has(d.inode)) continue;
        const id = this.nodes.length;
        this.nodes.push({ inode: d.inode, parent: dirId, name: d.name });
        this.ids.set(d.inode, id);
        if (d.inode.children) queue.push(id);
      }
    }
  }
  pathOf(id: number): string {
    const parts: string[] = [];
    for (let n = id; n !== FUSE_ROOT_ID; n = this.nodes[n].parent) parts.push(this.nodes[n].name);
    return '/' + parts.reverse().join('/');
  }
}

const visibleXattrs = (inode: Inode) => inode.xattrs.filter((x) => !x.key.startsWith(OVERLAY_XATTRS));

function fillAttr(b: Buffer, off: number, id: number, inode: Inode): void {
  b.writeBigUInt64LE(BigInt(id), off + ATTR.ino);
  b.writeBigUInt64LE(BigInt(inode.size), off + ATTR.size);
  b.writeBigUInt64LE(BigInt(Math.ceil(inode.size / 512)), off + ATTR.blocks);
  const sec = BigInt.asUintN(64, inode.mtimeSec);
  b.writeBigUInt64LE(sec, off + ATTR.atime);
  b.writeBigUInt64LE(sec, off + ATTR.mtime);
  b.writeBigUInt64LE(sec, off + ATTR.ctime);
  b.writeUInt32LE(inode.mtimeNsec, off + ATTR.atimensec);
  b.writeUInt32LE(inode.mtimeNsec, off + ATTR.mtimensec);
  b.writeUInt32LE(inode.mtimeNsec, off + ATTR.ctimensec);
  b.writeUInt32LE(inode.mode, off + ATTR.mode);
  b.writeUInt32LE(inode.nlink, off + ATTR.nlink);
  b.writeUInt32LE(inode.uid, off + ATTR.uid);
  b.writeUInt32LE(inode.gid, off + ATTR.gid);
  b.writeUInt32LE(inode.rdev, off + ATTR.rdev);
  b.writeUInt32LE(4096, off + ATTR.blksize);
  b.writeUInt32LE(0, off + ATTR.flags);
}

function fillEntry(b: Buffer, off: number, id: number, inode: Inode): void {
  b.writeBigUInt64LE(BigInt(id), off + ENTRY_OUT.nodeid);
  b.writeBigUInt64LE(0n, off + ENTRY_OUT.generation);
  b.writeBigUInt64LE(BigInt(VALID), off + ENTRY_OUT.entryValid);
  b.writeBigUInt64LE(BigInt(VALID), off + ENTRY_OUT.attrValid);
  b.writeUInt32LE(0, off + ENTRY_OUT.entryValidNsec);
  b.writeUInt32LE(0, off + ENTRY_OUT.attrValidNsec);
  fillAttr(b, off + ENTRY_OUT.attr, id, inode);
}

/** A store-relative payload must stay inside its base directory, as overlayfs lookups do. */
const safePayload = (p: string): boolean => p.split('/').every((c) => c !== '..' && c !== '.');

const ENOENT = Errno.ENOENT;
/** Linux (x86-64, aarch64); Node's fs.constants lacks it. */
const O_CLOEXEC = 0o2000000;
const errnoName = (n: number): string => Object.entries(os.constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;

/** File handles at and above this are inline contents: fh - INLINE_FH is the node id. Below: object fds. */
const INLINE_FH = 2 ** 32;

/**
 * The request handlers, synchronous: each request is answered before the next is read, so a
 * server thread is woken once per request, as squashfuse is. Object fds are the file handles,
 * so any server thread can read and release what another opened.
 */
export class FuseServer {
  private readonly logged = new Set<number>();
  constructor(
    private readonly view: ImageView,
    private readonly basedirs: string[],
    private readonly devFd: number,
    private readonly log: (line: string) => void,
  ) {}

  private send(b: Buffer): void {
    try {
      fs.writeSync(this.devFd, b, 0, b.length);
    } catch (e) {
      // ENOENT: the request was interrupted meanwhile; ENODEV: unmounted
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') this.log(`writing a FUSE reply failed: ${code}`);
    }
  }

  private reply(unique: bigint, error: number, body?: Buffer): void {
    const out = Buffer.allocUnsafe(OUT_HEADER.SIZE + (body?.length ?? 0));
    out.writeUInt32LE(out.length, OUT_HEADER.len);
    out.writeInt32LE(-error, OUT_HEADER.error);
    out.writeBigUInt64LE(unique, OUT_HEADER.unique);
    body?.copy(out, OUT_HEADER.SIZE);
    this.send(out);
  }

  /** Reply with a buffer that has room for the out header at its start. */
  private replyRaw(unique: bigint, out: Buffer, len: number): void {
    out.writeUInt32LE(len, OUT_HEADER.len);
    out.writeInt32LE(0, OUT_HEADER.error);
    out.writeBigUInt64LE(unique, OUT_HEADER.unique);
    this.send(len === out.length ? out : out.subarray(0, len));
  }

  /** Handle one request; returns false when the kernel ends the session (DESTROY). */
  handle(req: Buffer): boolean {
    const opcode = req.readUInt32LE(IN_HEADER.opcode);
    const unique = req.readBigUInt64LE(IN_HEADER.unique);
    try {
      return this.dispatch(opcode, unique, req);
    } catch (e) {
      this.log(`request ${opcode} failed: ${(e as Error).message}`);
      this.reply(unique, Errno.EIO);
      return true;
    }
  }

  private dispatch(opcode: number, unique: bigint, req: Buffer): boolean {
    const nodeid = Number(req.readBigUInt64LE(IN_HEADER.nodeid));
    const body = req.subarray(IN_HEADER.SIZE, req.readUInt32LE(IN_HEADER.len));
    switch (opcode) {
      case Op.INIT:
        this.init(unique, body);
        return true;
      case Op.FORGET:
      case Op.BATCH_FORGET:
      case Op.INTERRUPT:
        return true; // no reply; nodes live as long as the mount
      case Op.DESTROY:
        this.reply(unique, 0);
        return false;
      case Op.STATFS: {
        const b = Buffer.alloc(KSTATFS.SIZE);
        b.writeBigUInt64LE(BigInt(this.view.nodes.length - 1), KSTATFS.files);
        b.writeUInt32LE(4096, KSTATFS.bsize);
        b.writeUInt32LE(255, KSTATFS.namelen);
        b.writeUInt32LE(4096, KSTATFS.frsize);
        this.reply(unique, 0, b);
        return true;
      }
      case Op.READ:
        this.read(unique, Number(body.readBigUInt64LE(READ_IN.fh)), Number(body.readBigUInt64LE(READ_IN.offset)), body.readUInt32LE(READ_IN.size));
        return true;
      case Op.RELEASE: {
        const fh = Number(body.readBigUInt64LE(RELEASE_IN.fh));
        if (fh < INLINE_FH) rawClose(fh);
        this.reply(unique, 0);
        return true;
      }
      case Op.RELEASEDIR:
        this.reply(unique, 0);
        return true;
      case Op.FLUSH:
        this.reply(unique, Errno.ENOSYS); // nothing to flush: the kernel stops sending it (one round trip less per close)
        return true;
    }
    const node = this.view.nodes[nodeid];
    if (!node) {
      this.reply(unique, Errno.ENOENT);
      return true;
    }
    const inode = node.inode;
    switch (opcode) {
      case Op.LOOKUP: {
        const name = cString(body);
        const i = inode.children ? findChild(inode.children, name) : -1;
        const out = Buffer.alloc(ENTRY_OUT.SIZE);
        if (i >= 0) {
          const child = inode.children![i].inode;
          fillEntry(out, 0, this.view.ids.get(child)!, child);
        } else {
          out.writeBigUInt64LE(BigInt(VALID), ENTRY_OUT.entryValid); // nodeid 0: a cached negative entry
        }
        this.reply(unique, 0, out);
        break;
      }
      case Op.GETATTR: {
        const out = Buffer.alloc(ATTR_OUT.SIZE);
        out.writeBigUInt64LE(BigInt(VALID), ATTR_OUT.attrValid);
        fillAttr(out, ATTR_OUT.attr, nodeid, inode);
        this.reply(unique, 0, out);
        break;
      }
      case Op.READLINK:
        this.reply(unique, 0, Buffer.from(inode.payload ?? '', 'latin1'));
        break;
      case Op.OPEN:
        this.open(unique, nodeid, inode, body.readUInt32LE(OPEN_IN.flags));
        break;
      case Op.OPENDIR: {
        if ((inode.mode & S_IFMT) !== S_IFDIR) return this.reply(unique, Errno.ENOTDIR), true;
        const out = Buffer.alloc(OPEN_OUT.SIZE);
        out.writeUInt32LE(FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, OPEN_OUT.openFlags);
        this.reply(unique, 0, out);
        break;
      }
      case Op.READDIR:
      case Op.READDIRPLUS:
        this.readdir(unique, nodeid, node, Number(body.readBigUInt64LE(READ_IN.offset)), body.readUInt32LE(READ_IN.size), opcode === Op.READDIRPLUS);
        break;
      case Op.GETXATTR: {
        const size = body.readUInt32LE(GETXATTR_IN.size);
        const name = cString(body.subarray(GETXATTR_IN.SIZE));
        const x = name.startsWith(OVERLAY_XATTRS) ? undefined : inode.xattrs.find((e) => e.key === name);
        if (!x) this.reply(unique, Errno.ENODATA);
        else this.sized(unique, size, Buffer.from(x.value, 'latin1'));
        break;
      }
      case Op.LISTXATTR: {
        const names = visibleXattrs(inode).map((x) => x.key + '\0').join('');
        this.sized(unique, body.readUInt32LE(GETXATTR_IN.size), Buffer.from(names, 'latin1'));
        break;
      }
      default:
        this.reply(unique, Errno.ENOSYS);
    }
    return true;
  }

  private init(unique: bigint, body: Buffer): void {
    const major = body.readUInt32LE(INIT_IN.major);
    if (major !== FUSE_KERNEL_VERSION) {
      this.log(`FUSE protocol ${major}.x is not supported (need ${FUSE_KERNEL_VERSION}.x)`);
      return this.reply(unique, Errno.EPROTO);
    }
    const want = Init.ASYNC_READ | Init.DO_READDIRPLUS | Init.PARALLEL_DIROPS | Init.POSIX_ACL | Init.MAX_PAGES | Init.CACHE_SYMLINKS;
    const out = Buffer.alloc(INIT_OUT.SIZE);
    out.writeUInt32LE(FUSE_KERNEL_VERSION, INIT_OUT.major);
    out.writeUInt32LE(FUSE_KERNEL_MINOR, INIT_OUT.minor);
    out.writeUInt32LE(body.readUInt32LE(INIT_IN.maxReadahead), INIT_OUT.maxReadahead);
    out.writeUInt32LE((want & body.readUInt32LE(INIT_IN.flags)) >>> 0, INIT_OUT.flags);
    out.writeUInt16LE(16, INIT_OUT.maxBackground);
    out.writeUInt16LE(12, INIT_OUT.congestionThreshold);
    out.writeUInt32LE(MAX_WRITE, INIT_OUT.maxWrite);
    out.writeUInt32LE(1, INIT_OUT.timeGran);
    out.writeUInt16LE(MAX_PAGES, INIT_OUT.maxPages);
    this.reply(unique, 0, out);
  }

  /** GETXATTR/LISTXATTR answer: the size when asked for it (size 0), ERANGE when it does not fit. */
  private sized(unique: bigint, size: number, data: Buffer): void {
    if (size === 0) {
      const out = Buffer.alloc(GETXATTR_OUT.SIZE);
      out.writeUInt32LE(data.length, GETXATTR_OUT.size);
      this.reply(unique, 0, out);
    } else if (data.length > size) this.reply(unique, Errno.ERANGE);
    else this.reply(unique, 0, data);
  }

  private opened(unique: bigint, fh: number): void {
    const out = Buffer.alloc(OPEN_OUT.SIZE);
    out.writeBigUInt64LE(BigInt(fh), OPEN_OUT.fh);
    out.writeUInt32LE(FOPEN_KEEP_CACHE, OPEN_OUT.openFlags);
    this.reply(unique, 0, out);
  }

  private open(unique: bigint, id: number, inode: Inode, flags: number): void {
    if ((flags & 3) !== fs.constants.O_RDONLY) return this.reply(unique, Errno.EROFS);
    const payload = inode.payload;
    if ((inode.mode & S_IFMT) !== S_IFREG || inode.content !== null || !payload || inode.size === 0) return this.opened(unique, INLINE_FH + id);
    const fail = (why: string): void => {
      if (!this.logged.has(id)) {
        this.logged.add(id);
        this.log(`${this.view.pathOf(id)}: ${why}; reading it gives EIO`);
      }
      this.reply(unique, Errno.EIO);
    };
    if (!safePayload(payload)) return fail(`object path ${JSON.stringify(payload)} leaves the base directory`);
    const rel = payload.replace(/^\/+/, '');
    const relBuf = Buffer.from(rel, 'latin1');
    for (const base of this.basedirs) {
      const fd = rawOpen(Buffer.concat([Buffer.from(base + '/'), relBuf]), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) return this.opened(unique, fd);
      if (fd !== -ENOENT && fd !== -Errno.ENOTDIR) return fail(`object ${rel} in ${base}: ${errnoName(-fd)}`);
    }
    fail(`object ${rel} not found in ${this.basedirs.join(', ')}`);
  }

  private read(unique: bigint, fh: number, offset: number, size: number): void {
    const out = Buffer.allocUnsafe(OUT_HEADER.SIZE + size);
    if (fh >= INLINE_FH) {
      const content = Buffer.from(this.view.nodes[fh - INLINE_FH]?.inode.content ?? '', 'latin1');
      const n = offset < content.length ? content.copy(out, OUT_HEADER.SIZE, offset, Math.min(content.length, offset + size)) : 0;
      return this.replyRaw(unique, out, OUT_HEADER.SIZE + n);
    }
    let n: number;
    try {
      n = fs.readSync(fh, out, OUT_HEADER.SIZE, size, offset);
    } catch (e) {
      this.log(`reading an object failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return this.reply(unique, Errno.EIO);
    }
    this.replyRaw(unique, out, OUT_HEADER.SIZE + n);
  }

  /** Entries are ".", "..", then the children in image order; the offset cookie is the next index. */
  private readdir(unique: bigint, id: number, node: Node, offset: number, size: number, plus: boolean): void {
    const children = node.inode.children;
    if (!children) return this.reply(unique, Errno.ENOTDIR);
    const out = Buffer.alloc(OUT_HEADER.SIZE + size);
    let pos = OUT_HEADER.SIZE;
    const total = children.length + 2;
    for (let i = offset; i < total; i++) {
      const name = i === 0 ? '.' : i === 1 ? '..' : children[i - 2].name;
      const inode = i === 0 ? node.inode : i === 1 ? this.view.nodes[node.parent].inode : children[i - 2].inode;
      const childId = i === 0 ? id : i === 1 ? node.parent : this.view.ids.get(inode)!;
      const len = (plus ? ENTRY_OUT.SIZE : 0) + direntSize(name.length);
      if (pos + len > out.length) break;
      // "." and ".." carry no entry (nodeid 0): the kernel does not look them up
      if (plus && i >= 2) fillEntry(out, pos, childId, inode);
      const d = pos + (plus ? ENTRY_OUT.SIZE : 0);
      out.writeBigUInt64LE(BigInt(childId), d + DIRENT.ino);
      out.writeBigUInt64LE(BigInt(i + 1), d + DIRENT.off);
      out.writeUInt32LE(name.length, d + DIRENT.namelen);
      out.writeUInt32LE((inode.mode & S_IFMT) >>> 12, d + DIRENT.type);
      out.write(name, d + DIRENT.SIZE, 'latin1');
      pos += len;
    }
    this.replyRaw(unique, out, pos);
  }
}

const cString = (b: Buffer): string => {
  const end = b.indexOf(0);
  return b.toString('latin1', 0, end < 0 ? b.length : end);
};

/** Server threads: each blocks in read(2) on /dev/fuse, so a slow disk read does not stall the rest. */
const THREADS = 2;

type WorkerMessage =
  | { loaded: true }
  | { decoded: true }
  | { error: { code?: ErrorCode; message: string; offset?: number } }
  | { log: string }
  | { ready: true }
  | { end: string | null };

/**
 * Decode the image, mount it at `target` and serve until it is unmounted (fusermount3 -u,
 * SIGINT, SIGTERM). Image errors are thrown before anything is mounted.
 */
export async function serveFuse(o: FuseServeOptions): Promise<void> {
  const workers: Worker[] = [];
  const ended: Promise<void>[] = [];
  let devFd = -1;
  const stop = (): void => void fuseUnmount(o.target, true);
  // every thread reports a missing object it meets: one line for all of them
  const logged = new Set<string>();
  const logOnce = (line: string): void => {
    if (!logged.has(line)) o.log(line);
    logged.add(line);
  };
  try {
    // each thread decodes the image for itself (a failure here mounts nothing)
    const decoded: Promise<void>[] = [];
    for (let i = 0; i < THREADS; i++) {
      // one thread at a time loads its modules: koffi can crash loading in two threads at once
      let loadedDone!: () => void;
      const loaded = new Promise<void>((res) => (loadedDone = res));
      const w = new Worker(new URL('./fuse-worker.js', import.meta.url), { workerData: { image: o.image, basedirs: o.basedirs, bufSize: MAX_WRITE + 4096 } });
      workers.push(w);
      let decodedDone!: () => void;
      let decodeFailed!: (e: Error) => void;
      const isDecoded = new Promise<void>((res, rej) => ((decodedDone = res), (decodeFailed = rej)));
      isDecoded.catch(() => {}); // awaited below, after the other threads have started
      decoded.push(isDecoded);
      ended.push(
        new Promise((resolve, reject) => {
          w.on('error', (e) => (loadedDone(), decodeFailed(e), reject(e)));
          w.on('exit', () => (loadedDone(), resolve()));
          w.on('message', (m: WorkerMessage) => {
            if ('loaded' in m) loadedDone();
            else if ('decoded' in m) decodedDone();
            else if ('error' in m) decodeFailed(new CfsError(m.error.code ?? ErrorCode.Io, m.error.message, { input: o.image, offset: m.error.offset }));
            else if ('log' in m) logOnce(m.log);
            else if ('ready' in m) o.onReady?.();
            else if (m.end) o.log(`reading /dev/fuse failed: ${m.end}`);
          });
        }),
      );
      await loaded;
    }
    await Promise.all(decoded);
    const fsname = 'composefs:' + path.basename(o.image).replace(/[^\w.+-]/g, '_');
    devFd = fuseMount(o.target, ['ro', 'nosuid', 'nodev', 'default_permissions', `fsname=${fsname}`, 'subtype=composefs']);
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    for (const w of workers) w.postMessage({ devFd });
    await Promise.all(ended);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await Promise.all(workers.map((w) => w.terminate()));
    if (devFd >= 0) fs.closeSync(devFd);
  }
}
