/**
 * A cpio archive in the "newc" format the kernel unpacks as its initramfs. Built in memory, so
 * device nodes (/dev/console) need no root and no mknod on the host. Parent directories are added
 * on demand; entries keep the order they were added in.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export class Cpio {
  private parts: Buffer[] = [];
  private names = new Set<string>();
  private ino = 1;
  private length = 0;

  private entry(name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void {
    const rel = name.replace(/^\/+/, '');
    if (this.names.has(rel)) throw new Error(`initramfs: ${rel} added twice`);
    const parent = path.posix.dirname(rel);
    if (parent !== '.' && !this.names.has(parent)) this.dir(parent);
    this.names.add(rel);
    const fields = [this.ino++, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], Buffer.byteLength(rel) + 1, 0];
    this.push(Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('') + `${rel}\0`, 'latin1'));
    this.push(data);
  }

  /** Append, padded to the 4-byte alignment newc wants after header + name and after the data. */
  private push(b: Buffer): void {
    const pad = (4 - ((this.length + b.length) % 4)) % 4;
    this.parts.push(b, Buffer.alloc(pad));
    this.length += b.length + pad;
  }

  has(name: string): boolean {
    return this.names.has(name.replace(/^\/+/, ''));
  }

  dir(name: string, mode = 0o755): this {
    this.entry(name, S_IFDIR | mode, Buffer.alloc(0));
    return this;
  }

  file(name: string, data: Buffer | string, mode = 0o644): this {
    this.entry(name, S_IFREG | mode, Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1'));
    return this;
  }

  symlink(name: string, target: string): this {
    this.entry(name, S_IFLNK | 0o777, Buffer.from(target, 'latin1'));
    return this;
  }

  chardev(name: string, major: number, minor: number, mode = 0o600): this {
    this.entry(name, S_IFCHR | mode, Buffer.alloc(0), [major, minor]);
    return this;
  }

  /** A host directory's regular files, directories and symlinks, under `name`. */
  tree(name: string, hostDir: string): this {
    if (!this.has(name)) this.dir(name);
    for (const e of fs.readdirSync(hostDir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const src = path.join(hostDir, e.name);
      const dst = path.posix.join(name, e.name);
      if (e.isDirectory()) this.tree(dst, src);
      else if (e.isSymbolicLink()) this.symlink(dst, fs.readlinkSync(src));
      else if (e.isFile()) this.file(dst, fs.readFileSync(src), fs.statSync(src).mode & 0o7777);
      else throw new Error(`initramfs: ${src}: only files, directories and symlinks can be packed`);
    }
    return this;
  }

  /** The archive with its trailer, gzip-compressed (the kernel also takes it plain). */
  finish(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0));
    return zlib.gzipSync(Buffer.concat(this.parts), { level: 1 });
  }
}
