/**
 * latin1 string ↔ bytes helpers. Byte strings (names, values, contents) are latin1 JS strings;
 * Node's Buffer has fast native latin1 paths that its public `write`/`toString` reach only
 * after argument normalisation, which shows in profiles of 200k-entry trees.
 */
interface Latin1Native {
  latin1Write?(s: string, offset: number, length: number): number;
  latin1Slice?(start: number, end: number): string;
}
const proto = Buffer.prototype as unknown as Latin1Native;
const SHORT = 48;

/** Write a latin1 byte string into `buf` at `offset`; returns the bytes written. */
export const writeLatin1: (buf: Buffer, s: string, offset: number) => number = proto.latin1Write
  ? (buf, s, offset) => {
      // short strings: a loop beats the call into C++
      if (s.length > SHORT) return (buf as unknown as Required<Latin1Native>).latin1Write(s, offset, s.length);
      for (let i = 0; i < s.length; i++) buf[offset + i] = s.charCodeAt(i);
      return s.length;
    }
  : (buf, s, offset) => buf.write(s, offset, 'latin1');

/** Read bytes [start, end) of `buf` as a latin1 byte string. */
export const readLatin1: (buf: Buffer, start: number, end: number) => string = proto.latin1Slice
  ? (buf, start, end) => (buf as unknown as Required<Latin1Native>).latin1Slice(start, end)
  : (buf, start, end) => buf.toString('latin1', start, end);
