import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { cPath, mallocTrim, readDirNames } from '../../cas/sys.js';

describe('mallocTrim', () => {
  it('gives freed native memory back: RSS drops once buffers pinned between live ones are freed', (ctx) => {
    v8.setFlagsFromString('--expose_gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;
    // 100 MB of malloc'd buffers; every 64th stays alive, so free() alone cannot shrink the heap
    const keep: Buffer[] = [];
    let freed: Buffer[] | null = [];
    for (let i = 0; i < 100_000; i++) {
      const b = Buffer.allocUnsafeSlow(1000).fill(1);
      (i % 64 === 0 ? keep : freed).push(b);
    }
    freed = null;
    gc();
    gc();
    const before = rssMiB();
    if (!mallocTrim()) {
      console.log('skipped: no malloc_trim in this libc');
      ctx.skip();
    }
    const after = rssMiB();
    expect(before - after).toBeGreaterThan(40);
    expect(keep.every((b) => b[999] === 1)).toBe(true);
  });
});

describe('readDirNames', () => {
  it('gives the names readdir gives, over many getdents64 calls, as latin1 bytes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-dents-'));
    try {
      // 3000 names of ~40 bytes: dirents of ~170 KiB, read 64 KiB at a time
      const names = Array.from({ length: 3000 }, (_, i) => `name-${i}-${'x'.repeat(30)}`);
      names.push('.a', '..b', '...', 'é'); // dots that are not . or .., UTF-8 bytes
      for (const n of names) fs.writeFileSync(path.join(dir, n), '');
      fs.writeFileSync(Buffer.concat([Buffer.from(dir + '/'), Buffer.from([0xff, 0x41])]), ''); // not UTF-8
      const got = readDirNames(cPath(Buffer.from(dir)));
      expect(got).not.toBeNull();
      const want = fs.readdirSync(dir, { encoding: 'latin1' });
      expect(want).toContain('\xffA');
      expect(want).toContain('\xc3\xa9');
      expect([...got!].sort()).toEqual([...want].sort());
      expect(got).toHaveLength(names.length + 1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails as node does, naming the errno and the path', () => {
    expect(() => readDirNames(cPath(Buffer.from('/nonexistent/dir')))).toThrow("ENOENT: no such file or directory, scandir '/nonexistent/dir'");
    expect(() => readDirNames(cPath(Buffer.from('/etc/passwd')))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });
});
