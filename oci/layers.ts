/**
 * Container layers: decompress a layer blob (tar, gzip, zstd) on the fly, and merge the trees
 * of a stack of layers with OCI whiteout rules: `.wh.NAME` deletes NAME from the layers below,
 * `.wh..wh..opq` in a directory hides everything below it in that directory; a whiteout never
 * affects its own layer.
 */
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { settleHardlinks } from '../cas/tar.js';
import { ZstdWindowGuard } from '../cas/zstd.js';
import { CfsError, ErrorCode, S_IFDIR, addChild, findChild, isDir, newInode, type Inode } from '../format/index.js';

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

export type Compression = 'none' | 'gzip' | 'zstd';

export function layerCompression(mediaType: string, input: string): Compression {
  if (/^application\/vnd\.oci\.image\.layer\.(?:nondistributable\.)?v1\.tar$/.test(mediaType)) return 'none';
  if (/^application\/vnd\.oci\.image\.layer\.(?:nondistributable\.)?v1\.tar\+gzip$/.test(mediaType)) return 'gzip';
  if (/^application\/vnd\.oci\.image\.layer\.(?:nondistributable\.)?v1\.tar\+zstd$/.test(mediaType)) return 'zstd';
  if (/^application\/vnd\.docker\.image\.rootfs\.(?:foreign\.)?diff\.tar\.gzip$/.test(mediaType)) return 'gzip';
  throw new CfsError(ErrorCode.Unsupported, `unsupported layer media type ${JSON.stringify(mediaType)}`, { input });
}

export function decompressor(c: Compression): Transform | null {
  if (c === 'gzip') return createGunzip({ chunkSize: 1 << 16 });
  if (c === 'zstd') return new ZstdDecompress();
  return null;
}

/** zstd via fzstd (pure JS: Node 20 has no zstd), refusing windows above zstd's default limit. */
class ZstdDecompress extends Transform {
  private readonly guard = new ZstdWindowGuard();
  private readonly d = new Decompress((data) => {
    this.push(Buffer.from(data));
  });
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.guard.feed(chunk);
      this.d.push(chunk);
    } catch (e) {
      return cb(new Error(`bad zstd data: ${(e as Error).message}`));
    }
    cb();
  }
  override _flush(cb: TransformCallback): void {
    try {
      this.d.push(new Uint8Array(0), true);
    } catch (e) {
      return cb(new Error(`truncated or bad zstd data: ${(e as Error).message}`));
    }
    cb();
  }
}

/**
 * Layer importers create parents a tar does not list as plain 0755 root directories with mtime 0;
 * such a directory leaves the metadata of the layers below it alone.
 */
const looksImplicit = (d: Inode): boolean =>
  d.mode === (S_IFDIR | 0o755) && d.uid === 0 && d.gid === 0 && d.mtimeSec === 0n && d.mtimeNsec === 0 && d.xattrs.length === 0;

function takeMetadata(dst: Inode, src: Inode): void {
  if (looksImplicit(src)) return;
  dst.mode = src.mode;
  dst.uid = src.uid;
  dst.gid = src.gid;
  dst.mtimeSec = src.mtimeSec;
  dst.mtimeNsec = src.mtimeNsec;
  dst.xattrs = src.xattrs.slice();
}

/** The merged root filesystem of layer trees, lowest first; inodes are shared, not copied. */
export function mergeLayers(layers: Inode[]): Inode {
  const root = newInode(S_IFDIR | 0o755);
  for (const l of layers) applyLayer(root, l);
  settleHardlinks(root);
  return root;
}

function applyLayer(dst: Inode, src: Inode): void {
  takeMetadata(dst, src);
  const kids = src.children!;
  if (findChild(kids, OPAQUE) >= 0) dst.children = [];
  for (const c of kids) {
    if (!c.name.startsWith(WH)) continue;
    if (c.name.startsWith(`${WH}${WH}`)) continue; // .wh..wh..opq and aufs bookkeeping
    const i = findChild(dst.children!, c.name.slice(WH.length));
    if (i >= 0) dst.children!.splice(i, 1);
  }
  for (const c of kids) {
    if (c.name.startsWith(WH)) continue;
    const i = findChild(dst.children!, c.name);
    const below = i >= 0 ? dst.children![i].inode : null;
    if (isDir(c.inode)) {
      if (below && isDir(below)) {
        applyLayer(below, c.inode);
        continue;
      }
      // A directory replacing a file (or new): its whiteouts have nothing below them to hide.
      const d = newInode(c.inode.mode);
      applyLayer(d, c.inode);
      put(dst, { name: c.name, inode: d, link: false }, i);
      continue;
    }
    put(dst, { name: c.name, inode: c.inode, link: c.link }, i);
  }
}

function put(dir: Inode, d: { name: string; inode: Inode; link: boolean }, i: number): void {
  if (i >= 0) dir.children![i] = d;
  else addChild(dir, d);
}
