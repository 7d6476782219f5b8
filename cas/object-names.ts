/**
 * The object names of one objects/XX directory, asked whether a digest is among them: packed as
 * latin1 in one buffer, with an open-addressing table over their first 8 hex digits. A Set of
 * strings takes about a microsecond per question on this VM (each string and table bucket is a
 * cache and TLB miss under the hypervisor) and 100 bytes per name; this, two misses and 70 bytes.
 */
const NAME_LEN = 62;
const OBJECT_NAME = /^[0-9a-f]{62}$/;

/** The value of a lowercase hex digit's char code. */
const hexDigit = (c: number): number => (c <= 57 ? c - 48 : c - 87);

/** The 32 bits of the 8 hex digits of `s` from `at`. */
function key(s: string, at: number): number {
  let k = 0;
  for (let i = at; i < at + 8; i++) k = (k << 4) | hexDigit(s.charCodeAt(i));
  return k;
}

export class ObjectNames {
  private readonly bytes: Buffer;
  /** per slot, side by side (one cache line): the name's key, 1 + its index (0 = empty) */
  private readonly slots: Int32Array;
  private readonly mask: number;

  /** Names that are not an object's (62 lowercase hex digits) are left out. */
  constructor(names: readonly string[]) {
    const objects = names.filter((n) => OBJECT_NAME.test(n));
    let size = 16;
    while (size < objects.length * 2) size *= 2;
    this.mask = size - 1;
    this.slots = new Int32Array(2 * size);
    this.bytes = Buffer.allocUnsafe(objects.length * NAME_LEN);
    for (let i = 0; i < objects.length; i++) {
      const n = objects[i];
      this.bytes.write(n, i * NAME_LEN, 'latin1');
      const k = key(n, 0);
      let j = k & this.mask;
      while (this.slots[2 * j + 1] !== 0) j = (j + 1) & this.mask;
      this.slots[2 * j] = k;
      this.slots[2 * j + 1] = i + 1;
    }
  }

  /** Whether the object of `digest` (64 lowercase hex digits: XX, then the name) is here. */
  has(digest: string): boolean {
    const k = key(digest, 2);
    for (let j = k & this.mask; ; j = (j + 1) & this.mask) {
      const s = this.slots[2 * j + 1];
      if (s === 0) return false;
      if (this.slots[2 * j] === k && this.nameIs(s - 1, digest)) return true;
    }
  }

  private nameIs(i: number, digest: string): boolean {
    const b = this.bytes;
    const base = i * NAME_LEN - 2;
    for (let c = 2; c < 2 + NAME_LEN; c++) if (b[base + c] !== digest.charCodeAt(c)) return false;
    return true;
  }
}
