/** `npm run fuzz`: a long decoder fuzz run (FUZZ_CASES, default 100000; FUZZ_SEED). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzzDecoder } from './fuzz.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shared = process.env.CFS_SHARED_DIR ?? path.resolve(root, '../shared');
const dir = path.join(shared, 'vectors/generated');
const images = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.img'))
  .sort()
  .map((f) => fs.readFileSync(path.join(dir, f)));
const cases = Number(process.env.FUZZ_CASES ?? 100000);
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
const batch = 5000;
const t0 = Date.now();
let total = 0;
let decoded = 0;
let maxMs = 0;
try {
  for (let done = 0; done < cases; done += batch) {
    const s = fuzzDecoder(images, Math.min(batch, cases - done), seed + done);
    total += s.cases;
    decoded += s.decoded;
    maxMs = Math.max(maxMs, s.maxMs);
    process.stderr.write(`\rfuzz: ${total}/${cases} cases, ${decoded} decoded, slowest ${maxMs.toFixed(1)} ms`);
  }
} catch (e) {
  const image = (e as { image?: Buffer }).image;
  process.stderr.write(`\nFAIL: ${(e as Error).message}\n`);
  if (image) {
    fs.writeFileSync('fuzz-failure.img', image);
    process.stderr.write('the failing image is in fuzz-failure.img\n');
  }
  process.exit(1);
}
process.stderr.write(`\nfuzz: ${total} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s, seed ${seed}: no failures\n`);
