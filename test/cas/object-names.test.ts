import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ObjectNames } from '../../cas/object-names.js';

const hex62 = (): string => randomBytes(31).toString('hex');

describe('ObjectNames', () => {
  it('knows exactly the object names it was given, asked by digest (directory, then name)', () => {
    const names = Array.from({ length: 1000 }, hex62);
    // a name with the same first 8 digits (the table's key) as another
    const twin = names[0].slice(0, 8) + 'f'.repeat(54);
    const t = new ObjectNames([...names, twin]);
    for (const n of [...names, twin]) expect(t.has('ab' + n), n).toBe(true);
    const lastDigit = names[1].slice(0, 61) + (names[1][61] === '0' ? '1' : '0');
    for (const n of [lastDigit, names[0].slice(0, 8) + 'e'.repeat(54), hex62()]) expect(t.has('ab' + n), n).toBe(false);
  });

  it('leaves out what is not an object name (62 lowercase hex digits)', () => {
    const n = hex62();
    const t = new ObjectNames([n.toUpperCase(), n + '.tmp', n.slice(1), 'x']);
    expect(t.has('ab' + n)).toBe(false);
    expect(t.has('ab' + n.slice(1) + '0')).toBe(false);
  });
});
