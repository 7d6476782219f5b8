/**
 * cfs-ostree-convert: OSTree commits into composefs images, read straight from the repository.
 */
import * as path from 'node:path';
import { Command } from 'commander';
import { ExitCode, UsageError, parseCommand, runMain, writeFileAtomic, writeStdout } from '../cli-kit/index.js';
import { Store } from '../cas/store.js';
import { type BatchItem, runBatch, storeRefName } from './batch.js';
import { convertCommit } from './convert.js';
import { Repo } from './repo.js';

const TOOL = 'cfs-ostree-convert';

interface Opts {
  repo: string;
  store?: string;
  baseObjects?: boolean;
  name?: string;
  out?: string;
  allRefs?: boolean;
  verify: boolean;
  dropSelinux?: boolean;
  deployment?: boolean;
}

export function buildProgram(): Command {
  return new Command(TOOL)
    .description('Convert OSTree commits into composefs images, reading the repository directly (archive, bare, bare-user, bare-user-only).')
    .argument('[ARGS...]', 'REF|COMMIT [IMAGE]; with --out: the commits or refs to convert')
    .requiredOption('--repo <REPO>', 'the OSTree repository')
    .option('--store <STORE>', 'put file contents into this cfs-cas store (created if missing) and register the image there as ostree-COMMIT')
    .option('--base-objects', 'bare repos: redirect files to XX/REST.file in REPO/objects, so base=REPO/objects mounts the image (the default without --store)')
    .option('--name <NAME>', 'with --store: ref name of the image (default ostree-COMMIT)')
    .option('--out <DIR>', 'batch mode: write DIR/COMMIT.img for each commit, skipping those already there')
    .option('--all-refs', 'batch mode: convert the commit of every ref (refs/heads and refs/remotes)')
    .option('--no-verify', 'do not recompute the checksums of commit, dirtree and dirmeta objects')
    .option('--drop-selinux', 'leave out security.selinux xattrs')
    .option('--deployment', 'add usr, etc, boot, var and sysroot at the root where missing, as ostree does for deployments')
    .addHelpText(
      'after',
      `
Examples:
  cfs-ostree-convert --repo /ostree/repo fedora/x86_64/silverblue os.img
      mount: cfs-mount --base /ostree/repo/objects os.img /mnt
  cfs-ostree-convert --repo repo --store /var/lib/cfs 3f2a…          contents into the store
  cfs-ostree-convert --repo repo --store /var/lib/cfs --all-refs --out images/
      one JSON line per commit on stdout; rerun to resume

Images follow ostree's own composefs images: every mtime is 0, modes, owners and xattrs are
as committed, no hardlinks, regular files never inline.`,
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
  if (opts.store && opts.baseObjects) throw new UsageError('choose one of --store and --base-objects');
  const batch = opts.out !== undefined || opts.allRefs;
  if (batch) {
    if (opts.out === undefined) throw new UsageError('--all-refs needs --out DIR');
    if (opts.name !== undefined) throw new UsageError('--name is for one commit; batch images are named ostree-COMMIT');
    if (opts.allRefs ? args.length > 0 : args.length === 0) throw new UsageError(opts.allRefs ? 'give either --all-refs or commits, not both' : 'give the commits to convert, or --all-refs');
  } else {
    if (args.length === 0 || args.length > 2) throw new UsageError('give REF|COMMIT and optionally IMAGE');
    if (opts.name !== undefined && !opts.store) throw new UsageError('--name needs --store');
  }

  const repo = Repo.open(opts.repo, { verify: opts.verify });
  const store = opts.store ? Store.open(opts.store, { create: true }) : null;
  const common = {
    payloads: store ? ('store' as const) : ('base-objects' as const),
    store: store ?? undefined,
    dropSelinux: opts.dropSelinux,
    deployment: opts.deployment,
  };
  const tty = process.stderr.isTTY;
  let shown = 0;
  const progress = tty
    ? (msg: string): void => {
        // at most ten updates a second
        if (Date.now() - shown < 100) return;
        shown = Date.now();
        process.stderr.write(`\r${TOOL}: ${msg}\x1b[K`);
      }
    : undefined;
  const clear = (): void => void (tty && process.stderr.write('\r\x1b[K'));
  try {
    if (batch) {
      let items: BatchItem[];
      if (opts.allRefs) {
        const byCommit = new Map<string, string[]>();
        for (const [ref, commit] of repo.refs()) byCommit.set(commit, [...(byCommit.get(commit) ?? []), ref]);
        items = [...byCommit].map(([commit, refs]) => ({ commit, refs }));
      } else {
        const byCommit = new Map<string, string[]>();
        for (const spec of args) {
          const commit = repo.resolve(spec);
          const refs = byCommit.get(commit) ?? [];
          if (spec !== commit) refs.push(spec);
          byCommit.set(commit, refs);
        }
        items = [...byCommit].map(([commit, refs]) => ({ commit, refs }));
      }
      const totals = await runBatch(repo, items, path.resolve(opts.out!), common, {
        report: (line) => process.stdout.write(JSON.stringify(line) + '\n'),
        log: (msg) => {
          clear();
          process.stderr.write(`${TOOL}: ${msg}\n`);
        },
        progress,
      });
      clear();
      process.stderr.write(`${TOOL}: ${totals.converted} converted, ${totals.skipped} already done, ${totals.failed} failed\n`);
      return totals.failed > 0 ? ExitCode.Failure : ExitCode.Ok;
    }

    const [spec, image] = args;
    const commit = repo.resolve(spec);
    const name = store ? (opts.name ?? storeRefName(commit)) : undefined;
    const r = await convertCommit(repo, commit, { ...common, name, progress: progress && ((d, t) => progress(`${d}/${t} objects`)) });
    clear();
    if (image !== undefined && image !== '-') writeFileAtomic(image, r.image);
    else if (image === '-' || !store) await writeStdout(r.image);
    if (store) {
      const o = r.objects;
      const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
      process.stderr.write(
        [
          `${TOOL}: commit ${commit}: ${r.entries} entries, ${r.files} files (${mib(r.bytes)})`,
          `  objects: ${o.new} new (${mib(o.newBytes)}), ${o.dedup} deduplicated (${mib(o.dedupBytes)})`,
          `  image: ${r.storeImage}, ref ${name}`,
          `  mount: cfs-mount --store ${store.root} ${name} /mnt`,
        ].join('\n') + '\n',
      );
    }
    return ExitCode.Ok;
  } finally {
    store?.close();
  }
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
