// Judges a model file by its content, never its name: ONNX is accepted; Python pickles and joblib
// dumps (pickles, often compressed) are refused because loading one executes arbitrary code; any
// other bytes are refused as not ONNX. Both refusals carry the way to convert the model.
//
// Pickle detection:
// - protocols 2-5 begin with PROTO (0x80) and the protocol number: a two-byte magic that no ONNX
//   exporter writes (it would be protobuf field 32, which ModelProto does not have).
// - protocols 0/1 have no magic. Their common first opcodes ('(' ']' '}' 'c' ...) are legal
//   protobuf tags ('(' is ModelProto.model_version), so a first-byte test would misjudge ONNX.
//   Instead the whole stream is walked opcode by opcode and must end in STOP exactly at the last
//   byte; protobuf bytes practically never survive that.
// joblib detection: zlib and gzip blobs are inflated (only their first KiB) and judged by whether a
// pickle comes out; bz2, xz and lz4 frames and joblib's old 'ZF0x' container by magic alone.
// An ONNX model that keeps tensor data in other files (external data) is refused too: that data is
// outside what the sha256 covers and would be read from the server's disk.

import { gunzipSync, inflateSync, constants } from 'node:zlib';
import { isScorelineError, notOnnx, unsupportedFormat } from '../errors.js';
import { readOnnxMetadata, refuseExternalData, type OnnxMetadata } from '../onnx/index.js';

export type ModelFormat = 'onnx' | 'pickle' | 'joblib' | 'unknown';

/** What a refused serialized-Python file is, for the error message. */
interface Sniffed {
  readonly format: 'pickle' | 'joblib';
  readonly what: string;
}

const startsWith = (bytes: Uint8Array, magic: readonly number[], at = 0): boolean =>
  bytes.length >= at + magic.length && magic.every((b, i) => bytes[at + i] === b);

const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

// Pickle protocol 0/1 opcodes and what follows each: none, a fixed number of bytes, one or two
// newline-terminated lines, or a length prefix (1 or 4 bytes little-endian) and that many bytes.
type Arg = 0 | 1 | 2 | 4 | 8 | 'line' | 'lines2' | 'len1' | 'len4';
const OPCODE_GROUPS: readonly [Arg, string][] = [
  [0, '(.012NRabdlst])}eouQ'],
  ['line', 'FILPSVgp'],
  ['lines2', 'ci'],
  [1, 'Khq'],
  [2, 'M'],
  [4, 'Jjr'],
  [8, 'G'],
  ['len1', 'U'],
  ['len4', 'TX'],
];
const OPCODES_0_1: ReadonlyMap<number, Arg> = new Map(
  OPCODE_GROUPS.flatMap(([arg, ops]) => Array.from(ops, (op): [number, Arg] => [op.charCodeAt(0), arg])),
);

const STOP = 0x2e;
const NEWLINE = 0x0a;

/** True when the bytes are one complete protocol 0/1 pickle: valid opcodes ending in STOP at the last byte. */
function isPickle01(bytes: Uint8Array): boolean {
  if (bytes.length < 2 || bytes[bytes.length - 1] !== STOP) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  while (pos < bytes.length) {
    const arg = OPCODES_0_1.get(bytes[pos]!); // pos < bytes.length: the loop condition
    if (arg === undefined) return false;
    if (bytes[pos++] === STOP) return pos === bytes.length && pos > 1;
    if (typeof arg === 'number') pos += arg;
    else if (arg === 'line' || arg === 'lines2') {
      for (let n = arg === 'line' ? 1 : 2; n > 0; n--) {
        const end = bytes.indexOf(NEWLINE, pos);
        if (end < 0) return false;
        pos = end + 1;
      }
    } else if (arg === 'len1') {
      if (pos + 1 > bytes.length) return false;
      pos += 1 + bytes[pos]!;
    } else {
      if (pos + 4 > bytes.length) return false;
      const len = view.getInt32(pos, true);
      if (len < 0) return false;
      pos += 4 + len;
    }
  }
  return false;
}

/**
 * Protocol of a pickle (0 and 1 are reported as 1: they share opcodes), or undefined. `whole` is
 * false for a decompressed head, where the walk to STOP is impossible.
 */
function pickleProtocol(bytes: Uint8Array, whole: boolean): number | undefined {
  const protocol = bytes[1];
  if (bytes[0] === 0x80 && protocol !== undefined && protocol >= 2 && protocol <= 5) return protocol;
  if (whole && isPickle01(bytes)) return 1;
  return undefined;
}

const HEAD = 1024;

/** The first bytes that a zlib or gzip stream inflates to, or undefined when it does not inflate. */
function inflateHead(bytes: Uint8Array, gzip: boolean): Uint8Array | undefined {
  try {
    // Z_SYNC_FLUSH lets a truncated stream yield what it has instead of failing.
    const head = bytes.subarray(0, HEAD);
    const options = { finishFlush: constants.Z_SYNC_FLUSH };
    return gzip ? gunzipSync(head, options) : inflateSync(head, options);
  } catch {
    return undefined;
  }
}

const XZ = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const LZ4_FRAME = [0x04, 0x22, 0x4d, 0x18];
const BZ2_BLOCK = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
const BZ2_EMPTY = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];

function sniffPythonSerialized(bytes: Uint8Array): Sniffed | undefined {
  const protocol = pickleProtocol(bytes, true);
  if (protocol !== undefined) {
    return { format: 'pickle', what: `a Python pickle (protocol ${protocol === 1 ? '0 or 1' : protocol})` };
  }

  const isZlib = bytes.length >= 2 && bytes[0] === 0x78 && ((0x78 << 8) | bytes[1]!) % 31 === 0;
  const isGzip = startsWith(bytes, [0x1f, 0x8b]);
  if (isZlib || isGzip) {
    const head = inflateHead(bytes, isGzip);
    if (head && pickleProtocol(head, false) !== undefined) {
      return { format: 'joblib', what: `a joblib dump (a ${isGzip ? 'gzip' : 'zlib'}-compressed Python pickle)` };
    }
    return undefined;
  }
  const compressed = (kind: string): Sniffed => ({
    format: 'joblib',
    what: `a file compressed with ${kind}, the way joblib stores its Python pickles`,
  });
  const bz2Level = bytes[3];
  if (
    startsWith(bytes, ascii('BZh')) &&
    bz2Level !== undefined &&
    bz2Level >= 0x31 &&
    bz2Level <= 0x39 &&
    (startsWith(bytes, BZ2_BLOCK, 4) || startsWith(bytes, BZ2_EMPTY, 4))
  )
    return compressed('bz2');
  if (startsWith(bytes, XZ)) return compressed('xz');
  if (startsWith(bytes, LZ4_FRAME)) return compressed('lz4');
  if (startsWith(bytes, ascii('ZF0x'))) return { format: 'joblib', what: "a joblib dump in joblib's old zlib container ('ZF' header)" };
  return undefined;
}

/** Validated ONNX metadata, or the reason the bytes are not a servable ONNX model. */
function parseOnnx(bytes: Uint8Array, source: string): OnnxMetadata | string {
  if (bytes.length === 0) return 'the file is empty';
  let meta: OnnxMetadata;
  try {
    meta = readOnnxMetadata(bytes, source);
  } catch (e) {
    // readOnnxMetadata says "<source> is not an ONNX model: <why>" or "<source>: <why>"; keep the why.
    const message = (e as Error).message;
    return message.replace(`${source} is not an ONNX model: `, '').replace(`${source}: `, '');
  }
  if (meta.inputs.length === 0) return 'its graph has no inputs';
  if (meta.outputs.length === 0) return 'its graph has no outputs';
  return meta;
}

/** The format of a model file, judged by its content. */
export function detectFormat(bytes: Uint8Array): ModelFormat {
  const sniffed = sniffPythonSerialized(bytes);
  if (sniffed) return sniffed.format;
  return typeof parseOnnx(bytes, 'model') === 'string' ? 'unknown' : 'onnx';
}

/**
 * Returns the model's ONNX metadata, or throws UNSUPPORTED_MODEL_FORMAT (pickle, joblib), NOT_ONNX
 * (anything else, including ONNX without graph inputs or outputs) or EXTERNAL_DATA (a tensor whose
 * data is in another file); all are 422.
 */
export function assertOnnx(bytes: Uint8Array, source: string): OnnxMetadata {
  const sniffed = sniffPythonSerialized(bytes);
  if (sniffed) throw unsupportedFormat(source, sniffed.what);
  const parsed = parseOnnx(bytes, source);
  if (typeof parsed === 'string') throw notOnnx(source, parsed);
  try {
    refuseExternalData(bytes, source);
  } catch (e) {
    // protobufjs accepted the bytes but the wire walk did not: still not a model we load.
    if (isScorelineError(e) && e.code === 'MODEL_INVALID') throw notOnnx(source, e.message);
    throw e;
  }
  return parsed;
}
