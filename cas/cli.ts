/** cfs-cas: the content-addressed store that composefs images share. */
import * as fs from 'node:fs';
import { Command, Option } from 'commander';
import { ExitCode, TextOut, UsageError, intOption, runMain, writeAll } from '../cli-kit/index.js';
import { CfsError, ErrorCode, MAX_IMAGE_SIZE } from '../format/index.js';
import { fsck, gc, missingObjects } from './gc.js';
import { Store, checkDigest, defaultStorePath } from './store.js';

// Loaded by the commands that use them: every command pays for what is imported here.
const tarModule = (): Promise<typeof import('./tar.js')> => import('./tar.js');
const ociArtifact = (): Promise<typeof import('../oci/artifact.js')> => import('../oci/artifact.js');
const ociProgress = async (): Promise<InstanceType<typeof import('../oci/progress.js').Progress>> => new (await import('../oci/progress.js')).Progress();

const TOOL = 'cfs-cas';

interface StoreOpt {
  store?: string;
  json?: boolean;
}

const VERITY_UNSUPPORTED = 'fs-verity is not supported on this file system; objects are stored without it';

export function buildProgram(out: TextOut, status: { code: number }): Command {
  const program = new Command(TOOL)
    .description('A content-addressed store of file objects (STORE/objects/XX/REST) and the composefs images that use them.')
    .option('--store <DIR>', 'store directory (default: $CFS_STORE, else ~/.local/share/composefs-ts/store)')
    .showHelpAfterError("(run 'cfs-cas --help' for usage)")
    .exitOverride()
    .addHelpText(
      'after',
      `
Examples:
  cfs-cas init --store /var/lib/cfs
  cfs-cas import-tar rootfs.tar --name fedora
  mount -t composefs -o basedir=STORE/objects STORE/refs/fedora /mnt
  cfs-cas rm-ref fedora && cfs-cas gc --grace 0`,
    );

  const storeDir = (o: StoreOpt): string => o.store ?? program.opts<StoreOpt>().store ?? defaultStorePath();
  /** Writers create the store on first use; readers need one. */
  const openStore = (o: StoreOpt, create: boolean): Store => Store.open(storeDir(o), { create });
  const withStore = async <T>(o: StoreOpt, create: boolean, f: (s: Store) => T | Promise<T>): Promise<T> => {
    const s = openStore(o, create);
    try {
      return await f(s);
    } finally {
      s.close();
    }
  };
  const json = (v: unknown): void => out.write(JSON.stringify(v) + '\n');
  const cmd = (name: string, desc: string): Command =>
    program.command(name).description(desc).option('--store <DIR>', 'store directory');

  cmd('init', 'create an empty store (idempotent)')
    .option('--json', 'JSON output')
    .action((o: StoreOpt) =>
      withStore(o, true, (s) => {
        if (o.json) json({ store: s.root });
        else out.write(`${s.root}\n`);
      }),
    );

  cmd('put', 'add files as objects and print their digests')
    .argument('<FILE...>')
    .option('--verity', 'enable fs-verity on the objects where the file system supports it')
    .option('--json', 'JSON output')
    .action((files: string[], o: StoreOpt & { verity?: boolean }) =>
      withStore(o, true, (s) => {
        let warned = false;
        for (const f of files) {
          const st = fs.statSync(f);
          if (!st.isFile()) throw new CfsError(ErrorCode.Io, 'not a regular file', { input: f });
          const r = s.putFile(f, { verity: o.verity });
          if (r.verity === 'unsupported' && !warned) {
            process.stderr.write(`${TOOL}: ${VERITY_UNSUPPORTED}\n`);
            warned = true;
          }
          if (o.json) json({ file: f, ...r });
          else out.write(`${r.digest}  ${f}\n`);
        }
      }),
    );

  cmd('cat', 'write an object to stdout')
    .argument('<DIGEST>')
    .action((digest: string, o: StoreOpt) =>
      withStore(o, false, async (s) => {
        const file = s.objectPath(checkDigest(digest));
        if (!fs.existsSync(file)) throw new CfsError(ErrorCode.Io, 'no such object in the store', { input: digest });
        await out.flush();
        for await (const chunk of fs.createReadStream(file)) await writeAll(process.stdout, chunk as Buffer);
      }),
    );

  cmd('has', 'exit 0 if every object is present, 1 otherwise')
    .argument('<DIGEST...>')
    .action((digests: string[], o: StoreOpt) =>
      withStore(o, false, (s) => {
        if (!digests.every((d) => s.has(checkDigest(d)))) status.code = ExitCode.Failure;
      }),
    );

  cmd('ls', 'list refs (or images with --images)')
    .option('--images', 'list every image, referenced or not')
    .option('--json', 'JSON output')
    .action((o: StoreOpt & { images?: boolean }) =>
      withStore(o, false, (s) => {
        const byDigest = new Map(s.index.images().map((i) => [i.digest, i]));
        const refs = s.refNames().map((name) => {
          let image: string | null = null;
          try {
            image = s.readRef(name);
          } catch {
            /* fsck reports bad refs */
          }
          return { name, image };
        });
        if (o.images) {
          for (const d of s.imageDigests()) {
            const names = refs.filter((r) => r.image === d).map((r) => r.name);
            const i = byDigest.get(d);
            if (o.json) json({ image: d, size: i?.size ?? null, refs: names });
            else out.write(`${d}\t${names.join(',')}\n`);
          }
          return;
        }
        for (const r of refs) {
          if (o.json) json({ ref: r.name, image: r.image, size: r.image ? byDigest.get(r.image)?.size ?? null : null });
          else out.write(`${r.name}\t${r.image ?? '(invalid)'}\n`);
        }
      }),
    );

  cmd('add-image', 'copy an image into the store and record the objects it needs')
    .argument('<IMAGE>')
    .option('--name <NAME>', 'ref to point at it')
    .option('--json', 'JSON output')
    .action((image: string, o: StoreOpt & { name?: string }) =>
      withStore(o, true, (s) => {
        const st = fs.statSync(image);
        if (!st.isFile()) throw new CfsError(ErrorCode.Io, 'not a regular file', { input: image });
        if (st.size > MAX_IMAGE_SIZE) throw new CfsError(ErrorCode.TooLarge, `image of ${st.size} bytes exceeds the limit`, { input: image });
        const r = s.addImage(fs.readFileSync(image), { name: o.name, input: image });
        if (o.json) json(r);
        else {
          out.write(`${r.digest}\n`);
          if (r.missing.length) process.stderr.write(`${TOOL}: ${image}: ${r.missing.length} objects missing from the store (see cfs-cas missing)\n`);
        }
      }),
    );

  cmd('import-tar', 'stream a tar archive into objects and an image (- for stdin)')
    .argument('<TAR>')
    .option('--name <NAME>', 'ref to point at the image')
    .option('--json', 'JSON output')
    .addOption(new Option('--no-cache', 'read the tar even if this file, unchanged, was imported before'))
    .action((file: string, o: StoreOpt & { name?: string; cache?: boolean }) =>
      withStore(o, true, async (s) => {
        const { importTar, importTarFile } = await tarModule();
        const r =
          file === '-'
            ? { ...(await importTar(s, process.stdin, { name: o.name, input: 'stdin' })), cached: false }
            : await importTarFile(s, file, { name: o.name, cache: o.cache });
        if (o.json) json(r);
        else {
          out.write(`${r.image}\n`);
          process.stderr.write(
            `${TOOL}: ${r.entries} entries; objects: ${r.newObjects} new (${r.newBytes} bytes), ${r.dedupObjects} deduplicated (${r.dedupBytes} bytes)` +
              `${r.cached ? '; unchanged since an earlier import, not read again (--no-cache reads it)' : ''}\n`,
          );
        }
      }),
    );

  cmd('pull', 'pull an OCI/Docker image (or a composefs artifact) from a registry into the store')
    .argument('<REF>', 'e.g. quay.io/fedora/fedora:41, localhost:5000/app@sha256:…')
    .option('--name <NAME>', 'ref to point at the image (default: REPO-BASENAME:TAG)')
    .option('--plain-http', 'talk HTTP, not HTTPS (loopback registries)')
    .option('--lazy', 'composefs artifacts: fetch only the image; objects later with fetch-missing')
    .option('--platform <OS/ARCH>', 'entry to pick from a multi-platform index', 'linux/amd64')
    .option('--jobs <N>', 'parallel object downloads', '8')
    .option('--json', 'JSON output')
    .action((ref: string, o: StoreOpt & { name?: string; plainHttp?: boolean; lazy?: boolean; platform: string; jobs: string }) =>
      withStore(o, true, async (s) => {
        const { pull } = await import('../oci/pull.js');
        const r = await pull(s, ref, { name: o.name, plainHttp: o.plainHttp, lazy: o.lazy, platform: o.platform, jobs: intOption('--jobs', o.jobs, 1, 64), progress: await ociProgress() });
        if (o.json) json(r);
        else {
          out.write(`${r.image}\n`);
          const fetched = r.blobs.filter((b) => b.fetched).length;
          const layers = r.kind === 'image' ? `${fetched} of ${r.blobs.length} layers fetched, ` : '';
          const left = r.missing ? `; ${r.missing} objects left to fetch-missing` : '';
          process.stderr.write(`${TOOL}: ${r.name}: ${layers}${r.transferredBytes} bytes transferred, ${r.newObjects} new objects${left}\n`);
        }
      }),
    );

  cmd('push', 'publish an image and its objects to a registry as a composefs artifact')
    .argument('<IMAGE>', 'ref name, image digest or image file')
    .argument('<REF>', 'HOST/REPO:TAG')
    .option('--plain-http', 'talk HTTP, not HTTPS (loopback registries)')
    .option('--pack-size <BYTES>', 'objects per pack layer, in bytes (default 64 MiB)')
    .option('--json', 'JSON output')
    .action((image: string, ref: string, o: StoreOpt & { plainHttp?: boolean; packSize?: string }) =>
      withStore(o, false, async (s) => {
        const packSize = o.packSize !== undefined ? intOption('--pack-size', o.packSize, 1) : undefined;
        const r = await (await ociArtifact()).push(s, image, ref, { plainHttp: o.plainHttp, packSize, progress: await ociProgress() });
        if (o.json) json(r);
        else {
          out.write(`${r.manifest}\n`);
          process.stderr.write(`${TOOL}: ${r.reference}: ${r.objects} objects in ${r.packs} packs; uploaded ${r.uploaded} blobs (${r.uploadedBytes} bytes)\n`);
        }
      }),
    );

  cmd('fetch-missing', 'fetch the objects an image lacks from the artifact it was pulled from')
    .argument('<IMAGE>', 'ref name, image digest or image file')
    .option('--jobs <N>', 'parallel downloads', '8')
    .option('--json', 'JSON output')
    .action((image: string, o: StoreOpt & { jobs: string }) =>
      withStore(o, false, async (s) => {
        const r = await (await ociArtifact()).fetchMissing(s, image, { jobs: intOption('--jobs', o.jobs, 1, 64), progress: await ociProgress() });
        if (o.json) json(r);
        else process.stderr.write(`${TOOL}: ${r.fetched} objects fetched (${r.bytes} bytes, ${r.requests} requests)\n`);
      }),
    );

  cmd('missing', 'list objects an image (file, ref or digest) needs that the store lacks')
    .argument('<IMAGE>')
    .option('--json', 'JSON output')
    .action((image: string, o: StoreOpt) =>
      withStore(o, false, (s) => {
        const m = missingObjects(s, image);
        if (o.json) json({ missing: m });
        else for (const x of m) out.write(`${x}\n`);
        if (m.length) status.code = ExitCode.Failure;
      }),
    );

  cmd('fsck', 'recompute every digest; check images and refs')
    .option('--repair', 'quarantine bad objects, remove temp litter, rebuild the index')
    .option('--json', 'JSON output')
    .action((o: StoreOpt & { repair?: boolean }) =>
      withStore(o, false, (s) => {
        const r = fsck(s, { repair: o.repair });
        if (r.verity === 'unsupported') process.stderr.write(`${TOOL}: fs-verity is not supported on this file system; contents checked by hashing only\n`);
        if (o.json) json(r);
        else {
          for (const p of r.problems) {
            const imgs = p.images?.length ? ` (images affected: ${p.images.join(', ')})` : '';
            out.write(`${p.kind}: ${p.path}: ${p.message}${imgs}\n`);
          }
          for (const l of r.litter) out.write(`litter: ${l}\n`);
          for (const l of r.repaired) out.write(`repaired: ${l}\n`);
          process.stderr.write(`${TOOL}: ${r.objects} objects, ${r.images} images, ${r.refs} refs: ${r.problems.length} problems\n`);
        }
        if (r.problems.length && !o.repair) status.code = ExitCode.Failure;
        if (o.repair && r.problems.some((p) => p.kind !== 'bad-object')) status.code = ExitCode.Failure;
      }),
    );

  cmd('gc', 'delete images and objects no ref needs, older than the grace period')
    .option('--dry-run', 'only print what would be deleted')
    .option('--grace <SECONDS>', 'keep anything younger than this (default 3600)')
    .option('--json', 'JSON output')
    .action((o: StoreOpt & { dryRun?: boolean; grace?: string }) =>
      withStore(o, false, (s) => {
        const graceSeconds = o.grace !== undefined ? intOption('--grace', o.grace) : undefined;
        const r = gc(s, { dryRun: o.dryRun, graceSeconds });
        if (o.json) json({ dryRun: !!o.dryRun, ...r });
        else {
          const verb = o.dryRun ? 'would remove' : 'removed';
          for (const i of r.images) out.write(`${verb} image ${i}\n`);
          for (const x of r.objects) out.write(`${verb} object ${x}\n`);
          for (const l of r.litter) out.write(`${verb} ${l}\n`);
          process.stderr.write(`${TOOL}: ${verb} ${r.images.length} images, ${r.objects.length} objects (${r.bytes} bytes); kept ${r.kept.images} images, ${r.kept.objects} objects\n`);
        }
      }),
    );

  cmd('rm-ref', 'drop a ref (a gc root)')
    .argument('<NAME>')
    .action((name: string, o: StoreOpt) =>
      withStore(o, false, (s) => {
        if (!s.removeRef(name)) throw new CfsError(ErrorCode.Io, 'no such ref', { input: name });
      }),
    );

  cmd('stats', 'objects, bytes, logical bytes and dedup ratio (from the index)')
    .option('--json', 'JSON output')
    .action((o: StoreOpt) =>
      withStore(o, false, (s) => {
        const st = s.index.stats();
        if (o.json) json(st);
        else
          out.write(
            `objects: ${st.objects}\nbytes: ${st.bytes}\nimages: ${st.images}\nrefs: ${st.refs}\nlogical bytes: ${st.logicalBytes}\ndedup ratio: ${st.dedupRatio.toFixed(2)}\n`,
          );
      }),
    );

  cmd('reindex', 'rebuild index.sqlite from the store tree')
    .action((o: StoreOpt) =>
      withStore(o, false, (s) => {
        s.lock('shared');
        s.reindex();
      }),
    );

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const out = new TextOut();
  const status = { code: ExitCode.Ok };
  const program = buildProgram(out, status);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    const ce = e as { code?: string };
    if (ce.code === 'commander.helpDisplayed' || ce.code === 'commander.help' || ce.code === 'commander.version') return ExitCode.Ok;
    if (typeof ce.code === 'string' && ce.code.startsWith('commander.')) return ExitCode.Usage;
    if (e instanceof CfsError && e.code === ErrorCode.Usage) throw new UsageError(e.message);
    throw e;
  } finally {
    await out.flush();
  }
  return status.code;
}

export const run = (): Promise<void> => runMain(TOOL, () => main(process.argv.slice(2)));
