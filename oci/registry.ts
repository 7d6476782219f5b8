/**
 * A small client for the OCI distribution API (/v2/…) over Node's global fetch: manifests and
 * blobs by digest, range reads, monolithic blob uploads, and the two auth schemes registries
 * use: a Bearer token fetched from the realm named in the WWW-Authenticate challenge (with
 * basic credentials when we have them), or plain Basic auth.
 */
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { CfsError, ErrorCode } from '../format/index.js';
import { type Credentials, authFile, basicHeader, findCredentials } from './auth.js';
import { type Reference, formatReference } from './reference.js';

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;
const ACCEPT = Object.values(MediaType).join(', ');

/** Manifests and configs are small; anything bigger is refused rather than buffered. */
export const MAX_MANIFEST = 4 << 20;
/** No response headers within this time, or no body bytes for this long: give up. */
const STALL_MS = Number(process.env.CFS_OCI_TIMEOUT_MS) || 60_000;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface Manifest {
  mediaType: string;
  digest: string;
  bytes: Buffer;
  json: Record<string, unknown>;
}

type Scope = 'pull' | 'pull,push';

export class Registry {
  readonly base: string;
  readonly name: string;
  private authorization: string | null = null;
  private creds: Credentials | null | undefined;

  constructor(
    readonly ref: Reference,
    opts: { plainHttp?: boolean } = {},
  ) {
    this.base = `${opts.plainHttp ? 'http' : 'https'}://${ref.endpoint}/v2/${ref.repo}`;
    this.name = `${ref.host}/${ref.repo}`;
  }

  private err(msg: string): CfsError {
    return new CfsError(ErrorCode.Io, msg, { input: this.name });
  }

  private credentials(): Credentials | null {
    if (this.creds === undefined) this.creds = findCredentials(this.ref.host);
    return this.creds;
  }

  /** One HTTP exchange, answering an auth challenge once; the caller checks the status. */
  async request(method: string, url: string, opts: { headers?: Record<string, string>; body?: Buffer | (() => Readable); scope?: Scope } = {}): Promise<Response> {
    const scope = opts.scope ?? 'pull';
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...opts.headers };
      if (this.authorization) headers.authorization = this.authorization;
      const res = await this.fetch(method, url, headers, opts.body);
      if (res.status !== 401 || attempt > 0) {
        if (res.status === 401 || (res.status === 403 && attempt > 0)) {
          await res.body?.cancel();
          throw this.authFailed(res.status);
        }
        return res;
      }
      await res.body?.cancel();
      await this.answerChallenge(res.headers.get('www-authenticate') ?? '', scope);
    }
  }

  private authFailed(status: number): CfsError {
    const c = this.credentials();
    const hint = c ? `as ${c.username}` : `no credentials for ${this.ref.host} in ${authFile()}`;
    return this.err(`authentication failed (HTTP ${status}; ${hint})`);
  }

  private async fetch(method: string, url: string, headers: Record<string, string>, body?: Buffer | (() => Readable)): Promise<Response> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new Error(`no response in ${STALL_MS / 1000} s`)), STALL_MS);
    try {
      const init: RequestInit & { duplex?: 'half' } = { method, headers, signal: ac.signal, redirect: 'follow' };
      if (Buffer.isBuffer(body)) init.body = body as unknown as BodyInit;
      else if (body) {
        init.body = Readable.toWeb(body()) as unknown as ReadableStream;
        init.duplex = 'half';
      }
      return await fetch(url, init);
    } catch (e) {
      const cause = (e as { cause?: Error }).cause;
      throw this.err(`cannot reach ${new URL(url).host}: ${cause?.message ?? (e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Bearer: fetch a token from the realm; Basic: send our credentials. */
  private async answerChallenge(challenge: string, scope: Scope): Promise<void> {
    const m = /^\s*(\w+)\s*(.*)$/.exec(challenge);
    const scheme = m?.[1].toLowerCase();
    const creds = this.credentials();
    if (scheme === 'basic') {
      if (!creds) throw this.authFailed(401);
      this.authorization = basicHeader(creds);
      return;
    }
    if (scheme !== 'bearer') throw this.err(`registry asks for unsupported authentication ${JSON.stringify(challenge.slice(0, 80))}`);
    const params = new Map<string, string>();
    for (const p of m![2].matchAll(/(\w+)="([^"]*)"/g)) params.set(p[1].toLowerCase(), p[2]);
    const realm = params.get('realm');
    if (!realm || !/^https?:\/\//.test(realm)) throw this.err(`bearer challenge without a usable realm: ${JSON.stringify(challenge.slice(0, 120))}`);
    const url = new URL(realm);
    if (params.has('service')) url.searchParams.set('service', params.get('service')!);
    url.searchParams.set('scope', `repository:${this.ref.repo}:${scope}`);
    const headers: Record<string, string> = {};
    if (creds) headers.authorization = basicHeader(creds);
    const res = await this.fetch('GET', url.href, headers);
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw this.authFailed(res.status);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw this.err(`token server ${url.host} answered HTTP ${res.status}`);
    }
    const body = (await readLimited(res, 1 << 20, () => this.err('token response too large'))).toString('utf8');
    let token: unknown;
    try {
      const j = JSON.parse(body) as { token?: unknown; access_token?: unknown };
      token = j.token ?? j.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || !token) throw this.err(`token server ${url.host} gave no token`);
    this.authorization = `Bearer ${token}`;
  }

  /** GET a manifest or index by tag or digest; checks the digest when asked by digest. */
  async manifest(reference: string): Promise<Manifest> {
    const res = await this.request('GET', `${this.base}/manifests/${reference}`, { headers: { accept: ACCEPT } });
    const where = `${formatReference({ ...this.ref, tag: reference.startsWith('sha256:') ? null : reference, digest: reference.startsWith('sha256:') ? reference : null })}`;
    if (res.status === 404) {
      await res.body?.cancel();
      throw new CfsError(ErrorCode.Io, 'manifest not found (HTTP 404)', { input: where });
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new CfsError(ErrorCode.Io, `manifest request failed (HTTP ${res.status})`, { input: where });
    }
    const bytes = await readLimited(res, MAX_MANIFEST, () => new CfsError(ErrorCode.TooLarge, `manifest larger than ${MAX_MANIFEST} bytes`, { input: where }));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) throw new CfsError(ErrorCode.Io, `digest mismatch: manifest has ${digest}`, { input: where });
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new CfsError(ErrorCode.Io, `manifest is not JSON: ${(e as Error).message}`, { input: where });
    }
    if (typeof json !== 'object' || json === null) throw new CfsError(ErrorCode.Io, 'manifest is not a JSON object', { input: where });
    const mediaType = typeof json.mediaType === 'string' ? json.mediaType : (res.headers.get('content-type') ?? '').split(';')[0].trim();
    return { mediaType, digest, bytes, json };
  }

  /** A whole blob, verified (size and sha256) before the stream ends; `verified` settles then. */
  async blob(d: Descriptor): Promise<{ stream: Readable; verified: Promise<void> }> {
    const res = await this.request('GET', `${this.base}/blobs/${d.digest}`);
    await this.blobStatus(res, d.digest);
    const check = new VerifyingStream(d.digest, d.size, this.blobInput(d.digest));
    return { stream: watchBody(res, this.blobInput(d.digest)).pipe(check), verified: check.verified };
  }

  /** A small blob (config) read into memory and verified. */
  async blobBytes(d: Descriptor, limit: number): Promise<Buffer> {
    if (d.size > limit) throw new CfsError(ErrorCode.TooLarge, `blob of ${d.size} bytes exceeds ${limit}`, { input: this.blobInput(d.digest) });
    const { stream, verified } = await this.blob(d);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    await verified;
    return Buffer.concat(chunks);
  }

  /**
   * Bytes [offset, offset+size) of a blob, with a Range request; a server that ignores Range
   * (200) is read from the start, the bytes before `offset` dropped and the rest not read.
   */
  async blobRange(digest: string, offset: number, size: number): Promise<AsyncIterable<Buffer>> {
    const res = await this.request('GET', `${this.base}/blobs/${digest}`, { headers: { range: `bytes=${offset}-${offset + size - 1}` } });
    await this.blobStatus(res, digest);
    return slice(watchBody(res, this.blobInput(digest)), res.status === 206 ? 0 : offset, size, this.blobInput(digest));
  }

  private blobInput(digest: string): string {
    return `${this.name}@${digest}`;
  }

  private async blobStatus(res: Response, digest: string): Promise<void> {
    if (res.ok) return;
    await res.body?.cancel();
    if (res.status === 404) throw new CfsError(ErrorCode.Io, 'blob not found (HTTP 404)', { input: this.blobInput(digest) });
    throw new CfsError(ErrorCode.Io, `blob request failed (HTTP ${res.status})`, { input: this.blobInput(digest) });
  }

  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.request('HEAD', `${this.base}/blobs/${digest}`, { scope: 'pull,push' });
    await res.body?.cancel();
    if (res.status === 404) return false;
    if (res.ok) return true;
    throw this.err(`checking blob ${digest} failed (HTTP ${res.status})`);
  }

  /** Monolithic upload: POST for an upload URL, then one PUT with the bytes and their digest. */
  async pushBlob(digest: string, size: number, body: Buffer | (() => Readable)): Promise<void> {
    const start = await this.request('POST', `${this.base}/blobs/uploads/`, { scope: 'pull,push', headers: { 'content-length': '0' } });
    await start.body?.cancel();
    const loc = start.headers.get('location');
    if (start.status !== 202 || !loc) throw this.err(`starting a blob upload failed (HTTP ${start.status})`);
    const url = new URL(loc, this.base);
    url.searchParams.set('digest', digest);
    const res = await this.request('PUT', url.href, {
      scope: 'pull,push',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
    });
    const text = await res.text();
    if (res.status !== 201) throw this.err(`uploading blob ${digest} failed (HTTP ${res.status}: ${text.slice(0, 200).trim()})`);
  }

  async pushManifest(tag: string, mediaType: string, bytes: Buffer): Promise<void> {
    const res = await this.request('PUT', `${this.base}/manifests/${tag}`, { scope: 'pull,push', headers: { 'content-type': mediaType }, body: bytes });
    const text = await res.text();
    if (res.status !== 201) throw this.err(`pushing the manifest failed (HTTP ${res.status}: ${text.slice(0, 200).trim()})`);
  }
}

async function readLimited(res: Response, limit: number, tooLarge: () => CfsError): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body ?? []) {
    n += (c as Uint8Array).length;
    if (n > limit) {
      await res.body?.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(Buffer.from(c as Uint8Array));
  }
  return Buffer.concat(chunks);
}

/** A response body as a Node stream that fails if no bytes arrive for STALL_MS. */
function watchBody(res: Response, input: string): Readable {
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream, { highWaterMark: 1 << 20 });
  let timer: NodeJS.Timeout | null = null;
  const arm = (): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => body.destroy(new CfsError(ErrorCode.Io, `download stalled for ${STALL_MS / 1000} s`, { input })), STALL_MS);
  };
  arm();
  body.on('data', arm);
  body.on('close', () => timer && clearTimeout(timer));
  return body;
}

/**
 * Passes bytes through and checks them at the end: more bytes than `size` fail at once; fewer,
 * or a sha256 other than `digest`, fail when the input ends. `verified` settles then.
 * A null digest or size is not checked.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private n = 0;
  readonly verified: Promise<void>;
  private settle!: (e?: Error) => void;

  constructor(
    readonly digest: string | null,
    readonly size: number | null,
    readonly input: string,
    readonly what = 'received bytes',
  ) {
    super();
    this.verified = new Promise<void>((res, rej) => (this.settle = (e) => (e ? rej(e) : res())));
    this.verified.catch(() => undefined);
    this.on('error', (e) => this.settle(e));
    this.on('close', () => this.settle(new CfsError(ErrorCode.Io, 'download interrupted', { input })));
    if (digest !== null && !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new CfsError(ErrorCode.Unsupported, `unsupported digest ${JSON.stringify(digest)}`, { input });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    if (this.size !== null && this.n > this.size) {
      return cb(new CfsError(ErrorCode.Io, `digest mismatch: blob is larger than the ${this.size} bytes its descriptor says`, { input: this.input }));
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = `sha256:${this.hash.digest('hex')}`;
    let e: CfsError | null = null;
    if (this.size !== null && this.n !== this.size) e = new CfsError(ErrorCode.Io, `truncated blob: ${this.n} of ${this.size} bytes`, { input: this.input });
    else if (this.digest !== null && got !== this.digest) e = new CfsError(ErrorCode.Io, `digest mismatch: ${this.what} hash to ${got}, expected ${this.digest}`, { input: this.input });
    this.settle(e ?? undefined);
    cb(e);
  }
}

/** Bytes [skip, skip+size) of a stream; stops reading there, fails if the stream ends first. */
async function* slice(body: Readable, skip: number, size: number, input: string): AsyncGenerator<Buffer> {
  let pos = 0;
  const end = skip + size;
  for await (const c of body) {
    const chunk = c as Buffer;
    const from = Math.max(0, skip - pos);
    const to = Math.min(chunk.length, end - pos);
    pos += chunk.length;
    if (from < to) yield chunk.subarray(from, to);
    if (pos >= end) return; // leaving the loop destroys the body
  }
  throw new CfsError(ErrorCode.Io, `short range read: ${Math.max(0, pos - skip)} of ${size} bytes`, { input });
}
