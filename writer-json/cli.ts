/**
 * cfs-writer-json: a CRFS / eStargz / zstd:chunked TOC (or such a blob) into a composefs
 * image; with --store, the blob's file contents go into a cfs-cas store so the image mounts.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { Command } from 'commander';
import { ExitCode, UsageError, parseCommand, readInput, runMain, writeFileAtomic, versionOptions, writeStdout } from '../cli-kit/index.js';
import { CfsError, ErrorCode } from '../format/index.js';
import { Store } from '../cas/store.js';
import { type Blob, ESTARGZ_FOOTER_SIZE, blobFromBuffer, blobKind, blobLayout, openBlobFile, readTocFromBlob, MAX_TOC_SIZE } from './blob.js';
import { convertToc } from './convert.js';
import { verityDigest } from '../cas/sha256-native.js';

const TOOL = 'cfs-writer-json';

interface Opts {
  output?: string;
  store?: string;
  blob?: string;
  name?: string;
  printDigest?: boolean;
  printDigestOnly?: boolean;
  minVersion?: string;
  maxVersion?: string;
}

export function buildProgram(): Command {
  return new Command(TOOL)
    .description('Build a composefs image from a CRFS / eStargz / zstd:chunked TOC, or from such a blob.')
    .argument('<INPUT>', 'TOC JSON (optionally gzipped), an eStargz or zstd:chunked blob, or - for stdin')
    .argument('[IMAGE]', 'output image (default: stdout, or only the store with --store; `-` = stdout)')
    .option('-o, --output <IMAGE>', 'output image (same as the IMAGE argument)')
    .option('--store <STORE>', 'put every file\'s content from the blob into this cfs-cas store (created if missing) and register the image there')
    .option('--blob <BLOB>', 'the eStargz or zstd:chunked blob the TOC describes (default: INPUT, when it is a blob)')
    .option('--name <NAME>', 'with --store: ref name for the image')
    .option('--print-digest', 'print the fs-verity digest of the image')
    .option('--print-digest-only', 'print the fs-verity digest and write no image')
    .option('--min-version <N>', 'lowest format version to write (0 or 1)')
    .option('--max-version <N>', 'highest format version allowed (0 or 1)')
    .addHelpText(
      'after',
      `
Examples:
  cfs-writer-json --store /var/lib/cfs --name app layer.estargz     contents into the store; mountable
  cfs-writer-json --store /var/lib/cfs --blob layer.estargz toc.json app.img
  cfs-writer-json toc.json app.img        no contents: payloads from the TOC digests (XX/REST of the sha256)

Regular file backing paths: x-payload if the entry has one, else (with --store and a blob) the
content's fs-verity object in the store, else HEX[0:2]/HEX[2:] of the TOC's sha256 digest.
Blobs: eStargz / stargz (gzip) and zstd:chunked (stargz-snapshotter and containers/storage footers).`,
    )
    .showHelpAfterError(`(run '${TOOL} --help' for usage)`)
    .exitOverride();
}

/** The input, as TOC JSON bytes plus the blob it came from (if it is one). */
interface Input {
  toc: Buffer;
  blob: Blob | null;
  dataEnd?: number;
}

const GZIP = (b: Buffer): boolean => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

function gunzipToc(data: Buffer, input: string): Buffer {
  try {
    return zlib.gunzipSync(data, { maxOutputLength: MAX_TOC_SIZE });
  } catch (e) {
    throw new CfsError(ErrorCode.Io, `cannot decompress gzipped TOC: ${(e as Error).message}`, { input });
  }
}

async function readSource(file: string): Promise<Input> {
  const input = file === '-' ? 'stdin' : file;
  if (file === '-') {
    const data = await readInput('-', 2 ** 32);
    const blob = blobFromBuffer(data, input);
    return fromBlobOrToc(blob, () => data, input);
  }
  const st = fs.statSync(file);
  if (st.isDirectory()) throw new CfsError(ErrorCode.Io, 'is a directory', { input });
  const blob = openBlobFile(file);
  try {
    const r = fromBlobOrToc(blob, () => readFileLimited(file), input);
    if (r.blob !== blob) blob.close();
    return r;
  } catch (e) {
    blob.close();
    throw e;
  }
}

function readFileLimited(file: string): Buffer {
  const size = fs.statSync(file).size;
  if (size > MAX_TOC_SIZE) throw new CfsError(ErrorCode.TooLarge, `TOC of ${size} bytes exceeds the ${MAX_TOC_SIZE}-byte limit`, { input: file });
  return fs.readFileSync(file);
}

function fromBlobOrToc(blob: Blob, whole: () => Buffer, input: string): Input {
  const head = blob.read(0, Math.min(16, blob.size));
  const tail = blob.read(Math.max(0, blob.size - ESTARGZ_FOOTER_SIZE), Math.min(ESTARGZ_FOOTER_SIZE, blob.size));
  const kind = blobKind(head, tail);
  if (kind === 'estargz' || kind === 'zstd') {
    const { toc, dataEnd } = readTocFromBlob(blob);
    return { toc, blob, dataEnd };
  }
  const data = whole();
  if (!GZIP(data)) return { toc: data, blob: null };
  const toc = gunzipToc(data, input);
  if (!/^\s*\{/.test(toc.toString('latin1', 0, 64))) {
    throw new CfsError(ErrorCode.BadMagic, 'gzip data that is neither an eStargz blob (no footer found) nor a gzipped TOC JSON', { input });
  }
  return { toc, blob: null };
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const early = await parseCommand(program, argv);
  if (early !== null) return early;
  const opts = program.opts<Opts>();
  const [source, imageArg] = program.args as [string, string?];
  if (imageArg !== undefined && opts.output !== undefined) throw new UsageError('give the image either as an argument or with -o, not both');
  const image = imageArg ?? opts.output;
  if (opts.printDigestOnly && image !== undefined) throw new UsageError('cannot give an output image with --print-digest-only');
  if (opts.name !== undefined && !opts.store) throw new UsageError('--name needs --store');
  if (opts.blob !== undefined && !opts.store) throw new UsageError('--blob needs --store (the contents go into the store)');
  const ver = versionOptions(opts);

  const src = await readSource(source);
  let blob = src.blob;
  let dataEnd = src.dataEnd;
  let store: Store | null = null;
  try {
    if (opts.blob !== undefined) {
      blob?.close();
      blob = openBlobFile(opts.blob);
      dataEnd = blobLayout(blob).dataEnd;
    }
    if (opts.store) {
      if (!blob) throw new UsageError('--store needs the blob: give it as INPUT or with --blob');
      store = Store.open(opts.store, { create: true });
    }
    const inputName = source === '-' ? 'stdin' : source;
    const r = convertToc(src.toc, { input: inputName, ...ver, store: store ?? undefined, blob: blob ?? undefined, dataEnd, name: opts.name });
    const digest = opts.printDigest || opts.printDigestOnly ? verityDigest(r.image).toString('hex') : '';
    const toStdout = !opts.printDigestOnly && (image === '-' || (image === undefined && !store));
    if (!opts.printDigestOnly) {
      if (toStdout) await writeStdout(r.image);
      else if (image !== undefined) writeFileAtomic(image, r.image);
    }
    if (r.stored && store) {
      const s = r.stored;
      const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
      const lines = [
        `${TOOL}: ${r.entries} entries, ${r.files} files with content (${mib(r.bytes)}), ${s.inlined} inline`,
        `  objects: ${s.newObjects} new (${mib(s.newBytes)}), ${s.dedupObjects} deduplicated (${mib(s.dedupBytes)})`,
        `  image: ${s.image}${opts.name ? `, ref ${opts.name}` : ''}`,
        `  store: ${store.root}`,
      ];
      if (opts.name) lines.push(`  mount: npx cfs-mount --store ${store.root} ${opts.name} /mnt`);
      if (s.missing.length) lines.push(`  ${s.missing.length} objects named by x-payload are not in the store`);
      process.stderr.write(lines.join('\n') + '\n');
    }
    if (digest) (toStdout ? process.stderr : process.stdout).write(`${digest}\n`);
    return ExitCode.Ok;
  } finally {
    blob?.close();
    store?.close();
  }
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
