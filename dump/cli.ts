/** cfs-dump: read composefs images (composefs-info: dump, ls, objects, missing-objects, measure-file). */
import * as fs from 'node:fs';
import { Command } from 'commander';
import { ExitCode, TextOut, UsageError, parseCommand, readInput, runMain, writeAll } from '../cli-kit/index.js';
import { CfsError, ErrorCode, MAX_IMAGE_SIZE, decodeImage, printDump, type DecodeOptions } from '../format/index.js';
import { dumpFile } from './parallel.js';
import { collectObjects, listObjects, printJson, printLs } from './commands.js';

const TOOL = 'cfs-dump';

async function load(file: string, opts: DecodeOptions = {}) {
  const data = await readInput(file, MAX_IMAGE_SIZE);
  return decodeImage(data, { ...opts, input: file === '-' ? 'stdin' : file });
}

function collect(value: string, prev: string[] = []): string[] {
  if (value.includes('/')) throw new UsageError(`filter must be a single name: ${value}`);
  return [...prev, value];
}

async function measure(files: string[], out: TextOut): Promise<void> {
  const { digestOfFile } = await import('../cas/digest.js'); // loads the native hasher
  for (const file of files) out.write(`${digestOfFile(file).digest}\n`);
}

export function buildProgram(out: TextOut): Command {
  const program = new Command(TOOL)
    .description('Read composefs images: the same output as composefs-info, plus JSON.')
    .option('--basedir <DIR>', 'object directory for missing-objects')
    .showHelpAfterError("(run 'cfs-dump --help' for usage)")
    .exitOverride()
    .addHelpText(
      'after',
      `
Examples:
  cfs-dump rootfs.img                      same as: cfs-dump dump rootfs.img
  cfs-dump dump --preserve-order rootfs.img | cfs-writer --from-file - copy.img
  cfs-dump missing-objects --basedir /cas/objects rootfs.img
  cfs-dump measure-file /cas/objects/3d/59f3...`,
    );

  program
    .command('dump', { isDefault: true })
    .description('print the image as composefs-dump(5) text (default command)')
    .argument('<IMAGE...>')
    .option('--filter <NAME>', 'only this top-level entry (repeatable)', collect)
    .option('--json', 'one JSON object per entry per line instead of dump text')
    .option(
      '--preserve-order',
      "hardlinks: let the name that keeps the image's inode order own each inode, so the dump rebuilds the identical image",
    )
    .action(async (images: string[], o: { filter?: string[]; json?: boolean; preserveOrder?: boolean }) => {
      for (const img of images) {
        if (!o.json && !o.filter && !o.preserveOrder) {
          const note = process.env.CFS_DEBUG ? (msg: string): void => void process.stderr.write(`${TOOL}: ${img}: ${msg}\n`) : undefined;
          const chunks = await dumpFile(img, note);
          await out.flush();
          for (const c of chunks) await writeAll(process.stdout, c);
        } else {
          const { root } = await load(img, { filter: o.filter, owner: o.preserveOrder ? 'image' : 'first' });
          (o.json ? printJson : printDump)(root, out.write);
        }
        await out.flush();
      }
    });

  program
    .command('ls')
    .description('list every path, with symlink targets and backing objects')
    .argument('<IMAGE...>')
    .action(async (images: string[]) => {
      for (const img of images) {
        printLs((await load(img)).root, out.write);
        await out.flush();
      }
    });

  const objects = async (images: string[], basedir?: string): Promise<void> => {
    const set = new Set<string>();
    for (const img of images) collectObjects((await load(img)).root, set);
    for (const o of listObjects(set, basedir)) out.write(o + '\n');
  };
  program
    .command('objects')
    .description('list the backing objects the images reference, sorted')
    .argument('<IMAGE...>')
    .action((images: string[]) => objects(images));
  program
    .command('missing-objects')
    .description('list the objects that are missing from --basedir')
    .argument('<IMAGE...>')
    .option('--basedir <DIR>', 'object directory')
    .action(async (images: string[], o: { basedir?: string }) => {
      const basedir = o.basedir ?? program.opts<{ basedir?: string }>().basedir;
      if (!basedir) throw new UsageError('missing-objects needs --basedir DIR');
      if (!fs.existsSync(basedir)) throw new CfsError(ErrorCode.Io, 'base directory does not exist', { input: basedir });
      await objects(images, basedir);
    });
  program
    .command('measure-file')
    .description('print the fs-verity digest of each file')
    .argument('<FILE...>')
    .action((files: string[]) => measure(files, out));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const out = new TextOut();
  try {
    return (await parseCommand(buildProgram(out), argv)) ?? ExitCode.Ok;
  } finally {
    await out.flush();
  }
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
