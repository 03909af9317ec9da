// GGUF v3 files (llama.cpp's model format): a streaming writer, a reader (header, and tensors
// read or used in place from a mapping), and the tensor encodings (every format of dtypes.ts
// FORMATS but FP8).
//
// Layout (ggml/docs/gguf.md, gguf-py/gguf/gguf_writer.py): "GGUF" magic, u32 version 3,
// u64 tensor count, u64 metadata count; the metadata as (string key, u32 type, value); one tensor
// info per tensor (string name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64
// offset into the data section); zero padding to `general.alignment` (32); the data section, each
// tensor starting at a multiple of the alignment. Everything little-endian; strings are u64 length
// + UTF-8 bytes.
//
// Shapes here are given in row-major (numpy / safetensors) order, outermost first, and written
// reversed, as gguf-py does: a [rows, cols] matrix becomes ne = {cols, rows}.

import { closeSync, fstatSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { openRegularFile } from './files.ts';
import type { MapOptions, Mapping } from './safetensors.ts';
import { FORMATS, f32ToBf16, f32ToF16, formatOfGgml, rowBytes, type WeightDType } from '../tensor/dtypes.ts';
import { dequantizeQ8_0, quantizeBlocks, quantizeQ8_0 } from '../tensor/quants.ts';

// The f16 rounding and the Q8_0 codec live with the other formats in tensor/; the GGUF writer's
// users still find them here.
export { dequantizeQ8_0, f32ToF16, quantizeQ8_0 };

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf_type). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufScalarType = Exclude<(typeof GgufType)[keyof typeof GgufType], 9>;

/** The tensor types GGUF holds and dsv3 reads and writes: every weight format but FP8 (dtypes.ts FORMATS). */
export type GgmlTypeName = Exclude<WeightDType, 'F8_E4M3'>;

/** ggml_type ids by name, from the one format table. */
export const GGML_TYPE = Object.fromEntries(
  (Object.keys(FORMATS) as WeightDType[]).filter((k) => FORMATS[k].ggml !== null).map((k) => [k, FORMATS[k].ggml!]),
) as Readonly<Record<GgmlTypeName, number>>;

/** One metadata entry. Arrays hold scalars of one type (nested arrays are not needed here). */
export type GgufKV =
  | { key: string; type: GgufScalarType; value: number | bigint | boolean | string }
  | { key: string; type: typeof GgufType.ARRAY; itemType: GgufScalarType; value: readonly (number | bigint | boolean | string)[] };

/** Helpers to build metadata entries with the right types. */
export const kv = {
  u32: (key: string, value: number): GgufKV => ({ key, type: GgufType.UINT32, value }),
  i32: (key: string, value: number): GgufKV => ({ key, type: GgufType.INT32, value }),
  u64: (key: string, value: number | bigint): GgufKV => ({ key, type: GgufType.UINT64, value }),
  f32: (key: string, value: number): GgufKV => ({ key, type: GgufType.FLOAT32, value }),
  bool: (key: string, value: boolean): GgufKV => ({ key, type: GgufType.BOOL, value }),
  str: (key: string, value: string): GgufKV => ({ key, type: GgufType.STRING, value }),
  strs: (key: string, value: readonly string[]): GgufKV => ({ key, type: GgufType.ARRAY, itemType: GgufType.STRING, value }),
  i32s: (key: string, value: readonly number[]): GgufKV => ({ key, type: GgufType.ARRAY, itemType: GgufType.INT32, value }),
  f32s: (key: string, value: readonly number[]): GgufKV => ({ key, type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value }),
};

export interface GgufTensorSpec {
  name: string;
  /** Row-major shape, outermost first (written reversed as ggml's ne). */
  shape: number[];
  type: GgmlTypeName;
}

/** Bytes of a tensor of this type and row-major shape (block types need rows of whole blocks). */
export function ggmlTensorBytes(type: GgmlTypeName, shape: readonly number[]): number {
  const cols = shape.length === 0 ? 1 : shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  if (cols % FORMATS[type].blockElems !== 0) {
    throw new DsError('BAD_INPUT', `${type} needs rows of a multiple of ${FORMATS[type].blockElems} values, got shape [${shape}]`);
  }
  return rows * rowBytes(type, cols);
}

// ---------------------------------------------------------------------------------------------
// Encodings

/** Encode float32 values (row-major, whole rows) in a ggml type. */
export function encodeTensor(x: Float32Array, type: GgmlTypeName): Uint8Array {
  switch (type) {
    case 'F32':
      return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    case 'F16': {
      const u = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) u[i] = f32ToF16(x[i]);
      return new Uint8Array(u.buffer);
    }
    case 'BF16': {
      const u = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) u[i] = f32ToBf16(x[i]);
      return new Uint8Array(u.buffer);
    }
    default:
      return quantizeBlocks(type, x);
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

const IO_CHUNK_BYTES = 1 << 30;

class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  private room(n: number): number {
    if (this.length + n > this.buf.byteLength) {
      const next = Buffer.alloc(Math.max(this.buf.byteLength * 2, this.length + n));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  // room() may replace this.buf: always take the offset before touching the buffer.
  push(b: Uint8Array): void {
    const at = this.room(b.byteLength);
    this.buf.set(b, at);
  }
  u32(v: number): void {
    const at = this.room(4);
    this.buf.writeUInt32LE(v, at);
  }
  u64(v: number | bigint): void {
    const at = this.room(8);
    this.buf.writeBigUInt64LE(BigInt(v), at);
  }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    const at = this.room(n);
    this.buf.write(s, at, 'utf8');
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string, key: string): void {
    const fail = (): never => {
      throw new DsError('BAD_INPUT', `GGUF metadata "${key}": ${JSON.stringify(String(v))} does not fit type ${type}`);
    };
    const num = (): number => (typeof v === 'number' && Number.isFinite(v) ? v : fail());
    const int = (lo: number, hi: number): number => {
      const n = num();
      return Number.isInteger(n) && n >= lo && n <= hi ? n : fail();
    };
    let b: Buffer;
    switch (type) {
      case GgufType.UINT8:
        b = Buffer.alloc(1);
        b.writeUInt8(int(0, 0xff));
        break;
      case GgufType.INT8:
        b = Buffer.alloc(1);
        b.writeInt8(int(-0x80, 0x7f));
        break;
      case GgufType.UINT16:
        b = Buffer.alloc(2);
        b.writeUInt16LE(int(0, 0xffff));
        break;
      case GgufType.INT16:
        b = Buffer.alloc(2);
        b.writeInt16LE(int(-0x8000, 0x7fff));
        break;
      case GgufType.UINT32:
        b = Buffer.alloc(4);
        b.writeUInt32LE(int(0, 0xffffffff));
        break;
      case GgufType.INT32:
        b = Buffer.alloc(4);
        b.writeInt32LE(int(-0x80000000, 0x7fffffff));
        break;
      case GgufType.FLOAT32:
        b = Buffer.alloc(4);
        b.writeFloatLE(typeof v === 'number' ? v : fail());
        break;
      case GgufType.FLOAT64:
        b = Buffer.alloc(8);
        b.writeDoubleLE(typeof v === 'number' ? v : fail());
        break;
      case GgufType.BOOL:
        b = Buffer.alloc(1);
        b.writeUInt8(typeof v === 'boolean' ? (v ? 1 : 0) : fail());
        break;
      case GgufType.UINT64:
        b = Buffer.alloc(8);
        if (typeof v === 'bigint') b.writeBigUInt64LE(v);
        else b.writeBigUInt64LE(BigInt(int(0, Number.MAX_SAFE_INTEGER)));
        break;
      case GgufType.INT64:
        b = Buffer.alloc(8);
        if (typeof v === 'bigint') b.writeBigInt64LE(v);
        else b.writeBigInt64LE(BigInt(int(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)));
        break;
      case GgufType.STRING:
        if (typeof v !== 'string') fail();
        this.str(v as string);
        return;
      default:
        throw new DsError('BAD_INPUT', `GGUF metadata "${key}": unknown type ${type as number}`);
    }
    this.push(b);
  }
  concat(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeFully(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.byteLength) {
    const len = Math.min(buf.byteLength - done, IO_CHUNK_BYTES);
    done += writeSync(fd, buf, done, len);
  }
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * Write a GGUF v3 file. `data(name)` is called once per tensor, in `tensors` order, and returns
 * its encoded bytes, whole or as a sequence of chunks (so a stacked tensor can be streamed); the
 * total must match the spec. The file appears at `path` only once complete.
 */
export function writeGguf(
  path: string,
  metadata: readonly GgufKV[],
  tensors: readonly GgufTensorSpec[],
  data: (name: string) => Uint8Array | Iterable<Uint8Array>,
  opts: { alignment?: number } = {},
): void {
  const alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const keys = new Set<string>();
  for (const m of metadata) {
    if (keys.has(m.key)) throw new DsError('BAD_INPUT', `${path}: GGUF metadata key "${m.key}" given twice`);
    keys.add(m.key);
  }
  const meta = [...metadata];
  if (alignment !== GGUF_DEFAULT_ALIGNMENT && !keys.has('general.alignment')) {
    meta.push(kv.u32('general.alignment', alignment));
  }
  const names = new Set<string>();
  const sizes = tensors.map((t) => {
    if (names.has(t.name)) throw new DsError('BAD_INPUT', `${path}: tensor "${t.name}" listed twice`);
    names.add(t.name);
    if (!(t.type in GGML_TYPE)) throw new DsError('BAD_INPUT', `${path}: tensor "${t.name}": unknown type ${t.type}`);
    if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new DsError('BAD_INPUT', `${path}: tensor "${t.name}": shape [${t.shape}] must have 1–4 positive dimensions`);
    }
    return ggmlTensorBytes(t.type, t.shape);
  });

  const h = new ByteSink();
  h.u32(GGUF_MAGIC);
  h.u32(GGUF_VERSION);
  h.u64(tensors.length);
  h.u64(meta.length);
  for (const m of meta) {
    h.str(m.key);
    h.u32(m.type);
    if (m.type === GgufType.ARRAY) {
      h.u32(m.itemType);
      h.u64(m.value.length);
      for (const v of m.value) h.scalar(m.itemType, v, m.key);
    } else {
      h.scalar(m.type, m.value, m.key);
    }
  }
  const offsets: number[] = [];
  let off = 0;
  tensors.forEach((t, i) => {
    offsets.push(off);
    h.str(t.name);
    h.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) h.u64(t.shape[d]);
    h.u32(GGML_TYPE[t.type]);
    h.u64(off);
    off = alignUp(off + sizes[i], alignment);
  });
  const headerPad = alignUp(h.length, alignment) - h.length;
  if (headerPad) h.push(Buffer.alloc(headerPad));

  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  let ok = false;
  try {
    writeFully(fd, h.concat());
    tensors.forEach((t, i) => {
      const got = data(t.name);
      let n = 0;
      for (const chunk of got instanceof Uint8Array ? [got] : got) {
        n += chunk.byteLength;
        if (n > sizes[i]) break;
        writeFully(fd, chunk);
      }
      if (n !== sizes[i]) {
        throw new DsError(
          'BAD_INPUT',
          `${path}: tensor "${t.name}": data() gave ${n > sizes[i] ? 'more than ' : ''}${n} bytes, ` +
            `${t.type} [${t.shape}] needs ${sizes[i]}`,
        );
      }
      const pad = alignUp(sizes[i], alignment) - sizes[i];
      if (pad) writeFully(fd, new Uint8Array(pad));
    });
    ok = true;
  } finally {
    closeSync(fd);
    if (ok) renameSync(tmp, path);
    else unlinkSync(tmp);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/** ggml_type names, for messages about types dsv3 cannot hold. */
const GGML_TYPE_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S',
  20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64',
  29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export function ggmlTypeName(id: number): string {
  return GGML_TYPE_NAMES[id] ?? `type ${id}`;
}

export interface GgufTensorInfo {
  name: string;
  /** Row-major shape (ggml's ne reversed). */
  shape: number[];
  /** ggml type id. */
  type: number;
  /** Absolute byte offset in the file. */
  offset: number;
}

export interface GgufHeader {
  version: number;
  metadata: Map<string, unknown>;
  /** Metadata value types, by key (ARRAY entries as [9, itemType]). */
  types: Map<string, number | [number, number]>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
}

/** Thrown inside the parser when the bytes at hand end; the caller reads more and retries. */
class NeedMore extends Error {}

/**
 * Parse a GGUF header from its first bytes. `complete` says whether `b` is the whole file (then
 * running out is a truncated file); otherwise NeedMore asks for a longer prefix.
 */
function parseGgufHeader(path: string, b: Buffer, complete: boolean): GgufHeader {
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > b.length) {
      if (complete) throw new DsError('BAD_INPUT', `${path}: GGUF header ends early (truncated?)`);
      throw new NeedMore();
    }
  };
  const u32 = () => (need(4), (pos += 4), b.readUInt32LE(pos - 4));
  const u64 = () => {
    need(8);
    const v = b.readBigUInt64LE(pos);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DsError('BAD_INPUT', `${path}: GGUF header holds a count of ${v} (corrupt?)`);
    return Number(v);
  };
  const str = () => {
    const n = u64();
    need(n);
    pos += n;
    return b.toString('utf8', pos - n, pos);
  };
  const scalar = (t: number): unknown => {
    switch (t) {
      case GgufType.UINT8: return need(1), (pos += 1), b.readUInt8(pos - 1);
      case GgufType.INT8: return need(1), (pos += 1), b.readInt8(pos - 1);
      case GgufType.UINT16: return need(2), (pos += 2), b.readUInt16LE(pos - 2);
      case GgufType.INT16: return need(2), (pos += 2), b.readInt16LE(pos - 2);
      case GgufType.UINT32: return u32();
      case GgufType.INT32: return need(4), (pos += 4), b.readInt32LE(pos - 4);
      case GgufType.FLOAT32: return need(4), (pos += 4), b.readFloatLE(pos - 4);
      case GgufType.BOOL: return need(1), (pos += 1), b.readUInt8(pos - 1) !== 0;
      case GgufType.STRING: return str();
      case GgufType.UINT64: return need(8), (pos += 8), b.readBigUInt64LE(pos - 8);
      case GgufType.INT64: return need(8), (pos += 8), b.readBigInt64LE(pos - 8);
      case GgufType.FLOAT64: return need(8), (pos += 8), b.readDoubleLE(pos - 8);
      default: throw new DsError('BAD_INPUT', `${path}: unknown GGUF value type ${t}`);
    }
  };
  if (u32() !== GGUF_MAGIC) throw new DsError('BAD_INPUT', `${path}: not a GGUF file (bad magic)`);
  const version = u32();
  if (version !== 2 && version !== 3) throw new DsError('BAD_INPUT', `${path}: GGUF version ${version} is not supported (2 or 3)`);
  const nTensors = u64();
  const nKv = u64();
  const metadata = new Map<string, unknown>();
  const types = new Map<string, number | [number, number]>();
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const t = u32();
    if (t === GgufType.ARRAY) {
      const it = u32();
      const n = u64();
      if (it === GgufType.ARRAY) throw new DsError('BAD_INPUT', `${path}: GGUF metadata "${key}" nests arrays`);
      const arr: unknown[] = new Array(Math.min(n, 1 << 24));
      arr.length = 0;
      for (let j = 0; j < n; j++) arr.push(scalar(it));
      metadata.set(key, arr);
      types.set(key, [t, it]);
    } else {
      metadata.set(key, scalar(t));
      types.set(key, t);
    }
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = u32();
    if (nd < 1 || nd > 4) throw new DsError('BAD_INPUT', `${path}: tensor "${name}" has ${nd} dimensions`);
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    const type = u32();
    const offset = u64();
    tensors.push({ name, shape: ne.reverse(), type, offset });
  }
  const alignment = Number(metadata.get('general.alignment') ?? GGUF_DEFAULT_ALIGNMENT);
  if (!Number.isInteger(alignment) || alignment < 1) throw new DsError('BAD_INPUT', `${path}: general.alignment ${alignment} is invalid`);
  const dataOffset = alignUp(pos, alignment);
  for (const t of tensors) t.offset += dataOffset;
  return { version, metadata, types, tensors, alignment, dataOffset };
}

/** Whether `path` names a GGUF file (a regular file starting with the GGUF magic), not a folder. */
export function isGgufPath(path: string): boolean {
  let fd: number;
  try {
    if (!statSync(path).isFile()) return false;
    fd = openSync(path, 'r');
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === GGUF_MAGIC;
  } finally {
    closeSync(fd);
  }
}

/** Parse a GGUF file's header (metadata and tensor infos). Throws DsError on a malformed file. */
export function readGgufHeader(path: string): GgufHeader {
  const fd = openGgufFd(path);
  try {
    return readHeaderFd(path, fd, fstatSync(fd).size);
  } finally {
    closeSync(fd);
  }
}

function openGgufFd(path: string): number {
  return openRegularFile(path, (why, missing) => {
    if (missing || why.startsWith('cannot')) throw new DsError('MISSING_FILE', `${path}: GGUF file ${why}`);
    throw new DsError('BAD_INPUT', `${path}: ${why}`);
  });
}

/** Read a growing prefix of the file until the header parses (tokenizer metadata can be MBs). */
function readHeaderFd(path: string, fd: number, size: number): GgufHeader {
  for (let n = Math.min(size, 1 << 20); ; n = Math.min(size, n * 4)) {
    const b = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = readSync(fd, b, got, n - got, got);
      if (r === 0) break;
      got += r;
    }
    try {
      return parseGgufHeader(path, b.subarray(0, got), got >= size);
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
    }
  }
}

/** One tensor's bytes in its stored format. */
export interface GgufTensor {
  name: string;
  dtype: WeightDType;
  shape: number[];
  /** A view into the mapping, or a fresh buffer when the file is read. */
  data: Uint8Array;
}

/**
 * An opened GGUF file. With `map` (Kernels.mapFile: the file mapped into memory), tensor data
 * are views into the mapping, never copied; otherwise each tensor is read into a buffer from
 * `alloc`.
 * Every tensor's extent is checked against the file size when the file is opened.
 */
export class GgufFile {
  readonly header: GgufHeader;
  private readonly byName: Map<string, GgufTensorInfo>;
  private mapped: Mapping | null;
  private fd: number;

  private constructor(readonly path: string, readonly size: number, fd: number, header: GgufHeader, mapped: Mapping | null) {
    this.fd = fd;
    this.header = header;
    this.mapped = mapped;
    this.byName = new Map();
    for (const t of header.tensors) {
      if (this.byName.has(t.name)) throw new DsError('BAD_INPUT', `${path}: tensor "${t.name}" listed twice`);
      this.byName.set(t.name, t);
      const dtype = formatOfGgml(t.type);
      if (dtype === undefined) continue; // reported when (and if) the tensor is used
      const end = t.offset + this.byteLength(t, dtype);
      if (end > size) {
        throw new DsError('BAD_INPUT', `${path}: tensor "${t.name}" extends past the end of the ${size}-byte file (truncated?)`);
      }
    }
  }

  static open(path: string, opts: MapOptions = {}): GgufFile {
    const fd = openGgufFd(path);
    try {
      const size = fstatSync(fd).size;
      const header = readHeaderFd(path, fd, size);
      const mapped = opts.map?.(path) ?? null;
      if (mapped && mapped.byteLength !== size) throw new DsError('BAD_INPUT', `${path}: changed size while being opened`);
      return new GgufFile(path, size, fd, header, mapped);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Whether tensor data are used in place from a mapping of the file. */
  get isMapped(): boolean {
    return this.mapped !== null;
  }

  get metadata(): Map<string, unknown> {
    return this.header.metadata;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new DsError('MISSING_TENSOR', `${this.path}: no tensor "${name}"`);
    return t;
  }

  /** The weight format of a tensor; BAD_DTYPE naming tensor and type when dsv3 has none. */
  dtype(name: string): WeightDType {
    const t = this.info(name);
    const d = formatOfGgml(t.type);
    if (d === undefined) {
      const known = (Object.keys(FORMATS) as WeightDType[]).filter((k) => FORMATS[k].ggml !== null).join(', ');
      throw new DsError('BAD_DTYPE', `${this.path}: tensor "${name}" has ggml type ${ggmlTypeName(t.type)}, which dsv3 cannot use (supported: ${known})`);
    }
    return d;
  }

  private byteLength(t: GgufTensorInfo, dtype: WeightDType): number {
    const cols = t.shape[t.shape.length - 1];
    const rows = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    if (cols % FORMATS[dtype].blockElems !== 0) {
      throw new DsError('BAD_SHAPE', `${this.path}: tensor "${t.name}" [${t.shape}] is ${dtype}, whose rows hold whole blocks of ${FORMATS[dtype].blockElems}`);
    }
    return rows * rowBytes(dtype, cols);
  }

  /** A tensor's bytes: a view into the mapping, or read into `alloc`'s buffer. */
  tensor(name: string, alloc: (bytes: number) => Uint8Array = (n) => new Uint8Array(n)): GgufTensor {
    const t = this.info(name);
    const dtype = this.dtype(name);
    const n = this.byteLength(t, dtype);
    let data: Uint8Array;
    if (this.mapped) {
      data = this.mapped.view(t.offset, n);
    } else {
      if (this.fd < 0) this.fd = openGgufFd(this.path);
      data = alloc(n);
      let got = 0;
      while (got < n) {
        const r = readSync(this.fd, data, got, Math.min(n - got, IO_CHUNK_BYTES), t.offset + got);
        if (r === 0) throw new DsError('BAD_INPUT', `${this.path}: tensor "${name}" extends past the end of the file`);
        got += r;
      }
    }
    return { name, dtype, shape: t.shape.slice(), data };
  }

  /** Release the file descriptor (the mapping stays while tensors use it). */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** Read one tensor's raw bytes from a GGUF file whose header was parsed. */
export function readGgufTensor(path: string, header: GgufHeader, name: string): Uint8Array {
  const t = header.tensors.find((x) => x.name === name);
  if (!t) throw new DsError('MISSING_TENSOR', `${path}: no tensor "${name}"`);
  const typeName = (Object.keys(GGML_TYPE) as GgmlTypeName[]).find((k) => GGML_TYPE[k] === t.type);
  if (!typeName) throw new DsError('BAD_DTYPE', `${path}: tensor "${name}" has ggml type ${t.type}`);
  const n = ggmlTensorBytes(typeName, t.shape);
  const out = new Uint8Array(n);
  const fd = openSync(path, 'r');
  try {
    let got = 0;
    while (got < n) {
      const r = readSync(fd, out, got, n - got, t.offset + got);
      if (r === 0) throw new DsError('BAD_INPUT', `${path}: tensor "${name}" extends past the end of the file`);
      got += r;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
