/**
 * cfs-writer-json benchmark (issue 7): entries/s converting a 200k-entry TOC, and MB/s importing
 * an eStargz blob into a store next to `gzip -dc` of the same blob in the same run (and a
 * zstd:chunked blob next to `zstd -dc`, where the zstd CLI is there to build it).
 * Run: npx tsc -p tsconfig.json && node dist/writer-json/bench.js [ENTRIES] [BLOB_MB]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Store } from '../cas/store.js';
import { openBlobFile, readTocFromBlob } from './blob.js';
import { convertToc } from './convert.js';
import { type BlobFile, buildEstargz } from './estargz-build.js';

const entries = Number(process.argv[2] ?? 200_000);
const blobMiB = Number(process.argv[3] ?? 64);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-writer-json-bench-'));

try {
  // 1. TOC → image.
  const ents: object[] = [];
  const dirs = Math.max(1, Math.floor(entries / 1000));
  for (let d = 0; d < dirs; d++) ents.push({ name: `d${d}/`, type: 'dir', mode: 0o755, modtime: '2024-01-02T03:04:05Z' });
  for (let i = 0; ents.length < entries; i++) {
    const h = (i * 2654435761 >>> 0).toString(16).padStart(8, '0').repeat(8);
    ents.push({ name: `d${i % dirs}/f${i}`, type: 'reg', size: (i % 8192) + 1, mode: 0o644, uid: 0, gid: 0, modtime: '2024-01-02T03:04:05Z', offset: 1000 + i, digest: `sha256:${h}` });
  }
  const toc = Buffer.from(JSON.stringify({ version: 1, entries: ents }));
  let t = process.hrtime.bigint();
  const r = convertToc(toc, { input: 'bench' });
  let s = Number(process.hrtime.bigint() - t) / 1e9;
  console.log(`TOC: ${entries} entries (${(toc.length / 1048576).toFixed(1)} MiB JSON) in ${s.toFixed(2)} s = ${Math.round(entries / s)} entries/s, image ${(r.image.length / 1048576).toFixed(1)} MiB`);

  // 2. eStargz blob → store. Half-compressible content: random bytes each followed by zeros.
  const files: BlobFile[] = [];
  const fileSize = 1 << 20;
  for (let i = 0; i < blobMiB; i++) {
    const data = Buffer.alloc(fileSize);
    randomBytes(fileSize / 2).copy(data);
    files.push({ name: `data/file${i}`, type: 'reg', data, chunkSize: 256 << 10 });
  }
  const built = buildEstargz(files);
  const mib = (blobMiB * fileSize) / 1048576;

  const zstdCli = spawnSync('zstd', ['--version']).status === 0 ? (d: Buffer): Buffer => spawnSync('zstd', ['-q', '-c', '-3'], { input: d, maxBuffer: 1 << 28 }).stdout : null;
  const blobs: [string, string, Buffer][] = [['eStargz', 'gzip', built.blob]];
  if (zstdCli) blobs.push(['zstd:chunked', 'zstd', buildEstargz(files, { zstd: zstdCli }).blob]);
  else console.log('zstd:chunked: skipped (no zstd CLI to build the blob)');
  for (const [kind, tool, data] of blobs) {
    const blobFile = path.join(tmp, `layer.${tool}`);
    fs.writeFileSync(blobFile, data);
    t = process.hrtime.bigint();
    const g = spawnSync('sh', ['-c', `${tool} -dc "$1" > /dev/null`, 'sh', blobFile]);
    const gs = Number(process.hrtime.bigint() - t) / 1e9;
    if (g.status !== 0) console.log(`${tool} -dc failed: ${g.stderr}`);
    const store = Store.open(path.join(tmp, `store-${tool}`), { create: true });
    try {
      t = process.hrtime.bigint();
      const blob = openBlobFile(blobFile);
      const { toc: blobToc, dataEnd } = readTocFromBlob(blob);
      const res = convertToc(blobToc, { input: blobFile, store, blob, dataEnd });
      s = Number(process.hrtime.bigint() - t) / 1e9;
      blob.close();
      console.log(
        `${kind} blob: ${mib} MiB of files (${(data.length / 1048576).toFixed(1)} MiB compressed), ${res.stored!.newObjects} objects: ` +
          `cfs-writer-json --store ${s.toFixed(2)} s = ${(mib / s).toFixed(0)} MB/s; ${tool} -dc ${gs.toFixed(2)} s = ${(mib / gs).toFixed(0)} MB/s (${(s / gs).toFixed(1)}x)`,
      );
    } finally {
      store.close();
    }
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
