/**
 * The TOC JSON schema (CRFS / eStargz / zstd:chunked), checked with zod. Field meanings are in
 * ../shared/notes/toc.md. Go writers omit zero values, so every entry field is optional and
 * absence means zero; unknown fields (accesstime, changetime, endOffset, …) are ignored.
 */
import { z } from 'zod';

/** The entry types a TOC may hold. */
export const ENTRY_TYPES = ['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk'] as const;
export type EntryType = (typeof ENTRY_TYPES)[number];

/** Sizes and offsets: int64 in Go, but only values a JS number holds exactly are accepted. */
const size = z
  .number({ invalid_type_error: 'must be a number' })
  .int('must be an integer')
  .nonnegative('must not be negative')
  .max(Number.MAX_SAFE_INTEGER, `must be at most 2^53-1 (${Number.MAX_SAFE_INTEGER})`);
const u32 = z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').nonnegative('must not be negative').max(0xffffffff, 'must fit in 32 bits');
const sha256Digest = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" followed by 64 lower-case hex digits');

export const TocEntrySchema = z.object({
  /** Path as in the tar; `./` prefixes, trailing `/` and `//` are normalized away; "" = root. */
  name: z.string({ invalid_type_error: 'must be a string' }).default(''),
  type: z.enum(ENTRY_TYPES, { errorMap: () => ({ message: `must be one of ${ENTRY_TYPES.join(', ')}` }) }),
  /** reg: the whole file's size (also when chunked). */
  size: size.optional(),
  /** RFC 3339. */
  modtime: z.string().optional(),
  /** symlink target, or the path of the entry a hardlink links to. */
  linkName: z.string().optional(),
  /** tar header mode; only the low 12 bits (permissions, setuid/setgid/sticky) are used. */
  mode: u32.optional(),
  uid: u32.optional(),
  gid: u32.optional(),
  userName: z.string().optional(),
  groupName: z.string().optional(),
  /** Blob offset of the compressed member holding this reg/chunk payload. */
  offset: size.optional(),
  /** Uncompressed offset of the payload inside the stream starting at `offset`. */
  innerOffset: size.optional(),
  devMajor: u32.optional(),
  devMinor: u32.optional(),
  /** name → base64 of the value bytes. */
  xattrs: z.record(z.string()).optional(),
  /** sha256 of the whole regular file (OCI digest, not fs-verity). */
  digest: sha256Digest.optional(),
  chunkOffset: size.optional(),
  /** 0/absent on the last chunk = to the end of the file. */
  chunkSize: size.optional(),
  chunkDigest: sha256Digest.optional(),
  /** zstd:chunked: "" or "zeros" (a hole: no compressed data). */
  chunkType: z.string().optional(),
  /** composefs writer-json extension: the backing path, relative to the mount's base. */
  'x-payload': z.string().optional(),
});
export type TocEntry = z.infer<typeof TocEntrySchema>;

/** The top level; entries are checked one by one so errors can name the entry. */
export const TocSchema = z.object({
  version: z.literal(1, { errorMap: () => ({ message: 'unsupported TOC version (only 1 is known)' }) }),
  entries: z.array(z.unknown(), { invalid_type_error: '"entries" must be an array', required_error: '"entries" is missing' }),
});

/** One line from a zod error: `field: message; field: message`. */
export function describeZodError(e: z.ZodError): string {
  return e.issues
    .slice(0, 3)
    .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message))
    .join('; ');
}
