import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { mallocTrim } from '../../cas/sys.js';

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
