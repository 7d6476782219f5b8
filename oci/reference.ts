/**
 * Image references as docker and podman read them: [HOST[:PORT]/]REPO[:TAG][@sha256:HEX].
 * The first component is a host when it has a '.' or ':' or is "localhost"; else the image is
 * on Docker Hub (registry-1.docker.io), where one-component names live under library/.
 */
import { CfsError, ErrorCode } from '../format/index.js';

export interface Reference {
  /** Registry host[:port] as written (docker.io for Docker Hub). */
  host: string;
  /** Host to connect to (registry-1.docker.io for docker.io). */
  endpoint: string;
  repo: string;
  tag: string | null;
  digest: string | null;
}

const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const HOST = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$/;

export function parseReference(ref: string): Reference {
  const bad = (why: string): CfsError => new CfsError(ErrorCode.Usage, `bad image reference: ${why}`, { input: ref });
  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`digest must be sha256:<64 hex>`);
  }
  let host = 'docker.io';
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    host = first;
    rest = rest.slice(slash + 1);
    if (!HOST.test(host)) throw bad(`host ${JSON.stringify(host)}`);
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`tag ${JSON.stringify(tag)}`);
  }
  if (!REPO.test(rest)) throw bad(`repository ${JSON.stringify(rest)} (lower-case letters, digits, . _ - and /)`);
  if (host === 'docker.io' && !rest.includes('/')) rest = `library/${rest}`;
  if (!tag && !digest) tag = 'latest';
  return { host, endpoint: host === 'docker.io' ? 'registry-1.docker.io' : host, repo: rest, tag, digest };
}

/** The digest if there is one, else the tag: what /v2/REPO/manifests/… is asked for. */
export const manifestRef = (r: Reference): string => r.digest ?? r.tag!;

/** A ref name for the store: the last path component and the tag (or digest), e.g. "alpine:3.19". */
export function defaultRefName(r: Reference): string {
  const base = r.repo.slice(r.repo.lastIndexOf('/') + 1);
  return r.digest ? `${base}@${r.digest.slice(7, 19)}` : `${base}:${r.tag}`;
}

export const formatReference = (r: Reference): string => `${r.host}/${r.repo}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
