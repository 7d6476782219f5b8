import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { findCredentials } from '../../oci/auth.js';
import { mergeLayers } from '../../oci/layers.js';
import { defaultRefName, parseReference } from '../../oci/reference.js';
import { VerifyingStream } from '../../oci/registry.js';
import { CfsError, S_IFDIR, S_IFREG, addChild, newInode, type Inode } from '../../format/index.js';
import { tmpDir } from '../cas/helpers.js';

describe('references', () => {
  it.each([
    ['alpine', { host: 'docker.io', endpoint: 'registry-1.docker.io', repo: 'library/alpine', tag: 'latest', digest: null }],
    ['quay.io/fedora/fedora:41', { host: 'quay.io', endpoint: 'quay.io', repo: 'fedora/fedora', tag: '41', digest: null }],
    ['localhost:5000/a/b', { host: 'localhost:5000', repo: 'a/b', tag: 'latest' }],
    [`127.0.0.1:5000/app@sha256:${'a'.repeat(64)}`, { host: '127.0.0.1:5000', repo: 'app', tag: null, digest: `sha256:${'a'.repeat(64)}` }],
    ['user/app:1.0', { host: 'docker.io', repo: 'user/app', tag: '1.0' }],
  ])('%s', (ref, want) => {
    expect(parseReference(ref)).toMatchObject(want);
  });

  it.each(['Upper/case', 'a/b:bad tag', 'a@sha256:short', 'a//b', ''])('rejects %j', (ref) => {
    expect(() => parseReference(ref)).toThrow(/bad image reference/);
  });

  it('default store names', () => {
    expect(defaultRefName(parseReference('quay.io/fedora/fedora:41'))).toBe('fedora:41');
    expect(defaultRefName(parseReference(`x.io/app@sha256:${'b'.repeat(64)}`))).toBe(`app@${'b'.repeat(12)}`);
  });
});

describe('credentials', () => {
  it('REGISTRY_AUTH_FILE, then DOCKER_CONFIG; docker.io under its legacy key', () => {
    const d = tmpDir();
    const file = path.join(d, 'auth.json');
    fs.writeFileSync(file, JSON.stringify({ auths: { 'reg.example:5000': { auth: Buffer.from('bob:pa:ss').toString('base64') }, 'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw').toString('base64') } } }));
    expect(findCredentials('reg.example:5000', { REGISTRY_AUTH_FILE: file })).toEqual({ username: 'bob', password: 'pa:ss' });
    expect(findCredentials('docker.io', { REGISTRY_AUTH_FILE: file })).toEqual({ username: 'hub', password: 'pw' });
    expect(findCredentials('other.example', { REGISTRY_AUTH_FILE: file })).toBeNull();
    fs.mkdirSync(path.join(d, 'docker'));
    fs.copyFileSync(file, path.join(d, 'docker', 'config.json'));
    expect(findCredentials('reg.example:5000', { DOCKER_CONFIG: path.join(d, 'docker') })).toMatchObject({ username: 'bob' });
    expect(findCredentials('reg.example:5000', { REGISTRY_AUTH_FILE: path.join(d, 'none.json') })).toBeNull();
    fs.writeFileSync(file, '{not json');
    expect(() => findCredentials('x', { REGISTRY_AUTH_FILE: file })).toThrow(CfsError);
  });
});

describe('layer merge', () => {
  const dir = (kids: Record<string, Inode>, mtime = 0n): Inode => {
    const d = newInode(S_IFDIR | 0o755, { mtimeSec: mtime });
    for (const [name, inode] of Object.entries(kids)) addChild(d, { name, inode, link: false });
    return d;
  };
  const file = (digest: string): Inode => newInode(S_IFREG | 0o644, { size: 100, digest, payload: `${digest.slice(0, 2)}/${digest.slice(2)}` });
  const names = (d: Inode, prefix = ''): string[] =>
    d.children!.flatMap((c) => [prefix + c.name, ...(c.inode.children ? names(c.inode, `${prefix}${c.name}/`) : [])]);

  it('a directory replaces a file and a file a directory; whiteouts in a new directory hide nothing', () => {
    const lower = dir({ a: file('a'.repeat(64)), b: dir({ x: file('b'.repeat(64)) }), keep: file('c'.repeat(64)) });
    const upper = dir({ a: dir({ '.wh.y': file('d'.repeat(64)), y: file('e'.repeat(64)) }, 5n), b: file('f'.repeat(64)), '.wh.nothing': file('0'.repeat(64)) });
    const m = mergeLayers([lower, upper]);
    expect(names(m)).toEqual(['a', 'a/y', 'b', 'keep']);
    expect(m.children![0].inode.mtimeSec).toBe(5n);
  });

  it('an opaque directory hides what is below but keeps its own entries; metadata comes from the top entry', () => {
    const lower = dir({ d: dir({ old: file('1'.repeat(64)), sub: dir({ deep: file('2'.repeat(64)) }) }, 1n) });
    const upper = dir({ d: dir({ '.wh..wh..opq': file('0'.repeat(64)), new: file('3'.repeat(64)) }, 2n) });
    const m = mergeLayers([lower, upper]);
    expect(names(m)).toEqual(['d', 'd/new']);
    expect(m.children![0].inode.mtimeSec).toBe(2n);
  });
});

describe('VerifyingStream', () => {
  const run = async (data: Buffer, digest: string, size: number): Promise<void> => {
    const v = new VerifyingStream(digest, size, 'blob');
    for await (const _ of Readable.from([data]).pipe(v)) void _;
    await v.verified;
  };
  const sha = `sha256:${'0'.repeat(64)}`;
  it('fails on too many bytes, too few, and a wrong digest', async () => {
    await expect(run(Buffer.alloc(10), sha, 5)).rejects.toThrow(/larger than the 5 bytes/);
    await expect(run(Buffer.alloc(10), sha, 20)).rejects.toThrow(/truncated blob: 10 of 20/);
    await expect(run(Buffer.alloc(10), sha, 10)).rejects.toThrow(/digest mismatch/);
    await run(Buffer.from('abc'), 'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 3);
  });
});
