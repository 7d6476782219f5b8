import { Transform } from 'node:stream';

/** One status line per layer or blob on a terminal (stderr); silent otherwise. */
export class Progress {
  private last = 0;
  constructor(private readonly out: NodeJS.WriteStream | null = process.stderr.isTTY ? process.stderr : null) {}

  /** Update the line for `label`: `done` of `total` bytes. */
  update(label: string, done: number, total: number): void {
    if (!this.out) return;
    const now = Date.now();
    if (now - this.last < 100) return; // at most 10 updates a second
    this.last = now;
    const pct = total > 0 ? Math.floor((done * 100) / total) : 100;
    this.out.write(`\r\x1b[K${label} ${mib(done)}/${mib(total)} MiB ${pct}%`);
  }

  /** A pass-through stream that updates `label`'s line as bytes go by. */
  tap(label: string, total: number): Transform {
    let done = 0;
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        done += chunk.length;
        this.update(label, done, total);
        cb(null, chunk);
      },
    });
  }

  /** Finish `label`'s line with a note ("done", "skipped: already in the store"). */
  finish(label: string, note: string): void {
    if (!this.out) return;
    this.out.write(`\r\x1b[K${label} ${note}\n`);
  }
}

const mib = (n: number): string => (n / (1 << 20)).toFixed(1);
