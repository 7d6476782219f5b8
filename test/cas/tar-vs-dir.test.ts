/**
 * Differential: a directory packed by GNU tar (gnu and posix formats) and imported with
 * import-tar gives the same image as cfs-writer reading the directory itself.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { importTar } from '../../cas/tar.js';
import { runBin } from '../cli/run.js';
import { bytes, tmpDir, tmpStore } from './helpers.js';

const has = (tool: string): boolean => spawnSync(tool, ['--version']).status === 0;

function makeTree(root: string, xattrs: boolean): void {
  const long = path.join(root, 'l'.repeat(120), 'm'.repeat(200));
  fs.mkdirSync(long, { recursive: true });
  fs.writeFileSync(path.join(long, 'n'.repeat(180)), bytes(40, 5000));
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc', 'small'), 'tiny\n');
  fs.writeFileSync(path.join(root, 'etc', 'empty'), '');
  fs.writeFileSync(path.join(root, 'etc', 'big'), bytes(41, 300_000));
  fs.linkSync(path.join(root, 'etc', 'big'), path.join(root, 'hard'));
  fs.symlinkSync('etc/big', path.join(root, 'sym'));
  fs.chmodSync(path.join(root, 'etc', 'small'), 0o600);
  if (xattrs) {
    spawnSync('setfattr', ['-n', 'user.note', '-v', 'hello', path.join(root, 'etc', 'big')]);
    // binary value (00 ff 00 c3 28: not UTF-8), as security.capability is
    spawnSync('setfattr', ['-n', 'user.bin', '-v', '0sAP8Awyg=', path.join(root, 'etc', 'small')]);
  }
  // Whole seconds: the gnu format keeps no fractions.
  const t = new Date(1_600_000_000_000);
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      if (fs.lstatSync(p).isDirectory()) walk(p);
      fs.lutimesSync(p, t, t);
    }
  };
  walk(root);
  fs.utimesSync(root, t, t);
}

describe.skipIf(!has('tar'))('import-tar vs cfs-writer on the same directory', () => {
  for (const format of ['gnu', 'posix']) {
    it(`tar --format=${format}`, async () => {
      const dir = tmpDir();
      const src = path.join(dir, 'src');
      fs.mkdirSync(src);
      const xattrs = has('setfattr');
      makeTree(src, xattrs);
      const tarFile = path.join(dir, 't.tar');
      const args = [`--format=${format}`, '-cf', tarFile, '-C', src, '.'];
      if (format === 'posix' && xattrs) args.unshift('--xattrs', '--xattrs-include=user.*');
      const t = spawnSync('tar', args);
      expect(t.status, t.stderr.toString()).toBe(0);

      const store = tmpStore();
      const r = await importTar(store, fs.createReadStream(tarFile), { input: tarFile });
      const ours = runBin('cfs-dump', [path.join(store.imagesDir, r.image)]);
      const w = runBin('cfs-writer', ['--hardlinks', '--user-xattrs', src, path.join(dir, 'w.img')]);
      expect(w.code, w.stderr).toBe(0);
      let want = runBin('cfs-dump', [path.join(dir, 'w.img')]).stdout.toString();
      // gnu format carries no xattrs
      if (format === 'gnu') want = want.replace(/ user\.(note|bin)=\S+/g, '');
      expect(ours.stdout.toString()).toBe(want);
      if (format === 'posix' && xattrs) expect(want).toContain('user.bin=\\x00\\xff\\x00\\xc3(');
      store.close();
    });
  }
});
