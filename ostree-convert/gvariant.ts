/**
 * A strict, bounded GVariant reader (serialized form, little-endian), enough for OSTree objects.
 *
 * Strict means normal form only: every framing offset inside its container and in order, padding
 * bytes zero, fixed-size values exactly their size, strings valid UTF-8 with one trailing NUL,
 * booleans 0 or 1, no bytes left over. GLib is lenient with other forms (it substitutes default
 * values); we reject them, since OSTree only writes normal form and checksums its bytes.
 * Bounded means: types nest at most MAX_DEPTH deep (variants included), every read is checked
 * against its container, and values never take more memory than a small multiple of the input.
 *
 * Values: y n q i u h → number, x t → bigint, b → boolean, d → number, s o g → string (the raw
 * bytes as latin1, one char per byte, as in format/tree.ts), ay → Uint8Array (a view of the
 * input), other arrays → arrays, tuples and dict entries → arrays, v → Variant, m → value | null.
 */
import { isUtf8 } from 'node:buffer';
import { CfsError, ErrorCode } from '../format/errors.js';

/** Deepest nesting of types (and of variants inside variants), as GLib's G_VARIANT_MAX_RECURSION_DEPTH. */
export const MAX_DEPTH = 128;
/** Longest type string accepted inside a variant. */
export const MAX_TYPE_LEN = 1024;

export type GType =
  | { kind: 'basic'; ch: string; align: number; fixed: number }
  | { kind: 'string'; ch: string }
  | { kind: 'variant' }
  | { kind: 'array'; elem: GType; align: number; fixed: null }
  | { kind: 'maybe'; elem: GType; align: number; fixed: null }
  | { kind: 'tuple'; members: GType[]; align: number; fixed: number | null };

export interface Variant {
  type: string;
  value: GValue;
}
export type GValue = number | bigint | boolean | string | Uint8Array | Variant | null | GValue[];

const BASIC: Record<string, number> = { y: 1, b: 1, n: 2, q: 2, i: 4, u: 4, h: 4, x: 8, t: 8, d: 8 };

/** Alignment and fixed size (null: variable) of a type. */
export const alignOf = (t: GType): number => (t.kind === 'basic' || t.kind === 'array' || t.kind === 'maybe' || t.kind === 'tuple' ? t.align : t.kind === 'variant' ? 8 : 1);
const fixedOf = (t: GType): number | null => (t.kind === 'basic' ? t.fixed : t.kind === 'tuple' ? t.fixed : null);
const alignUp = (n: number, a: number): number => (n + a - 1) & -a;

class TypeParser {
  pos = 0;
  constructor(
    readonly s: string,
    readonly fail: (msg: string) => never,
  ) {}

  one(depth: number): GType {
    if (depth > MAX_DEPTH) this.fail(`type nests deeper than ${MAX_DEPTH}`);
    const c = this.s[this.pos++];
    if (c === undefined) this.fail(`incomplete type string ${JSON.stringify(this.s)}`);
    if (c in BASIC) return { kind: 'basic', ch: c, align: BASIC[c], fixed: BASIC[c] };
    if (c === 's' || c === 'o' || c === 'g') return { kind: 'string', ch: c };
    if (c === 'v') return { kind: 'variant' };
    if (c === 'a' || c === 'm') {
      const elem = this.one(depth + 1);
      return { kind: c === 'a' ? 'array' : 'maybe', elem, align: alignOf(elem), fixed: null };
    }
    if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}';
      const members: GType[] = [];
      while (this.s[this.pos] !== close) {
        if (this.pos >= this.s.length) this.fail(`unterminated ${c} in type string ${JSON.stringify(this.s)}`);
        members.push(this.one(depth + 1));
      }
      this.pos++;
      if (c === '{' && (members.length !== 2 || members[0].kind === 'variant' || !(members[0].kind === 'basic' || members[0].kind === 'string'))) {
        this.fail(`bad dict entry type in ${JSON.stringify(this.s)}`);
      }
      return tupleType(members);
    }
    return this.fail(`bad type character ${JSON.stringify(c)} in ${JSON.stringify(this.s)}`);
  }
}

function tupleType(members: GType[]): GType {
  let align = 1;
  let size: number | null = 0;
  for (const m of members) {
    const a = alignOf(m);
    align = Math.max(align, a);
    const f = fixedOf(m);
    size = f === null || size === null ? null : alignUp(size, a) + f;
  }
  // A fixed-size tuple is padded to its alignment; the unit tuple () takes one byte.
  const fixed = size === null ? null : members.length === 0 ? 1 : alignUp(size, align);
  return { kind: 'tuple', members, align, fixed };
}

/** Parse one complete type string (e.g. "(a{sv}aya(say)sstayay)"). */
export function parseType(s: string, input = 'type'): GType {
  const fail = (msg: string): never => {
    throw new CfsError(ErrorCode.BadObject, msg, { input });
  };
  if (s.length === 0 || s.length > MAX_TYPE_LEN) fail(`type string of ${s.length} characters`);
  const p = new TypeParser(s, fail);
  const t = p.one(1);
  if (p.pos !== s.length) fail(`trailing characters in type string ${JSON.stringify(s)}`);
  return t;
}

/** Reads one value of a known type from `buf`; every failure is a CfsError naming `input`. */
export class GVariantReader {
  private readonly view: DataView;
  constructor(
    readonly buf: Uint8Array,
    readonly input: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private fail(msg: string, offset?: number): never {
    throw new CfsError(ErrorCode.BadObject, msg, { input: this.input, offset });
  }

  /** Read the whole buffer as one value of type `t`. */
  read(t: GType): GValue {
    return this.value(t, 0, this.buf.length, 1);
  }

  private value(t: GType, start: number, end: number, depth: number): GValue {
    if (depth > MAX_DEPTH) this.fail(`values nest deeper than ${MAX_DEPTH}`, start);
    const size = end - start;
    switch (t.kind) {
      case 'basic':
        if (size !== t.fixed) this.fail(`'${t.ch}' value of ${size} bytes (expected ${t.fixed})`, start);
        return this.basic(t.ch, start);
      case 'string':
        return this.string(start, end);
      case 'variant':
        return this.variant(start, end, depth);
      case 'maybe':
        return this.maybe(t, start, end, depth);
      case 'array':
        return this.array(t, start, end, depth);
      case 'tuple':
        return this.tuple(t, start, end, depth);
    }
  }

  private basic(ch: string, at: number): GValue {
    const v = this.view;
    switch (ch) {
      case 'y':
        return v.getUint8(at);
      case 'b': {
        const b = v.getUint8(at);
        if (b > 1) this.fail(`boolean byte ${b}`, at);
        return b === 1;
      }
      case 'n':
        return v.getInt16(at, true);
      case 'q':
        return v.getUint16(at, true);
      case 'i':
      case 'h':
        return v.getInt32(at, true);
      case 'u':
        return v.getUint32(at, true);
      case 'x':
        return v.getBigInt64(at, true);
      case 't':
        return v.getBigUint64(at, true);
      default:
        return v.getFloat64(at, true);
    }
  }

  private string(start: number, end: number): string {
    if (end === start || this.buf[end - 1] !== 0) this.fail('string without its terminating NUL', start);
    const nul = this.buf.indexOf(0, start);
    if (nul !== end - 1) this.fail('string with a NUL inside', nul);
    const bytes = this.buf.subarray(start, end - 1);
    if (!isUtf8(bytes)) this.fail('string is not valid UTF-8', start);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  }

  private variant(start: number, end: number, depth: number): Variant {
    if (end === start) this.fail('empty variant', start);
    const sep = this.buf.lastIndexOf(0, end - 1);
    if (sep < start) this.fail('variant without a type string', start);
    const typeStr = Buffer.from(this.buf.buffer, this.buf.byteOffset + sep + 1, end - sep - 1).toString('latin1');
    const t = parseType(typeStr, this.input);
    return { type: typeStr, value: this.value(t, start, sep, depth + 1) };
  }

  private maybe(t: { elem: GType }, start: number, end: number, depth: number): GValue {
    if (end === start) return null;
    const f = fixedOf(t.elem);
    if (f !== null) return this.value(t.elem, start, end, depth + 1);
    if (this.buf[end - 1] !== 0) this.fail('maybe value without its trailing zero byte', end - 1);
    return this.value(t.elem, start, end - 1, depth + 1);
  }

  /** Width of the framing offsets in a container of `size` bytes. */
  private static width(size: number): number {
    return size <= 0xff ? 1 : size <= 0xffff ? 2 : size <= 0xffffffff ? 4 : 8;
  }

  private offsetAt(at: number, w: number): number {
    const v = this.view;
    if (w === 1) return v.getUint8(at);
    if (w === 2) return v.getUint16(at, true);
    if (w === 4) return v.getUint32(at, true);
    const big = v.getBigUint64(at, true);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`framing offset ${big} out of range`, at);
    return Number(big);
  }

  /** Zero padding between `from` and `to`. */
  private padding(from: number, to: number): void {
    if (to > from) {
      for (let i = from; i < to; i++) if (this.buf[i] !== 0) this.fail('non-zero padding byte', i);
    }
  }

  private array(t: { elem: GType }, start: number, end: number, depth: number): GValue {
    const size = end - start;
    const f = fixedOf(t.elem);
    if (f !== null) {
      if (size % f !== 0) this.fail(`array of ${size} bytes is not a multiple of its ${f}-byte elements`, start);
      if (t.elem.kind === 'basic' && t.elem.ch === 'y') return this.buf.subarray(start, end);
      const out: GValue[] = new Array(size / f);
      for (let i = 0; i < out.length; i++) out[i] = this.value(t.elem, start + i * f, start + (i + 1) * f, depth + 1);
      return out;
    }
    if (size === 0) return [];
    const w = GVariantReader.width(size);
    if (size < w) this.fail(`array of ${size} bytes has no room for its framing offsets`, start);
    const tableStart = this.offsetAt(end - w, w);
    if (tableStart > size - w || (size - tableStart) % w !== 0) this.fail(`array framing offset ${tableStart} out of range (array of ${size} bytes)`, end - w);
    const n = (size - tableStart) / w;
    if (n === 0) this.fail('array with an empty framing table', end - w);
    const a = alignOf(t.elem);
    const out: GValue[] = new Array(n);
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const s = alignUp(pos, a);
      const e = this.offsetAt(start + tableStart + i * w, w);
      if (s > e || e > tableStart) this.fail(`array element ${i} ends at ${e}, outside ${s}..${tableStart}`, start + tableStart + i * w);
      this.padding(start + pos, start + s);
      out[i] = this.value(t.elem, start + s, start + e, depth + 1);
      pos = e;
    }
    return out;
  }

  private tuple(t: { members: GType[]; fixed: number | null }, start: number, end: number, depth: number): GValue[] {
    const size = end - start;
    if (t.fixed !== null && size !== t.fixed) this.fail(`tuple of ${size} bytes (expected ${t.fixed})`, start);
    if (t.members.length === 0) {
      if (this.buf[start] !== 0) this.fail('unit value is not a zero byte', start);
      return [];
    }
    const w = GVariantReader.width(size);
    let tableEnd = size; // framing offsets are read backwards from the end
    let pos = 0;
    const out: GValue[] = [];
    for (let k = 0; k < t.members.length; k++) {
      const m = t.members[k];
      const s = alignUp(pos, alignOf(m));
      const f = fixedOf(m);
      let e: number;
      if (f !== null) e = s + f;
      else if (k === t.members.length - 1) e = tableEnd;
      else {
        tableEnd -= w;
        if (tableEnd < 0) this.fail('tuple too short for its framing offsets', start);
        e = this.offsetAt(start + tableEnd, w);
      }
      if (s > e || e > tableEnd) this.fail(`tuple member ${k} spans ${s}..${e}, outside the tuple's ${tableEnd} bytes`, start + Math.min(s, size));
      this.padding(start + pos, start + s);
      out.push(this.value(m, start + s, start + e, depth + 1));
      pos = e;
    }
    if (t.fixed !== null) this.padding(start + pos, end);
    else if (pos !== tableEnd) this.fail(`${tableEnd - pos} stray bytes at the end of a tuple`, start + pos);
    return out;
  }
}

/** Parse `buf` as one value of type `type` (a type string or a parsed type). */
export function readGVariant(buf: Uint8Array, type: string | GType, input: string): GValue {
  const t = typeof type === 'string' ? parseType(type, input) : type;
  return new GVariantReader(buf, input).read(t);
}
