/**
 * A throwaway Distribution registry (Debian's docker-registry) on 127.0.0.1 for tests and the
 * benchmark, and a way to publish a container image made of tar layers to it with our client.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseReference } from '../oci/reference.js';
import { MediaType, Registry } from '../oci/registry.js';

export const REGISTRY_BIN = process.env.CFS_DOCKER_REGISTRY ?? 'docker-registry';

/** Why registry tests can't run here, or null. */
export function registryMissing(): string | null {
  const r = spawnSync(REGISTRY_BIN, ['--version'], { encoding: 'utf8' });
  return r.error ? `${REGISTRY_BIN} not found (apt install docker-registry)` : null;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RunningRegistry {
  /** host:port */
  host: string;
  dir: string;
  /** With TLS: the self-signed certificate clients must trust (NODE_EXTRA_CA_CERTS). */
  cert?: string;
  stop(): Promise<void>;
}

/** A registry on a free loopback port; with `tls`, HTTPS with a fresh self-signed certificate (openssl(1)). */
export async function startRegistry(opts: { tls?: boolean } = {}): Promise<RunningRegistry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-registry-'));
  const port = await freePort();
  const config = path.join(dir, 'config.yml');
  let tls = '';
  const cert = path.join(dir, 'cert.pem');
  if (opts.tls) {
    const key = path.join(dir, 'key.pem');
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    if (r.error || r.status !== 0) throw new Error(`openssl failed: ${r.error?.message ?? r.stderr}`);
    tls = `  tls:\n    certificate: ${cert}\n    key: ${key}\n`;
  }
  fs.writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${tls}`,
  );
  const child: ChildProcess = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()).length > 65536 && (stderr = stderr.slice(-16384)));
  const host = `127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    if (opts.tls ? await listening(port) : await fetch(`http://${host}/v2/`).then((r) => r.status === 200, () => false)) {
      return { host, dir, stop, ...(opts.tls ? { cert } : {}) };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`docker-registry did not start: ${stderr.slice(-500)}`);
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export type LayerCompression = 'none' | 'gzip' | 'zstd';

const LAYER_TYPES: Record<LayerCompression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** zstd through the zstd(1) command (our code only decompresses). */
export function zstdCompress(data: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 30 });
  if (r.error || r.status !== 0) throw new Error(`zstd failed: ${r.error?.message ?? r.stderr.toString()}`);
  return r.stdout;
}

/** Docker's schema 2 media types (gzip layers only). */
const DOCKER = {
  layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  config: 'application/vnd.docker.container.image.v1+json',
  manifest: MediaType.dockerManifest,
  index: MediaType.dockerList,
};
const OCI = { config: 'application/vnd.oci.image.config.v1+json', manifest: MediaType.ociManifest, index: MediaType.ociIndex };

/**
 * Push an image of these tar layers (lowest first) as REF (plain HTTP), inside an index with
 * one linux/amd64 entry when `index` is set; with `docker`, in Docker's schema 2 media types.
 * Returns the digest REF names.
 */
export async function pushTarImage(ref: string, layers: { tar: Buffer; compression: LayerCompression }[], opts: { index?: boolean; docker?: boolean } = {}): Promise<string> {
  const reg = new Registry(parseReference(ref), { plainHttp: true });
  const types = opts.docker ? DOCKER : OCI;
  const descs = [];
  for (const l of layers) {
    if (opts.docker && l.compression !== 'gzip') throw new Error('docker images have gzip layers');
    const blob = l.compression === 'gzip' ? gzipSync(l.tar) : l.compression === 'zstd' ? zstdCompress(l.tar) : l.tar;
    const digest = sha(blob);
    if (!(await reg.hasBlob(digest))) await reg.pushBlob(digest, blob.length, blob);
    descs.push({ mediaType: opts.docker ? DOCKER.layer : LAYER_TYPES[l.compression], digest, size: blob.length });
  }
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => sha(l.tar)) } }),
  );
  const configDigest = sha(config);
  if (!(await reg.hasBlob(configDigest))) await reg.pushBlob(configDigest, config.length, config);
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: types.manifest, config: { mediaType: types.config, digest: configDigest, size: config.length }, layers: descs }),
  );
  const tag = parseReference(ref).tag!;
  if (!opts.index) {
    await reg.pushManifest(tag, types.manifest, manifest);
    return sha(manifest);
  }
  await reg.pushManifest(sha(manifest), types.manifest, manifest);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: types.index,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: sha(manifest), size: manifest.length, platform: { os: 'linux', architecture: 'arm64' } },
        { mediaType: types.manifest, digest: sha(manifest), size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }),
  );
  await reg.pushManifest(tag, types.index, index);
  return sha(index);
}
