/**
 * cfs-writer: build a composefs image from a directory tree or a composefs-dump file,
 * byte-identical to mkcomposefs 1.0.8; optionally fill an object store and register the image.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { ExitCode, Progress, UsageError, fmtBytes, intOption, parseCommand, readInput, runMain, writeFileAtomic, versionOptions, writeStdout } from '../cli-kit/index.js';
import { CfsError, ErrorCode, encodeImage, parseDump } from '../format/index.js';
import { ObjectStager, PlainObjects, Store, type StagedTotals, defaultStorePath, isStoreRoot } from '../cas/store.js';
import { buildFromDirectory } from './build.js';
import { DigestCache } from './digest-cache.js';
import { Index } from '../cas/index.js';
import { verityDigest } from '../cas/sha256-native.js';

const TOOL = 'cfs-writer';
/** Dump files are read whole; 4 GiB of text is far beyond any real tree. */
const MAX_DUMP_SIZE = 2 ** 32 - 1;

interface Opts {
  fromFile?: boolean;
  output?: string;
  printDigest?: boolean;
  printDigestOnly?: boolean;
  minVersion?: string;
  maxVersion?: string;
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  digestStore?: string;
  threads?: string;
  relative?: boolean;
  hardlinks?: boolean;
  crossFilesystems?: boolean;
  ignoreErrors?: boolean;
  snapshot?: boolean;
  store?: string;
  name?: string;
  progress?: boolean;
  cache?: boolean;
  digestCache?: string;
}

export function buildProgram(): Command {
  return new Command(TOOL)
    .description('Build a composefs image from a directory or a composefs-dump file, byte-identical to mkcomposefs 1.0.8.')
    .argument('[SOURCE]', 'directory to snapshot (default: .), or a dump file with --from-file (`-` = stdin)')
    .argument('[IMAGE]', 'output image (default: stdout; `-` = stdout)')
    .option('--from-file', 'SOURCE is a composefs-dump(5) text file')
    .option('-o, --output <IMAGE>', 'output image (same as the IMAGE argument)')
    .option('--print-digest', 'print the fs-verity digest of the image')
    .option('--print-digest-only', 'print the fs-verity digest and write no image')
    .option('--min-version <N>', 'lowest format version to write (0 or 1)')
    .option('--max-version <N>', 'highest format version allowed (0 or 1)')
    .option('--use-epoch', 'directory input: set all mtimes to 0')
    .option('--skip-devices', 'directory input: leave out block and character devices')
    .option('--skip-xattrs', 'directory input: read no xattrs')
    .option('--user-xattrs', 'directory input: read only user.* xattrs')
    .option('--digest-store <STORE>', 'copy file contents into STORE (a cfs-cas store, or a plain objects directory as mkcomposefs does)')
    .option('--threads <N>', 'threads for digests (default: CPU count)')
    .option('--relative', 'redirect each file to its path relative to SOURCE, so base=SOURCE mounts it (no digests)')
    .option('--hardlinks', 'names with the same inode share one image inode (mkcomposefs gives each name its own)')
    .option('--cross-filesystems', 'descend into file systems mounted inside SOURCE (default: leave them empty)')
    .option('--ignore-errors', 'skip unreadable entries, with a count at the end')
    .option('--snapshot', 'put contents and the image into a cfs-cas store (--store, $CFS_STORE or the default store) and print a summary')
    .option('--store <STORE>', 'the store for --snapshot')
    .option('--name <NAME>', 'ref name for --snapshot (default: the directory name)')
    .addOption(new Option('--no-progress', 'no progress line on stderr'))
    .option('--digest-cache <FILE>', 'keep digests of unchanged files in FILE and do not read them again next time (a cfs-cas store has its own)')
    .addOption(new Option('--no-cache', 'hash every file again (the results still refresh the digest cache)'))
    .addHelpText(
      'after',
      `
Examples:
  cfs-writer --relative /srv/rootfs > rootfs.img          mount with base=/srv/rootfs
  cfs-writer --digest-store /cas /srv/rootfs rootfs.img   contents into /cas/objects (or /cas)
  cfs-writer --snapshot /srv/rootfs                       into the default store, registered
  cfs-writer --digest-cache rootfs.cache /srv/rootfs rootfs.img
                                                          later runs skip unchanged files
  cfs-writer --from-file rootfs.dump rootfs.img
  zcat rootfs.dump.gz | cfs-writer --from-file - > rootfs.img

Strict dump parsing (as mkcomposefs) is on when CFS_PARSE_STRICT is set.
With the image on stdout, --print-digest prints the digest on stderr.`,
    )
    .showHelpAfterError("(run 'cfs-writer --help' for usage)")
    .exitOverride();
}

interface StoreStats extends StagedTotals {
  /** The objects the image needs and their total size, for registering it (--snapshot). */
  needs?: { objects: string[]; logical: number };
}

async function fromDirectory(source: string, image: string | undefined, opts: Opts): Promise<number> {
  if (!fs.existsSync(source)) throw new UsageError(`${source}: no such directory`);
  if (opts.relative && (opts.digestStore || opts.snapshot)) throw new UsageError('--relative does not go with --digest-store or --snapshot');
  const threads = opts.threads !== undefined ? intOption('--threads', opts.threads, 1, 1024) : undefined;
  const progress = new Progress(opts.progress !== false);
  // a cfs-cas store (--snapshot, or --digest-store naming one); else --digest-store is a plain directory
  const casRoot = opts.snapshot ? (opts.store ?? opts.digestStore ?? defaultStorePath()) : opts.digestStore && isStoreRoot(opts.digestStore) ? opts.digestStore : null;
  if (opts.digestCache !== undefined) {
    if (casRoot !== null) throw new UsageError('--digest-cache: a cfs-cas store keeps its own digest cache');
    if (opts.relative) throw new UsageError('--digest-cache does not go with --relative (no digests)');
  }

  const store: Store | string | null = casRoot !== null ? Store.open(casRoot, { create: opts.snapshot }) : opts.digestStore || null;
  let stored: StoreStats | null = null;
  // the store takes each file as soon as its digest is known, while the rest are hashed
  const stager = store === null ? undefined : store instanceof Store ? store.stager({ imageFollows: opts.snapshot }) : new ObjectStager(new PlainObjects(store), false);
  let cacheFile: Index | null = null;
  const needed = new Set<string>();
  let logical = 0;
  try {
    // opened in here, so that a bad file leaves no staging directory behind
    if (opts.digestCache !== undefined) cacheFile = openDigestCache(opts.digestCache);
    const cacheIndex = store instanceof Store ? store.index : cacheFile;
    const cache = cacheIndex ? new DigestCache(cacheIndex) : undefined;
    if (cache && opts.cache === false) cache.disableLookups();
    const result = await buildFromDirectory(source, {
      ...versionOptions(opts),
      useEpoch: opts.useEpoch,
      skipDevices: opts.skipDevices,
      skipXattrs: opts.skipXattrs,
      userXattrs: opts.userXattrs,
      hardlinks: opts.hardlinks,
      crossFilesystems: opts.crossFilesystems,
      ignoreErrors: opts.ignoreErrors,
      relative: opts.relative,
      threads,
      cache,
      onProgress: (n) => progress.update(() => `scanning: ${n} entries`),
      onHashProgress: (n, bytes) => progress.update(() => `hashing: ${n} files, ${fmtBytes(bytes)} (${progress.rate(bytes)})`),
      onDigest: stager
        ? (f) => {
            stager.add({ path: f.path, digest: f.inode.digest!, size: f.inode.size });
            if (!opts.snapshot) return;
            // what the image needs, for registering it
            needed.add(f.inode.digest!);
            logical += f.inode.size;
          }
        : undefined,
      onStore: async (files) => {
        if (stager) {
          progress.show(`syncing: ${files} files into ${store instanceof Store ? store.root : store}`);
          stored = { ...(await stager.commit()), needs: opts.snapshot ? { objects: [...needed], logical } : undefined };
          needed.clear(); // the array is smaller
        }
        // the digests are facts about the files, whatever becomes of the image
        cache?.save();
        cacheFile?.close();
        cacheFile = null;
      },
      onEncode: () => progress.show('encoding the image'),
    });
    progress.done();
    const img = result.image;
    const digest = verityDigest(img).toString('hex');

    if (opts.snapshot) {
      const s = store as Store;
      const name = opts.name ?? (path.basename(path.resolve(source)) || 'root');
      // what the image needs is known from the files just stored: no need to decode it again
      const needs = (stored as StoreStats | null)?.needs;
      const reg = s.addImage(img, { name, needs, present: needs !== undefined });
      if (image !== undefined && image !== '-') writeFileAtomic(image, img);
      else if (image === '-') await writeStdout(img);
      const st = stored as StoreStats | null;
      const lines = [
        `${TOOL}: ${result.entries} entries, ${result.files} files in objects (${fmtBytes(result.externalBytes)})`,
        st ? `  objects: ${st.newObjects} new (${fmtBytes(st.newBytes)}), ${st.dedupObjects} deduplicated (${fmtBytes(st.dedupBytes)})` : '',
        cache?.hits ? `  ${cache.hits} unchanged files not read again (digest cache; --no-cache reads all)` : '',
        `  image: ${digest} (${fmtBytes(img.length)}), ref ${name}`,
        `  store: ${s.root}`,
        `  mount: npx cfs-mount --store ${s.root} ${name} /mnt`,
        `     or: mount -t composefs -o descriptor=${path.join(s.root, 'images', reg.digest)},basedir=${s.objectsDir} none /mnt`,
        `         (after: npx cfs-mount install-helper)`,
      ].filter((l) => l !== '');
      if (result.skipped) lines.push(`  skipped ${result.skipped} unreadable entries`);
      process.stderr.write(lines.join('\n') + '\n');
      if (opts.printDigest || opts.printDigestOnly) process.stdout.write(`${digest}\n`);
      return ExitCode.Ok;
    }

    const toStdout = !opts.printDigestOnly && (image === undefined || image === '-');
    if (!opts.printDigestOnly) {
      if (toStdout) await writeStdout(img);
      else writeFileAtomic(image!, img);
    }
    if (opts.printDigest || opts.printDigestOnly) (toStdout ? process.stderr : process.stdout).write(`${digest}\n`);
    if (cache?.hits) process.stderr.write(`${TOOL}: ${cache.hits} unchanged files not read again (digest cache)\n`);
    if (result.skipped) process.stderr.write(`${TOOL}: skipped ${result.skipped} unreadable entries\n`);
    return ExitCode.Ok;
  } finally {
    progress.done();
    await stager?.close();
    if (store instanceof Store) store.close();
    cacheFile?.close();
  }
}

/** The --digest-cache file (created if missing), or a clear error naming it. */
function openDigestCache(file: string): Index {
  try {
    return new Index(file);
  } catch (e) {
    throw new CfsError(ErrorCode.Io, `cannot open digest cache: ${(e as Error).message}`, { input: file });
  }
}

async function fromDump(source: string, image: string | undefined, opts: Opts): Promise<number> {
  const inputName = source === '-' ? 'stdin' : source;
  const text = await readInput(source, MAX_DUMP_SIZE);
  const tree = parseDump(text, { strict: process.env.CFS_PARSE_STRICT !== undefined, input: inputName });
  // no full collections here, unlike directory input: on 200k entries they cost 0.3 s and save 10% of the peak
  const img = encodeImage(tree, { ...versionOptions(opts), input: inputName, consume: true });
  const toStdout = !opts.printDigestOnly && (image === undefined || image === '-');
  if (!opts.printDigestOnly) {
    if (toStdout) await writeStdout(img);
    else writeFileAtomic(image!, img);
  }
  if (opts.printDigest || opts.printDigestOnly) {
    (toStdout ? process.stderr : process.stdout).write(`${verityDigest(img).toString('hex')}\n`);
  }
  return ExitCode.Ok;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const early = await parseCommand(program, argv);
  if (early !== null) return early;
  const opts = program.opts<Opts>();
  const [sourceArg, imageArg] = program.args as [string?, string?];
  if (opts.skipXattrs && opts.userXattrs) throw new UsageError('--skip-xattrs and --user-xattrs conflict');
  if (imageArg !== undefined && opts.output !== undefined) throw new UsageError('give the image either as an argument or with -o, not both');
  const image = imageArg ?? opts.output;
  if (opts.printDigestOnly && image !== undefined) throw new UsageError('cannot give an output image with --print-digest-only');
  versionOptions(opts);
  // refuse a terminal before doing any work
  if (!opts.printDigestOnly && !opts.snapshot && (image === undefined || image === '-') && process.stdout.isTTY) {
    throw new UsageError('refusing to write the image to a terminal: give an output file or redirect stdout');
  }
  if (opts.fromFile) {
    if (!sourceArg) throw new UsageError('no dump file given (- for stdin)');
    if (opts.digestCache !== undefined) throw new UsageError('--digest-cache is for directory input');
    return fromDump(sourceArg, image, opts);
  }
  return fromDirectory(sourceArg ?? '.', image, opts);
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
