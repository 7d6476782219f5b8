/** The composefs format core: tree model, image encoder/decoder, dump text, fs-verity. */
export * from './errors.js';
export * from './layout.js';
export * from './tree.js';
export { parseDump, printDump, dumpToString, ownerPaths, escapeDumpField, escapeLsPath, type ParseOptions } from './dumpfile.js';
export { encodeImage, encodeImageLate, encodePacked, type EncodeOptions, type LateEncodeOptions, type LateImage, type PackOptions, type PackedData, type PackedImage } from './encode.js';
export { dumpImage, dumpCut, dumpPart, partsOverlap, type DumpCut } from './stream-dump.js';
export { decodeImage, type DataPlace, type DecodeOptions, type DecodedImage } from './decode.js';
export { fsverityDigest, FsVerityHasher, UPSTREAM_EMPTY_FILE_DIGEST, sha256, cryptoBlockHasher, type BlockHasher } from './fsverity.js';
export { xxh32 } from './xxhash.js';
