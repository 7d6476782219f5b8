/**
 * OCI registry benchmark (BENCH_ONLY=oci): a generated multi-layer image on a loopback
 * docker-registry, pulled by `cfs-cas pull` next to `skopeo copy docker://… oci:DIR` in the same
 * run; then a second image that shares all but its top layer (and ~10% of that layer's files),
 * pulled into the same store and OCI layout: what each transfers. Then the same as composefs
 * artifacts (cfs-cas push; pull; second pull fetches only the objects it lacks).
 *
 * Environment:
 *   BENCH_OCI_MB      content of the image in MiB (default 500, the issue's figure; less is quicker on a small machine)
 *   BENCH_OCI_LAYERS  layers (default 4)
 *   BENCH_OCI_FILES   files (default 2000)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stream } from './cas.js';
import { PKG_ROOT, envInt, runTimed, which } from './util.js';
import { type RunningRegistry, pushTarImage, registryMissing, startRegistry } from '../test-support/registry.js';
import { type TarEntry, makeTar } from '../test-support/tar.js';

const CFS_CAS = path.join(PKG_ROOT, 'bin', 'cfs-cas.js');

/** Files of the layer, half random half repeated (about 2:1 under gzip); `change` picks files to alter. */
function layerFiles(layer: number, files: number, bytes: number, variant: number, change: (i: number) => boolean): TarEntry[] {
  const out: TarEntry[] = [{ header: { name: `l${layer}`, type: 'directory', mode: 0o755 } }];
  const size = Math.max(1, Math.floor(bytes / files));
  for (let i = 0; i < files; i++) {
    const seed = layer * 1_000_003 + i + (change(i) ? variant * 7919 : 0);
    const half = stream(seed, Math.ceil(size / 2));
    out.push({ header: { name: `l${layer}/d${i % 50}/f${i}`, mode: 0o644 }, data: Buffer.concat([half, half]).subarray(0, size) });
  }
  return out;
}

function pull(store: string, ref: string, extra: string[] = []): { seconds: number; res: { blobs: { fetched: boolean }[]; transferredBytes: number; newObjects: number; missing: number } } | undefined {
  const r = runTimed(process.execPath, [CFS_CAS, '--store', store, 'pull', '--plain-http', '--json', ...extra, ref], { captureStdout: true });
  return r && { seconds: r.seconds, res: JSON.parse(r.stdout) };
}

const mb = (n: number): string => (n / (1 << 20)).toFixed(1);

export async function runOciBench(tmp: string): Promise<number> {
  const missing = registryMissing();
  if (missing) {
    console.log(`oci benchmark skipped: ${missing}`);
    return 0;
  }
  const total = envInt('BENCH_OCI_MB', 500, 1) << 20;
  const nLayers = envInt('BENCH_OCI_LAYERS', 4, 1);
  const nFiles = envInt('BENCH_OCI_FILES', 2000, nLayers);
  const skopeo = which('skopeo');
  let reg: RunningRegistry | null = null;
  let failed = false;
  try {
    reg = await startRegistry();
    const per = Math.floor(nFiles / nLayers);
    const layers = [];
    for (let l = 0; l < nLayers; l++) layers.push({ tar: await makeTar(layerFiles(l, per, total / nLayers, 0, () => false)), compression: 'gzip' as const });
    const top = await makeTar(layerFiles(nLayers - 1, per, total / nLayers, 1, (i) => i % 10 === 0));
    const t0 = Date.now();
    await pushTarImage(`${reg.host}/bench/img:v1`, layers);
    await pushTarImage(`${reg.host}/bench/img:v2`, [...layers.slice(0, -1), { tar: top, compression: 'gzip' }]);
    console.log(`\n== oci: ${nLayers} gzip layers, ${nFiles} files, ${mb(total)} MiB (generated and pushed in ${((Date.now() - t0) / 1000).toFixed(1)} s) ==`);

    const store = path.join(tmp, 'oci-store');
    const layout = path.join(tmp, 'oci-layout');
    const first = pull(store, `${reg.host}/bench/img:v1`);
    const sk = skopeo
      ? runTimed(skopeo, ['copy', '-q', '--src-tls-verify=false', `docker://${reg.host}/bench/img:v1`, `oci:${layout}:v1`])
      : undefined;
    if (!first || (skopeo && !sk)) failed = true;
    const line = (label: string, s: number | undefined, note = ''): void => console.log(`${label.padEnd(44)} ${s === undefined ? '   -   ' : `${s.toFixed(2).padStart(7)} s`} ${note}`);
    line('cfs-cas pull img:v1 (empty store)', first?.seconds, first ? `${mb(first.res.transferredBytes)} MiB, ${first.res.newObjects} objects` : '');
    line('skopeo copy docker://…img:v1 oci:DIR', sk?.seconds, skopeo ? '' : '(skopeo not found: apt install skopeo)');
    if (first && sk) console.log(`ratio cfs-cas/skopeo: ${(first.seconds / sk.seconds).toFixed(2)}x (ours also hashes every file and builds the image)`);

    const second = pull(store, `${reg.host}/bench/img:v2`);
    const sk2 = skopeo ? runTimed(skopeo, ['copy', '-q', '--src-tls-verify=false', `docker://${reg.host}/bench/img:v2`, `oci:${layout}:v2`]) : undefined;
    if (second) {
      const fetched = second.res.blobs.filter((b) => b.fetched).length;
      line('cfs-cas pull img:v2 (shares all but 1 layer)', second.seconds, `${fetched} of ${second.res.blobs.length} layers, ${mb(second.res.transferredBytes)} MiB, ${second.res.newObjects} new objects`);
    } else failed = true;
    line('skopeo copy img:v2 into the same layout', sk2?.seconds);

    // composefs artifacts
    const push = (name: string): { seconds: number; res: { packs: number; uploaded: number; uploadedBytes: number } } | undefined => {
      const r = runTimed(process.execPath, [CFS_CAS, '--store', store, 'push', '--plain-http', '--json', name, `${reg!.host}/bench/cfs:${name.slice(4)}`], { captureStdout: true });
      return r && { seconds: r.seconds, res: JSON.parse(r.stdout) };
    };
    const push1 = push('img:v1');
    const push2 = push('img:v2');
    const pushed = (p: typeof push1): string => (p ? `${p.res.uploaded - 2} of ${p.res.packs} packs uploaded, ${mb(p.res.uploadedBytes)} MiB` : '');
    line('cfs-cas push img:v1 (artifact)', push1?.seconds, pushed(push1));
    line('cfs-cas push img:v2 (artifact)', push2?.seconds, pushed(push2));
    const store2 = path.join(tmp, 'oci-store2');
    const a1 = pull(store2, `${reg.host}/bench/cfs:v1`);
    line('cfs-cas pull cfs:v1 (artifact, empty store)', a1?.seconds, a1 ? `${mb(a1.res.transferredBytes)} MiB, ${a1.res.newObjects} objects` : '');
    const a2 = pull(store2, `${reg.host}/bench/cfs:v2`);
    line('cfs-cas pull cfs:v2 (artifact, same store)', a2?.seconds, a2 ? `${mb(a2.res.transferredBytes)} MiB, ${a2.res.newObjects} new objects` : '');
    if (!push1 || !push2 || !a1 || !a2) failed = true;
  } finally {
    await reg?.stop();
    for (const d of ['oci-store', 'oci-store2', 'oci-layout']) fs.rmSync(path.join(tmp, d), { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}
