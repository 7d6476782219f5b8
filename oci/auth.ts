/**
 * Registry credentials from $REGISTRY_AUTH_FILE (podman/skopeo) or $DOCKER_CONFIG/config.json
 * (else ~/.docker/config.json): `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`.
 * Credential helpers (credsStore) are not run.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CfsError, ErrorCode } from '../format/index.js';

export interface Credentials {
  username: string;
  password: string;
}

export function authFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.REGISTRY_AUTH_FILE) return env.REGISTRY_AUTH_FILE;
  const dir = env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), '.docker');
  return path.join(dir, 'config.json');
}

/** Credentials for `host` (docker.io also matches Docker's "https://index.docker.io/v1/" key). */
export function findCredentials(host: string, env: NodeJS.ProcessEnv = process.env): Credentials | null {
  const file = authFile(env);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CfsError(ErrorCode.Io, `unreadable credentials file: ${(e as Error).message}`, { input: file });
  }
  let auths: Record<string, { auth?: unknown; username?: unknown; password?: unknown }>;
  try {
    auths = (JSON.parse(text) as { auths?: typeof auths }).auths ?? {};
  } catch (e) {
    throw new CfsError(ErrorCode.Io, `credentials file is not JSON: ${(e as Error).message}`, { input: file });
  }
  const keys = host === 'docker.io' ? ['docker.io', 'index.docker.io', 'https://index.docker.io/v1/', 'registry-1.docker.io'] : [host];
  for (const [k, v] of Object.entries(auths)) {
    const bare = k.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    if (!keys.includes(k) && !keys.includes(bare)) continue;
    if (typeof v.auth === 'string' && v.auth) {
      const plain = Buffer.from(v.auth, 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      if (colon < 0) throw new CfsError(ErrorCode.Io, `auths[${JSON.stringify(k)}].auth is not base64 of user:password`, { input: file });
      return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
    }
    if (typeof v.username === 'string' && typeof v.password === 'string') return { username: v.username, password: v.password };
  }
  return null;
}

export const basicHeader = (c: Credentials): string => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
