import * as fs from 'node:fs';
import { parseDump } from './dist/format/index.js';
const text = fs.readFileSync('/tmp/big.dump');
let t = performance.now();
const tree = parseDump(text, {});
console.log('parse', (performance.now() - t).toFixed(0));
