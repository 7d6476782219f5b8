/** cfs-writer: build a composefs image from a composefs-dump file (mkcomposefs --from-file). */
import { Command, Option } from 'commander';
import { ExitCode, UsageError, intOption, readInput, runMain, writeFileAtomic, writeStdout } from '../cli-kit/index.js';
import { encodeImage, fsverityDigest, parseDump } from '../format/index.js';

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
}

export function buildProgram(): Command {
  return new Command(TOOL)
    .description('Build a composefs image, byte-identical to mkcomposefs 1.0.8.')
    .argument('[SOURCE]', 'composefs-dump file with --from-file (`-` = stdin)')
    .argument('[IMAGE]', 'output image (default: stdout; `-` = stdout)')
    .option('--from-file', 'SOURCE is a composefs-dump(5) text file')
    .option('-o, --output <IMAGE>', 'output image (same as the IMAGE argument)')
    .option('--print-digest', 'print the fs-verity digest of the image')
    .option('--print-digest-only', 'print the fs-verity digest and write no image')
    .option('--min-version <N>', 'lowest format version to write (0 or 1)')
    .option('--max-version <N>', 'highest format version allowed (0 or 1)')
    .addOption(new Option('--use-epoch', 'directory input: set all mtimes to 0'))
    .addOption(new Option('--skip-devices', 'directory input: leave out block and character devices'))
    .addOption(new Option('--skip-xattrs', 'directory input: read no xattrs'))
    .addOption(new Option('--user-xattrs', 'directory input: read only user.* xattrs'))
    .addOption(new Option('--digest-store <DIR>', 'directory input: copy file contents into DIR'))
    .addOption(new Option('--threads <N>', 'directory input: threads for digests'))
    .addHelpText(
      'after',
      `
Examples:
  cfs-writer --from-file rootfs.dump rootfs.img
  zcat rootfs.dump.gz | cfs-writer --from-file - > rootfs.img
  cfs-writer --from-file --print-digest-only rootfs.dump

Strict dump parsing (as mkcomposefs) is on when CFS_PARSE_STRICT is set.
With the image on stdout, --print-digest prints the digest on stderr.`,
    )
    .showHelpAfterError("(run 'cfs-writer --help' for usage)")
    .exitOverride();
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    const ce = e as { exitCode?: number; code?: string };
    if (ce.code === 'commander.helpDisplayed' || ce.code === 'commander.version') return ExitCode.Ok;
    return ExitCode.Usage;
  }
  const opts = program.opts<Opts>();
  const [source, imageArg] = program.args as [string?, string?];
  if (!source) throw new UsageError('no source given (a dump file with --from-file, or - for stdin)');
  if (!opts.fromFile) throw new UsageError('directory input is not available yet: use --from-file DUMP');
  if (opts.skipXattrs && opts.userXattrs) throw new UsageError('--skip-xattrs and --user-xattrs conflict');
  if (imageArg !== undefined && opts.output !== undefined) throw new UsageError('give the image either as an argument or with -o, not both');
  const image = imageArg ?? opts.output;
  if (opts.printDigestOnly && image !== undefined) throw new UsageError('cannot give an output image with --print-digest-only');
  if (opts.threads !== undefined) intOption('--threads', opts.threads, 1, 1024);

  let minVersion = 0;
  let maxVersion = 1;
  if (opts.minVersion !== undefined || opts.maxVersion !== undefined) {
    minVersion = opts.minVersion !== undefined ? intOption('--min-version', opts.minVersion, 0, 1) : 0;
    maxVersion = opts.maxVersion !== undefined ? intOption('--max-version', opts.maxVersion, 0, 1) : 0;
  }

  const inputName = source === '-' ? 'stdin' : source;
  const text = await readInput(source, MAX_DUMP_SIZE);
  const tree = parseDump(text, { strict: process.env.CFS_PARSE_STRICT !== undefined, input: inputName });
  const img = encodeImage(tree, { minVersion, maxVersion, input: inputName });

  const toStdout = !opts.printDigestOnly && (image === undefined || image === '-');
  if (!opts.printDigestOnly) {
    if (toStdout) await writeStdout(img);
    else writeFileAtomic(image!, img);
  }
  if (opts.printDigest || opts.printDigestOnly) {
    const line = `${fsverityDigest(img).toString('hex')}\n`;
    (toStdout ? process.stderr : process.stdout).write(line);
  }
  return ExitCode.Ok;
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
