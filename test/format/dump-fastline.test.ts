/**
 * The dump parser reads common lines through a fast path over bytes and everything else
 * through the general parser. Both must give the same tree, or the same error, for any input:
 * compared here on every vector input, on mutations of them, and on lines made to sit at the
 * edge of what the fast path takes.
 */
import { describe, expect, it } from 'vitest';
import { dumpToString, parseDump } from '../../format/index.js';
import { prng } from '../../test-support/fuzz.js';
import { loadVectors } from '../support/vectors.js';

function outcome(text: Buffer, strict: boolean, general: boolean): string {
  try {
    return dumpToString(parseDump(text, { strict, general, input: 't' }));
  } catch (e) {
    return `error: ${(e as Error).message}`;
  }
}

function expectSame(text: Buffer, strict: boolean): string {
  const fast = outcome(text, strict, false);
  expect(fast, text.toString('latin1').slice(0, 2000)).toBe(outcome(text, strict, true));
  return fast;
}

const D = 'a'.repeat(64);
const ROOT = '/ 4096 40755 2 0 0 0 1700000000.0 - - -\n';

describe('dump parser: fast path = general parser', () => {
  const vectors = loadVectors();

  it('every vector input (good and should-fail), strict and not', () => {
    for (const v of vectors) for (const strict of [false, true]) expectSame(v.input, strict);
  });

  it('mutated vector inputs', () => {
    const rnd = prng(7);
    const pick = (n: number): number => Math.floor(rnd() * n);
    const bytes = Buffer.from(' \\/.09Aaf=-@\0\nx');
    const inputs = vectors.map((v) => v.input).filter((t) => t.length < 200_000);
    let errors = 0;
    for (let i = 0; i < 3000; i++) {
      const t = Buffer.from(inputs[i % inputs.length]);
      for (let k = 1 + pick(3); k > 0; k--) t[pick(t.length)] = bytes[pick(bytes.length)];
      if (expectSame(t, i % 2 === 0).startsWith('error')) errors++;
    }
    // both kinds of outcome happen
    expect(errors).toBeGreaterThan(300);
    expect(errors).toBeLessThan(2900);
  });

  it('lines at the edges of the fast path', () => {
    const lines = [
      `/f 100 100644 1 0 0 0 1700000000.5 ab/cd - ${D}`,
      `/f 100 100644 1 0 0 0 1700000000.5 ab/cd - ${D.toUpperCase()}`,
      `/f 100 100644 1 0 0 0 1700000000.5 ab/cd - ${D.slice(1)}`,
      `/f 100 100644 1 0 0 7 1700000000.5 - - -`,
      `/c 0 20644 1 0 0 1234567 1700000000.5 - - -`,
      `/c 0 20644 1 0 0 99999999999 1700000000.5 - - -`,
      `/f 3 100644 1 0 0 0 1700000000.0 - abc -`,
      `/f 4 100644 1 0 0 0 1700000000.0 - abc -`,
      `/f 3 100644 4294967297 4294967296 5 0 1700000000.0 - abc -`,
      `/f 3 100644 1 0 0 0 -1.0 - abc -`,
      `/f 3 100644 1 0 0 0 1700000000 - abc -`,
      `/f 3 100644 1 0 0 0 1700000000.1234567890123456 - abc -`,
      `/f 0 100644 1 0 0 0 99999999999999999999.0 - - -`,
      `/l 3 120777 1 0 0 0 1.0 abc - -`,
      `/l 4 120777 1 0 0 0 1.0 abc - -`,
      `/l 3 120777 1 0 0 0 1.0 - - -`,
      `/l 3 120777 1 0 0 0 1.0 abc abc -`,
      `/d 4096 40755 2 0 0 0 1.0 - - -\n/d/x 0 100644 1 0 0 0 1.0 - - -\n/d/x/y 0 100644 1 0 0 0 1.0 - - -`,
      `/d 4096 40755 2 0 0 0 1.0 - - -\n/d//x 0 100644 1 0 0 0 1.0 - - -`,
      `/d 4096 40755 2 0 0 0 1.0 - - -\n/d/ 0 100644 1 0 0 0 1.0 - - -`,
      `/d 4096 40755 2 0 0 0 1.0 - - -\n/d/. 0 100644 1 0 0 0 1.0 - - -\n/d/.. 0 100644 1 0 0 0 1.0 - - -\n/d/.x 0 100644 1 0 0 0 1.0 - - -`,
      `/d/x 0 100644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - - -\n/f 0 100644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a=1 user.b=2 user.a=3`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a=1\n/g 0 100644 1 0 0 0 1.0 - - - user.a=1 security.selinux=x\n/h 0 100644 1 0 0 0 1.0 - - - user.a=2`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a`,
      `/f 0 100644 1 0 0 0 1.0 - - - =x`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a=`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a=${'v'.repeat(70000)}`,
      `/f 0 100644 1 0 0 0 1.0 - - -  user.a=1`,
      `/f 0 100644 1 0 0 0 1.0 - - - user.a=1 `,
      `/f  0 100644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - - -\0`,
      `/f 0 170644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - - - \\x75ser.a=1`,
      `/f 0 @100644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - -`,
      `/${'n'.repeat(256)} 0 100644 1 0 0 0 1.0 - - -`,
      `/${'n'.repeat(255)} 0 100644 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 ${'p'.repeat(4096)} - -`,
      `/f 5001 100644 1 0 0 0 1.0 - ${'c'.repeat(5001)} -`,
      `/w 0 20000 1 0 0 0 1.0 - - -`,
      `/f 0 100644 1 0 0 0 1.0 - - ${'-'.repeat(64)}`,
    ];
    for (const l of lines) {
      for (const strict of [false, true]) {
        expectSame(Buffer.from(`${ROOT}${l}\n`, 'latin1'), strict);
        // the same after many keys (the fast path keeps 32), and with no root line
        const keys = Array.from({ length: 40 }, (_, i) => `user.k${i}=v`).join(' ');
        expectSame(Buffer.from(`${ROOT}/z0 0 100644 1 0 0 0 1.0 - - - ${keys}\n${l}\n`, 'latin1'), strict);
        expectSame(Buffer.from(`${l}\n`, 'latin1'), strict);
      }
    }
  });
});
