/** Tar archives built with tar-stream's own encoder, for tests and benchmarks. */
import * as tar from 'tar-stream';

export interface TarEntry {
  header: Partial<tar.Header> & { name: string; pax?: Record<string, string> };
  data?: Buffer | string;
}

export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const p = tar.pack();
  const out: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) out.push(c as Buffer);
  })();
  for (const e of entries) {
    const data = typeof e.data === 'string' ? Buffer.from(e.data) : e.data;
    const h = { ...e.header, mtime: e.header.mtime ?? new Date(1_700_000_000_000) } as tar.Header;
    if (data) h.size = data.length;
    await new Promise<void>((res, rej) => p.entry(h, data ?? Buffer.alloc(0), (err) => (err ? rej(err) : res())));
  }
  p.finalize();
  await done;
  return Buffer.concat(out);
}
