/**
 * Reading an OSTree repository directly: config, refs, and the objects under
 * objects/XX/REST.{commit,dirtree,dirmeta,file,filez} in every repo mode.
 *
 *   bare            .file is the real file (owner, mode, xattrs) or a real symlink
 *   bare-user       .file is a regular file; uid/gid/mode/xattrs in its `user.ostreemeta` xattr;
 *                   a symlink's target is the file content (plus a trailing NUL)
 *   bare-user-only  real files and symlinks; uid = gid = 0, no xattrs
 *   archive         .filez: header length, 4 zero bytes, header, raw deflate content
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfsError, ErrorCode } from '../format/errors.js';
import { PATH_MAX, S_IFLNK, S_IFMT, S_IFREG } from '../format/layout.js';
import type { Xattr } from '../format/tree.js';
import { readXattrs } from '../cas/xattrs.js';
import {
  type Commit,
  type Dirtree,
  type Meta,
  type ObjectKind,
  FILEZ_PREFIX,
  checkFileMode,
  filezHeaderLength,
  parseArchiveHeader,
  parseCommit,
  parseDirmeta,
  parseDirtree,
  parseOstreemeta,
} from './objects.js';

export type RepoMode = 'bare' | 'bare-user' | 'bare-user-only' | 'archive';

/** Largest commit/dirtree/dirmeta object read (ostree's OSTREE_MAX_METADATA_SIZE). */
export const MAX_METADATA_SIZE = 128 << 20;
/** Largest archive content header (uid, gid, mode, symlink target, xattrs). */
export const MAX_HEADER_SIZE = 1 << 20;
const OSTREEMETA = 'user.ostreemeta';

const HEX64 = /^[0-9a-f]{64}$/;

/** A content object: its metadata and where its bytes are. */
export interface Content extends Meta {
  checksum: string;
  /** Content size (symlinks: the target length). */
  size: number;
  /** Symlink target (latin1 bytes), null for regular files. */
  target: string | null;
  /** The object file. */
  file: string;
  /** archive: where the raw deflate stream starts in `file`; else 0. */
  dataOffset: number;
}

const fail = (code: (typeof ErrorCode)[keyof typeof ErrorCode], msg: string, input?: string): never => {
  throw new CfsError(code, msg, { input });
};

export class Repo {
  readonly objectsDir: string;
  private readonly metas = new Map<string, Meta>();
  private readonly trees = new Map<string, Dirtree>();

  private constructor(
    readonly root: string,
    readonly mode: RepoMode,
    /** Recompute commit, dirtree and dirmeta checksums. */
    readonly verify: boolean,
  ) {
    this.objectsDir = path.join(root, 'objects');
  }

  static open(dir: string, opts: { verify?: boolean } = {}): Repo {
    const root = path.resolve(dir);
    let config: string;
    try {
      config = fs.readFileSync(path.join(root, 'config'), 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') fail(ErrorCode.Io, 'not an OSTree repository (no config file)', root);
      throw e;
    }
    const core = iniSection(config, 'core');
    if (core.get('repo_version') !== '1') fail(ErrorCode.Unsupported, `unsupported repo_version ${JSON.stringify(core.get('repo_version') ?? null)}`, root);
    const raw = core.get('mode') ?? 'bare';
    const mode: RepoMode | undefined = raw === 'archive-z2' || raw === 'archive' ? 'archive' : raw === 'bare' || raw === 'bare-user' || raw === 'bare-user-only' ? raw : undefined;
    if (!mode) return fail(ErrorCode.Unsupported, `unsupported repo mode ${JSON.stringify(raw)}`, root);
    if (!fs.statSync(path.join(root, 'objects'), { throwIfNoEntry: false })?.isDirectory()) fail(ErrorCode.Io, 'not an OSTree repository (no objects directory)', root);
    return new Repo(root, mode, opts.verify ?? true);
  }

  /** objects/XX/REST.kind, relative to objects/. */
  static relPath(checksum: string, kind: ObjectKind): string {
    return `${checksum.slice(0, 2)}/${checksum.slice(2)}.${kind}`;
  }

  objectPath(checksum: string, kind: ObjectKind): string {
    return path.join(this.objectsDir, Repo.relPath(checksum, kind));
  }

  /** Every ref: `NAME` for refs/heads/NAME, `REMOTE:NAME` for refs/remotes/REMOTE/NAME; sorted. */
  refs(): Map<string, string> {
    const out = new Map<string, string>();
    const walk = (dir: string, prefix: string, name: (rel: string) => string): void => {
      let ents: fs.Dirent[];
      try {
        ents = fs.readdirSync(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      for (const e of ents.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const rel = prefix ? `${prefix}/${e.name}` : e.name;
        if (e.isDirectory()) walk(path.join(dir, e.name), rel, name);
        else out.set(name(rel), this.readRefFile(path.join(dir, e.name)));
      }
    };
    walk(path.join(this.root, 'refs', 'heads'), '', (r) => r);
    const remotes = path.join(this.root, 'refs', 'remotes');
    for (const remote of safeReaddir(remotes)) walk(path.join(remotes, remote), '', (r) => `${remote}:${r}`);
    return new Map([...out].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  }

  private readRefFile(file: string): string {
    let text: string;
    try {
      text = fs.readFileSync(file, 'latin1');
    } catch (e) {
      return fail(ErrorCode.Io, `cannot read ref: ${(e as Error).message}`, file);
    }
    const c = text.trim();
    if (!HEX64.test(c)) fail(ErrorCode.BadObject, 'ref file does not hold a commit checksum', file);
    return c;
  }

  /** A 64-hex commit checksum, a ref (`NAME` or `REMOTE:NAME`), or a unique checksum prefix of 4+ hex digits. */
  resolve(spec: string): string {
    if (HEX64.test(spec)) return spec;
    const colon = spec.indexOf(':');
    const [base, name] = colon >= 0 ? [path.join('refs', 'remotes', spec.slice(0, colon)), spec.slice(colon + 1)] : [path.join('refs', 'heads'), spec];
    const parts = name.split('/');
    const valid = parts.every((p) => p !== '' && p !== '.' && p !== '..' && !p.includes('\0')) && (colon < 0 || /^[^/\0]+$/.test(spec.slice(0, colon)) && !['.', '..'].includes(spec.slice(0, colon)));
    if (valid) {
      const file = path.join(this.root, base, ...parts);
      if (fs.statSync(file, { throwIfNoEntry: false })?.isFile()) return this.readRefFile(file);
    }
    if (/^[0-9a-f]{4,63}$/.test(spec)) {
      const hits = safeReaddir(path.join(this.objectsDir, spec.slice(0, 2)))
        .filter((f) => f.endsWith('.commit') && f.startsWith(spec.slice(2)))
        .map((f) => spec.slice(0, 2) + f.slice(0, -'.commit'.length));
      if (hits.length === 1) return hits[0];
      if (hits.length > 1) fail(ErrorCode.Usage, `commit prefix ${spec} is ambiguous (${hits.length} commits)`, this.root);
    }
    return fail(ErrorCode.Usage, `no ref or commit ${JSON.stringify(spec)}`, this.root);
  }

  /** A metadata object's bytes, checked against its checksum unless verification is off. */
  private readMetadata(checksum: string, kind: 'commit' | 'dirtree' | 'dirmeta'): { buf: Buffer; input: string } {
    const rel = Repo.relPath(checksum, kind);
    const file = path.join(this.objectsDir, rel);
    const input = `${kind} ${checksum}`;
    let buf: Buffer;
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return fail(ErrorCode.Io, `missing object objects/${rel}`, this.root);
      throw e;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) fail(ErrorCode.BadObject, 'object is not a regular file', input);
      if (st.size > MAX_METADATA_SIZE) fail(ErrorCode.TooLarge, `object of ${st.size} bytes exceeds the ${MAX_METADATA_SIZE}-byte limit`, input);
      buf = Buffer.allocUnsafe(st.size);
      let off = 0;
      while (off < buf.length) {
        const n = fs.readSync(fd, buf, off, buf.length - off, off);
        if (n === 0) fail(ErrorCode.Io, 'object shrank while being read', input);
        off += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    if (this.verify) {
      const actual = createHash('sha256').update(buf).digest('hex');
      if (actual !== checksum) fail(ErrorCode.BadChecksum, `checksum mismatch: the object's bytes hash to ${actual} (use --no-verify to convert anyway)`, input);
    }
    return { buf, input };
  }

  commit(checksum: string): Commit {
    // ostree marks commits whose objects are not all there yet (interrupted or partial pulls)
    if (fs.existsSync(path.join(this.root, 'state', `${checksum}.commitpartial`))) {
      fail(ErrorCode.Io, `commit ${checksum} is partial (an interrupted or subpath pull): not all its objects are in the repo`, this.root);
    }
    const { buf, input } = this.readMetadata(checksum, 'commit');
    return parseCommit(buf, input);
  }

  dirtree(checksum: string): Dirtree {
    let t = this.trees.get(checksum);
    if (!t) {
      const { buf, input } = this.readMetadata(checksum, 'dirtree');
      t = parseDirtree(buf, input);
      this.trees.set(checksum, t);
    }
    return t;
  }

  dirmeta(checksum: string): Meta {
    let m = this.metas.get(checksum);
    if (!m) {
      const { buf, input } = this.readMetadata(checksum, 'dirmeta');
      m = parseDirmeta(buf, input);
      this.metas.set(checksum, m);
    }
    return m;
  }

  /** A content object's metadata (not its bytes). */
  content(checksum: string): Content {
    const kind = this.mode === 'archive' ? 'filez' : 'file';
    const file = this.objectPath(checksum, kind);
    const input = `content object ${Repo.relPath(checksum, kind)}`;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return fail(ErrorCode.Io, `missing object objects/${Repo.relPath(checksum, kind)}`, this.root);
      throw e;
    }
    const base = { checksum, file, dataOffset: 0 };
    const isLink = st.isSymbolicLink();
    if (!isLink && !st.isFile()) fail(ErrorCode.BadObject, 'object is neither a regular file nor a symlink', input);
    switch (this.mode) {
      case 'bare': {
        const target = isLink ? readLink(file, input) : null;
        const xattrs = xattrsOf(file, input);
        return { ...base, uid: st.uid, gid: st.gid, mode: checkFileMode(st.mode, input), xattrs, size: target?.length ?? st.size, target };
      }
      case 'bare-user-only': {
        const target = isLink ? readLink(file, input) : null;
        return { ...base, uid: 0, gid: 0, mode: checkFileMode(st.mode, input), xattrs: [], size: target?.length ?? st.size, target };
      }
      case 'bare-user': {
        if (isLink) fail(ErrorCode.BadObject, 'symlink object in a bare-user repo (symlinks are stored as files)', input);
        const meta = xattrsOf(file, input, OSTREEMETA).find((x) => x.key === OSTREEMETA);
        if (!meta) return fail(ErrorCode.BadObject, `no ${OSTREEMETA} xattr`, input);
        const m = parseOstreemeta(Buffer.from(meta.value, 'latin1'), input);
        if ((m.mode & S_IFMT) === S_IFREG) return { ...base, ...m, size: st.size, target: null };
        // The file holds the target and a trailing NUL.
        if (st.size > PATH_MAX + 1) fail(ErrorCode.BadObject, `symlink object of ${st.size} bytes`, input);
        let data = fs.readFileSync(file);
        if (data.length > 0 && data[data.length - 1] === 0) data = data.subarray(0, -1);
        const target = checkTarget(data, input);
        return { ...base, ...m, size: target.length, target };
      }
      case 'archive':
        return this.archiveContent(base, st.size, input);
    }
  }

  private archiveContent(base: { checksum: string; file: string }, fileSize: number, input: string): Content {
    const fd = fs.openSync(base.file, 'r');
    try {
      const prefix = Buffer.alloc(FILEZ_PREFIX);
      const got = fs.readSync(fd, prefix, 0, FILEZ_PREFIX, 0);
      const len = filezHeaderLength(prefix.subarray(0, got), input);
      if (len > MAX_HEADER_SIZE) fail(ErrorCode.TooLarge, `content header of ${len} bytes exceeds the ${MAX_HEADER_SIZE}-byte limit`, input);
      if (FILEZ_PREFIX + len > fileSize) fail(ErrorCode.BadObject, `truncated archive object: header of ${len} bytes, file of ${fileSize}`, input);
      const header = Buffer.alloc(len);
      if (fs.readSync(fd, header, 0, len, FILEZ_PREFIX) !== len) fail(ErrorCode.Io, 'object shrank while being read', input);
      const h = parseArchiveHeader(header, input);
      const dataOffset = FILEZ_PREFIX + len;
      if ((h.mode & S_IFMT) === S_IFLNK) {
        if (fileSize !== dataOffset) fail(ErrorCode.BadObject, 'symlink object with content data', input);
        return { ...base, uid: h.uid, gid: h.gid, mode: h.mode, xattrs: h.xattrs, size: checkTarget(Buffer.from(h.target, 'latin1'), input).length, target: h.target, dataOffset };
      }
      return { ...base, uid: h.uid, gid: h.gid, mode: h.mode, xattrs: h.xattrs, size: h.size, target: null, dataOffset };
    } finally {
      fs.closeSync(fd);
    }
  }
}

function checkTarget(data: Buffer, input: string): string {
  if (data.length === 0 || data.length >= PATH_MAX || data.includes(0)) fail(ErrorCode.BadObject, `invalid symlink target of ${data.length} bytes`, input);
  return data.toString('latin1');
}

function readLink(file: string, input: string): string {
  return checkTarget(fs.readlinkSync(file, { encoding: 'buffer' }), input);
}

function xattrsOf(file: string, input: string, only?: string): Xattr[] {
  try {
    return readXattrs(Buffer.from(file), only ? (n) => n === only : undefined).map(([key, value]) => ({ key, value }));
  } catch (e) {
    return fail(ErrorCode.Io, `cannot read xattrs: ${(e as Error).message}`, input);
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
}

/** key=value lines of one [section] of an ini file. */
function iniSection(text: string, section: string): Map<string, string> {
  const out = new Map<string, string>();
  let inside = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.*)\]$/.exec(line);
    if (head) {
      inside = head[1].trim() === section;
      continue;
    }
    const eq = line.indexOf('=');
    if (inside && eq > 0) out.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return out;
}
