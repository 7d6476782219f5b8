/**
 * STORE/index.sqlite: a cache of what the tree holds (object sizes and first-seen times, images,
 * which objects each image needs, refs). The tree is the truth; `reindex` rebuilds this file from
 * it, so deleting it loses nothing.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';

/** better-sqlite3, loaded on first use: tools that never open a store skip its 30 ms load. */
let Database: typeof BetterSqlite3 | null = null;
const sqlite = (): typeof BetterSqlite3 => (Database ??= createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS objects (
  digest TEXT PRIMARY KEY,      -- fs-verity sha256, hex
  size INTEGER NOT NULL,        -- bytes
  first_seen INTEGER NOT NULL   -- unix ms
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
  digest TEXT PRIMARY KEY,      -- fs-verity sha256 of the image file
  size INTEGER NOT NULL,        -- image bytes
  logical INTEGER NOT NULL,     -- sum of st_size of its files kept as objects
  added INTEGER NOT NULL        -- unix ms
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS image_objects (
  image TEXT NOT NULL,
  object TEXT NOT NULL,
  PRIMARY KEY (image, object)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_objects_object ON image_objects(object);
CREATE TABLE IF NOT EXISTS refs (
  name TEXT PRIMARY KEY,
  image TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS file_digests (  -- cfs-writer's digest cache; reindex keeps it
  file TEXT PRIMARY KEY,        -- "dev:ino" of a source file
  stamp TEXT NOT NULL,          -- "size:mtime_ns:ctime_ns" when it was hashed
  digest TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tar_imports (  -- cfs-cas import-tar's cache of unchanged tar files
  file TEXT PRIMARY KEY,        -- "dev:ino" of the tar file
  stamp TEXT NOT NULL,          -- "size:mtime_ns:ctime_ns" when it was imported
  image TEXT NOT NULL,          -- the image it gave
  result TEXT NOT NULL          -- JSON: entries, files, bytes
) WITHOUT ROWID;
`;

export interface Stats {
  objects: number;
  bytes: number;
  images: number;
  refs: number;
  /** Bytes the images' files would take without sharing. */
  logicalBytes: number;
  /** logicalBytes / bytes (1 when empty). */
  dedupRatio: number;
}

export interface ImageRecord {
  digest: string;
  size: number;
  logical: number;
  /** Digests of the objects it needs. */
  objects: string[];
}

/**
 * Object rows queued before they are written: sorted, big batches touch fewer pages per row
 * (re-noting the 108k objects of /usr in a store of 140k: 0.59 s in batches of 4096 unsorted,
 * 0.34 s in sorted batches of 32768).
 */
const PENDING_OBJECTS = 32768;
/** Object rows per insert (a statement costs more than the rows it writes). */
const OBJECT_BATCH = 128;
/** Files looked up per digest-cache query. */
const FILE_BATCH = 256;

const BUSY_TIMEOUT_MS = 30_000;
/** SQLite page cache per connection, KiB. */
const CACHE_KIB = 2048;

/**
 * `fn` again while SQLite answers SQLITE_BUSY, for up to `ms`. Openers racing to set up a new
 * file can get BUSY at once: SQLite skips its busy handler where waiting could deadlock (two
 * readers that both want the exclusive lock to switch to WAL).
 */
export function retryBusy<T>(fn: () => T, ms = BUSY_TIMEOUT_MS): T {
  const until = Date.now() + ms;
  for (let wait = 1; ; wait = Math.min(2 * wait, 100)) {
    try {
      return fn();
    } catch (e) {
      if ((e as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() + wait > until) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    }
  }
}

export class Index {
  private readonly db: BetterSqlite3.Database;
  private readonly stmts;
  private pending: [string, number, number][] = [];

  constructor(file: string) {
    this.db = new (sqlite())(file, { timeout: BUSY_TIMEOUT_MS });
    retryBusy(() => {
      // WAL is kept in the file: only the first opener changes it (that needs an exclusive lock)
      if (this.db.pragma('journal_mode', { simple: true }) !== 'wal') this.db.pragma('journal_mode = WAL');
      this.db.exec(SCHEMA);
    });
    this.db.pragma('synchronous = NORMAL');
    // better-sqlite3 builds SQLite with a 16 MiB page cache per connection; SQLite's own 2 MiB
    // default costs no time measurable here and keeps cfs-writer's peak memory 14 MB lower
    this.db.pragma(`cache_size = -${CACHE_KIB}`);
    this.stmts = {
      putObject: this.db.prepare('INSERT OR IGNORE INTO objects (digest, size, first_seen) VALUES (?, ?, ?)'),
      putObjects: this.db.prepare(`INSERT OR IGNORE INTO objects (digest, size, first_seen) VALUES ${Array(OBJECT_BATCH).fill('(?, ?, ?)').join(', ')}`),
      putImage: this.db.prepare('INSERT OR REPLACE INTO images (digest, size, logical, added) VALUES (?, ?, ?, COALESCE((SELECT added FROM images WHERE digest = ?), ?))'),
      hasImage: this.db.prepare('SELECT 1 FROM images WHERE digest = ?').pluck(),
      putImageObject: this.db.prepare('INSERT OR IGNORE INTO image_objects (image, object) VALUES (?, ?)'),
      putRef: this.db.prepare('INSERT OR REPLACE INTO refs (name, image) VALUES (?, ?)'),
      dropRef: this.db.prepare('DELETE FROM refs WHERE name = ?'),
      dropObject: this.db.prepare('DELETE FROM objects WHERE digest = ?'),
      dropImage: this.db.prepare('DELETE FROM images WHERE digest = ?'),
      dropImageObjects: this.db.prepare('DELETE FROM image_objects WHERE image = ?'),
      refs: this.db.prepare('SELECT name, image FROM refs ORDER BY name'),
      images: this.db.prepare('SELECT digest, size, logical, added FROM images ORDER BY digest'),
      objectImages: this.db.prepare('SELECT image FROM image_objects WHERE object = ? ORDER BY image'),
      getFileDigests: this.db.prepare(`SELECT file, stamp, digest FROM file_digests WHERE file IN (${Array(FILE_BATCH).fill('?').join(',')})`).raw(),
      putFileDigest: this.db.prepare('INSERT OR REPLACE INTO file_digests (file, stamp, digest) VALUES (?, ?, ?)'),
      getTarImport: this.db.prepare('SELECT stamp, image, result FROM tar_imports WHERE file = ?'),
      putTarImport: this.db.prepare('INSERT OR REPLACE INTO tar_imports (file, stamp, image, result) VALUES (?, ?, ?, ?)'),
    };
  }

  /** Queued and written in batches of one transaction (flushed before any read and on close). */
  putObject(digest: string, size: number, firstSeen = Date.now()): void {
    this.pending.push([digest, size, firstSeen]);
    if (this.pending.length >= PENDING_OBJECTS) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const rows = this.pending;
    this.pending = [];
    // in key order, rows that land on the same b-tree pages come together
    rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.db.transaction(() => {
      let i = 0;
      for (; i + OBJECT_BATCH <= rows.length; i += OBJECT_BATCH) this.stmts.putObjects.run(rows.slice(i, i + OBJECT_BATCH).flat());
      for (; i < rows.length; i++) this.stmts.putObject.run(...rows[i]);
    })();
  }

  putImage(rec: ImageRecord, added = Date.now()): void {
    this.flush();
    this.db.transaction(() => {
      // an image is content-addressed: if it is indexed, so are its objects (same transaction)
      const known = this.stmts.hasImage.get(rec.digest) !== undefined;
      this.stmts.putImage.run(rec.digest, rec.size, rec.logical, rec.digest, added);
      if (!known) for (const o of rec.objects) this.stmts.putImageObject.run(rec.digest, o);
    })();
  }

  putRef(name: string, image: string): void {
    this.stmts.putRef.run(name, image);
  }

  dropRef(name: string): void {
    this.stmts.dropRef.run(name);
  }

  dropObjects(digests: string[]): void {
    this.flush();
    this.db.transaction(() => {
      for (const d of digests) this.stmts.dropObject.run(d);
      this.db.exec('DELETE FROM file_digests WHERE digest NOT IN (SELECT digest FROM objects)');
    })();
  }

  dropImages(digests: string[]): void {
    this.db.transaction(() => {
      for (const d of digests) {
        this.stmts.dropImage.run(d);
        this.stmts.dropImageObjects.run(d);
      }
    })();
  }

  /**
   * The digests cached for source files `files[i]` ("dev:ino"), where their stamps still match
   * `stamps[i]`: one query per FILE_BATCH files (a query costs more than the rows it reads).
   */
  fileDigests(files: string[], stamps: string[]): (string | undefined)[] {
    const out: (string | undefined)[] = new Array(files.length).fill(undefined);
    const at = new Map<string, number[]>(); // a file asked for twice: hardlinks
    for (let start = 0; start < files.length; start += FILE_BATCH) {
      const keys = files.slice(start, start + FILE_BATCH);
      at.clear();
      keys.forEach((k, i) => {
        const list = at.get(k);
        if (list) list.push(start + i);
        else at.set(k, [start + i]);
      });
      while (keys.length < FILE_BATCH) keys.push(keys[0]); // one statement for every batch
      for (const [file, stamp, digest] of this.stmts.getFileDigests.all(keys) as [string, string, string][]) {
        for (const i of at.get(file)!) if (stamp === stamps[i]) out[i] = digest;
      }
    }
    return out;
  }

  putFileDigests(rows: [file: string, stamp: string, digest: string][]): void {
    this.db.transaction(() => {
      for (const r of rows) this.stmts.putFileDigest.run(...r);
    })();
  }

  /** The image a tar file ("dev:ino") gave when its stamp was the same, and what was counted then. */
  tarImport(file: string, stamp: string): { image: string; result: string } | undefined {
    const row = this.stmts.getTarImport.get(file) as { stamp: string; image: string; result: string } | undefined;
    return row && row.stamp === stamp ? row : undefined;
  }

  putTarImport(file: string, stamp: string, image: string, result: string): void {
    this.stmts.putTarImport.run(file, stamp, image, result);
  }

  refs(): { name: string; image: string }[] {
    return this.stmts.refs.all() as { name: string; image: string }[];
  }

  images(): { digest: string; size: number; logical: number; added: number }[] {
    this.flush();
    return this.stmts.images.all() as { digest: string; size: number; logical: number; added: number }[];
  }

  /** Images that need an object. */
  imagesUsing(object: string): string[] {
    this.flush();
    return (this.stmts.objectImages.all(object) as { image: string }[]).map((r) => r.image);
  }

  stats(): Stats {
    this.flush();
    const o = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM objects').get() as { n: number; bytes: number };
    const i = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(logical), 0) AS logical FROM images').get() as { n: number; logical: number };
    const r = this.db.prepare('SELECT COUNT(*) AS n FROM refs').get() as { n: number };
    return {
      objects: o.n,
      bytes: o.bytes,
      images: i.n,
      refs: r.n,
      logicalBytes: i.logical,
      dedupRatio: o.bytes > 0 ? i.logical / o.bytes : 1,
    };
  }

  /** Replace everything in one transaction (reindex). */
  replaceAll(fill: () => void): void {
    this.flush();
    this.db.transaction(() => {
      this.db.exec('DELETE FROM objects; DELETE FROM images; DELETE FROM image_objects; DELETE FROM refs;');
      fill();
      this.flush();
    })();
  }

  close(): void {
    this.flush();
    this.db.close();
  }
}
