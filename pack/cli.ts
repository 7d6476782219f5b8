/**
 * cfs-pack: one self-contained EROFS image of a tree (files carry their data), mountable with a
 * plain `mount -t erofs -o loop`, and --unpack to get a tree back.
 */
import * as fs from 'node:fs';
import { Command, Option } from 'commander';
import { ExitCode, Progress, UsageError, fmtBytes, intOption, parseCommand, readInput, runMain } from '../cli-kit/index.js';
import { MAX_IMAGE_SIZE } from '../format/index.js';
import { type PackSource, pack, sourceFromDirectory, sourceFromImage } from './pack.js';
import { unpack } from './unpack.js';

const TOOL = 'cfs-pack';

interface Opts {
  image?: string;
  store?: string;
  base?: string[];
  unpack?: boolean;
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  crossFilesystems?: boolean;
  threads?: string;
  progress?: boolean;
}

export function buildProgram(): Command {
  return new Command(TOOL)
    .description('Pack a tree into one self-contained EROFS image whose files carry their data, or unpack an image into a directory.')
    .argument('[ARGS...]', 'SOURCE OUTPUT; OUTPUT with --image; IMAGE DIR with --unpack')
    .option('--image <IMAGE>', 'pack the tree of a composefs image (backing files from --store/--base) instead of a directory')
    .option('--store <STORE>', 'cfs-cas store (or objects directory) holding the backing files of --image / --unpack')
    .option('--base <DIR>', 'directory holding backing files (repeatable), e.g. the source of a --relative image', (v: string, prev: string[] = []) => [...prev, v])
    .option('--unpack', 'extract IMAGE (packed, plain EROFS, or composefs with --store/--base) into DIR')
    .option('--use-epoch', 'set all mtimes to 0')
    .option('--skip-devices', 'directory input: leave out block and character devices')
    .option('--skip-xattrs', 'directory input: read no xattrs')
    .option('--user-xattrs', 'directory input: read only user.* xattrs')
    .option('--cross-filesystems', 'directory input: descend into file systems mounted inside SOURCE (default: leave them empty)')
    .option('--threads <N>', 'threads for hashing same-size files (default: CPU count)')
    .addOption(new Option('--no-progress', 'no progress line on stderr'))
    .addHelpText(
      'after',
      `
Examples:
  cfs-pack /srv/rootfs rootfs.erofs                  then: mount -t erofs -o loop rootfs.erofs /mnt
  cfs-pack --image app.img --store /var/lib/cas app.erofs
  cfs-pack --unpack rootfs.erofs /srv/rootfs-copy
  cfs-pack --unpack --store /var/lib/cas app.img /srv/app`,
    )
    .showHelpAfterError(`(run '${TOOL} --help' for usage)`)
    .exitOverride();
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const early = await parseCommand(program, argv);
  if (early !== null) return early;
  const opts = program.opts<Opts>();
  const args = program.args;
  if (opts.skipXattrs && opts.userXattrs) throw new UsageError('--skip-xattrs and --user-xattrs conflict');
  const bases = [...(opts.store ? [opts.store] : []), ...(opts.base ?? [])];
  const dirOnly = opts.skipDevices || opts.skipXattrs || opts.userXattrs || opts.crossFilesystems;
  if (dirOnly && (opts.image || opts.unpack)) throw new UsageError('--skip-*, --user-xattrs and --cross-filesystems are for directory input');
  if (opts.unpack && (opts.useEpoch || opts.threads !== undefined)) throw new UsageError('--use-epoch and --threads are for packing');
  const progress = new Progress(opts.progress !== false);
  try {
    if (opts.unpack) {
      if (args.length !== 2) throw new UsageError('--unpack takes IMAGE DIR');
      if (opts.image) throw new UsageError('--unpack and --image do not go together');
      const r = unpack(args[0], args[1], { bases, progress: (l) => progress.update(l) });
      progress.done();
      process.stderr.write(`${TOOL}: unpacked ${r.kind} image: ${r.entries} entries, ${fmtBytes(r.bytes)} of file data\n`);
      return ExitCode.Ok;
    }
    let src: PackSource;
    let output: string;
    if (opts.image) {
      if (args.length !== 1) throw new UsageError('with --image, give only OUTPUT');
      output = args[0];
      src = sourceFromImage(opts.image, await readInput(opts.image, MAX_IMAGE_SIZE), bases, { useEpoch: opts.useEpoch });
    } else {
      if (args.length !== 2) throw new UsageError('give SOURCE and OUTPUT');
      if (bases.length) throw new UsageError('--store/--base go with --image or --unpack');
      const [source] = args;
      output = args[1];
      if (!fs.statSync(source, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${source}: not a directory`);
      src = sourceFromDirectory(source, {
        useEpoch: opts.useEpoch,
        skipDevices: opts.skipDevices,
        skipXattrs: opts.skipXattrs,
        userXattrs: opts.userXattrs,
        crossFilesystems: opts.crossFilesystems,
        onProgress: (n) => progress.update(() => `scanning: ${n} entries`),
      });
    }
    if (fs.statSync(output, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${output}: is a directory`);
    const threads = opts.threads !== undefined ? intOption('--threads', opts.threads, 1, 1024) : undefined;
    const r = await pack(src, output, { threads, progress: (l) => progress.update(l) });
    progress.done();
    const dedup = r.dedupFiles ? `, ${r.dedupFiles} duplicate files stored once (${fmtBytes(r.dedupBytes)} saved)` : '';
    process.stderr.write(`${TOOL}: ${r.entries} entries, ${fmtBytes(r.dataBytes)} of file data${dedup}; ${output}: ${fmtBytes(r.imageBytes)}\n`);
    return ExitCode.Ok;
  } finally {
    progress.done();
  }
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
