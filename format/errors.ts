/** Stable error codes. Every failure caused by bad input is a CfsError with one of these. */
export const ErrorCode = {
  BadMagic: 'CFS_BAD_MAGIC',
  OutOfBounds: 'CFS_OUT_OF_BOUNDS',
  BadInode: 'CFS_BAD_INODE',
  BadDirent: 'CFS_BAD_DIRENT',
  BadXattr: 'CFS_BAD_XATTR',
  Unsupported: 'CFS_UNSUPPORTED',
  TooLarge: 'CFS_TOO_LARGE',
  Cycle: 'CFS_CYCLE',
  DumpSyntax: 'CFS_DUMP_SYNTAX',
  InvalidTree: 'CFS_INVALID_TREE',
  Usage: 'CFS_USAGE',
  Io: 'CFS_IO',
  /** A malformed object of another format read as input (OSTree GVariant objects). */
  BadObject: 'CFS_BAD_OBJECT',
  /** Input whose recomputed checksum differs from the one it is named by. */
  BadChecksum: 'CFS_BAD_CHECKSUM',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CfsErrorDetails {
  /** Name of the input (file name, `-` for stdin, or a description). */
  input?: string;
  /** Byte offset in the input where the problem was found. */
  offset?: number;
  /** Line number (dump text input), 1-based. */
  line?: number;
}

/** The one error class for bad input: a stable code, a message in the user's terms, and where. */
export class CfsError extends Error {
  readonly code: ErrorCode;
  input?: string;
  readonly offset?: number;
  readonly line?: number;

  constructor(code: ErrorCode, message: string, details: CfsErrorDetails = {}) {
    super(message);
    this.name = 'CfsError';
    this.code = code;
    this.input = details.input;
    this.offset = details.offset;
    this.line = details.line;
  }

  /** One line for stderr: `INPUT: CODE at 0xOFF: message` / `INPUT:LINE: CODE: message`. */
  describe(): string {
    let where = this.input ?? '';
    if (this.line !== undefined) where += `:${this.line}`;
    let head = where ? `${where}: ${this.code}` : this.code;
    if (this.offset !== undefined) head += ` at 0x${this.offset.toString(16)}`;
    return `${head}: ${this.message}`;
  }
}

export function isCfsError(e: unknown): e is CfsError {
  return e instanceof CfsError;
}
