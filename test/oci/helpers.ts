import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { PROJECT_ROOT } from '../support/vectors.js';

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run cfs-cas without blocking the event loop (the tests' proxies must keep serving). A
 * credentials file that does not exist keeps the user's own out of the test.
 */
export function cas(store: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return run(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'cfs-cas.js'), '--store', store, ...args], {
    REGISTRY_AUTH_FILE: path.join(store, '..', 'no-auth.json'),
    ...env,
  });
}

export function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: PROJECT_ROOT, env: { ...process.env, CFS_DEBUG: undefined, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** objects/XX/REST → sha256 of the content, for comparing stores. */
export function objectSet(store: string): Map<string, string> {
  const out = new Map<string, string>();
  const dir = path.join(store, 'objects');
  for (const top of fs.readdirSync(dir).sort()) {
    for (const rest of fs.readdirSync(path.join(dir, top)).sort()) {
      out.set(top + rest, createHash('sha256').update(fs.readFileSync(path.join(dir, top, rest))).digest('hex'));
    }
  }
  return out;
}

/** Files under the store's objects/, images/ and refs/ (what a failed pull must not add). */
export function visible(store: string): string[] {
  const out: string[] = [];
  for (const d of ['objects', 'images', 'refs']) {
    const walk = (p: string): void => {
      if (!fs.existsSync(p)) return;
      for (const n of fs.readdirSync(p)) {
        const q = path.join(p, n);
        if (fs.lstatSync(q).isDirectory()) walk(q);
        else out.push(path.relative(store, q));
      }
    };
    walk(path.join(store, d));
  }
  return out.sort();
}

export interface ProxyOptions {
  /** Flip one byte of blob responses whose URL this accepts. */
  corrupt?: (url: string) => boolean;
  /** Forward without the Range header (a server that always sends whole blobs). */
  dropRange?: boolean;
  /** Demand a bearer token, issued at /token for these basic credentials. */
  bearer?: { user: string; password: string };
  /** Demand these basic credentials on every request (a registry with htpasswd auth). */
  basic?: { user: string; password: string };
}

/** An HTTP proxy in front of a registry that can corrupt blobs or play a token-auth registry. */
export async function startProxy(target: string, opts: ProxyOptions): Promise<{ host: string; urls: string[]; stop: () => Promise<void> }> {
  const TOKEN = 'test-token-123';
  const urls: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    urls.push(`${req.method} ${url}`);
    const self = `http://${req.headers.host}`;
    if (opts.bearer) {
      if (url.startsWith('/token')) {
        const want = `Basic ${Buffer.from(`${opts.bearer.user}:${opts.bearer.password}`).toString('base64')}`;
        if (req.headers.authorization !== want) {
          res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: TOKEN }));
        return;
      }
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${self}/token",service="test-registry"` }).end();
        return;
      }
    }
    if (opts.basic && req.headers.authorization !== `Basic ${Buffer.from(`${opts.basic.user}:${opts.basic.password}`).toString('base64')}`) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="test-registry"' }).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers.authorization;
    if (opts.dropRange) delete headers.range;
    const up = http.request({ host: target.split(':')[0], port: Number(target.split(':')[1]), method: req.method, path: url, headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      let flipped = !(req.method === 'GET' && /\/blobs\/sha256:/.test(url) && (ur.statusCode === 200 || ur.statusCode === 206) && opts.corrupt?.(url));
      ur.on('data', (c: Buffer) => {
        if (!flipped) {
          const b = Buffer.from(c);
          b[Math.min(b.length - 1, 600)] ^= 0x01;
          flipped = true;
          res.write(b);
        } else res.write(c);
      });
      ur.on('end', () => res.end());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return { host, urls, stop: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}
