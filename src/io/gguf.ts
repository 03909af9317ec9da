// GGUF v3 files (llama.cpp's model format): a streaming writer, a header reader, and the tensor
// encodings dsv3 exports (F32, F16, BF16, Q8_0).
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

import { closeSync, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { F16_TABLE, f32ToBf16 } from '../tensor/dtypes.ts';

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

/** The tensor types dsv3 writes, with their ggml_type ids. */
export const GGML_TYPE = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;

/** Q8_0: blocks of 32 values, each an f16 scale d and 32 int8 q (x ≈ d·q). */
export const QK8_0 = 32;
const Q8_0_BLOCK_BYTES = 2 + QK8_0;

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

/** Bytes of a tensor of this type and row-major shape (Q8_0 needs rows of a multiple of 32). */
export function ggmlTensorBytes(type: GgmlTypeName, shape: readonly number[]): number {
  const n = shape.reduce((a, b) => a * b, 1);
  switch (type) {
    case 'F32':
      return 4 * n;
    case 'F16':
    case 'BF16':
      return 2 * n;
    case 'Q8_0': {
      const row = shape.length === 0 ? 1 : shape[shape.length - 1];
      if (row % QK8_0 !== 0) {
        throw new DsError('BAD_INPUT', `Q8_0 needs rows of a multiple of ${QK8_0} values, got shape [${shape}]`);
      }
      return (n / QK8_0) * Q8_0_BLOCK_BYTES;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Encodings

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Round a float to IEEE half precision bits, nearest-even (what ggml's FP32_TO_FP16 does). */
export function f32ToF16(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand right, rounding to nearest-even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into the exponent: correct
  return sign | h;
}

/** C's roundf: nearest, halves away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/**
 * Quantise float32 values to Q8_0 exactly as ggml's quantize_row_q8_0_ref: per block of 32,
 * d = amax / 127 (float32), id = 1/d (0 when d is 0), q = roundf(x · id), d stored as f16.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % QK8_0 !== 0) {
    throw new DsError('BAD_INPUT', `Q8_0 needs a multiple of ${QK8_0} values, got ${x.length}`);
  }
  const nb = x.length / QK8_0;
  const out = new Uint8Array(nb * Q8_0_BLOCK_BYTES);
  const dv = new DataView(out.buffer);
  const f = Math.fround;
  for (let b = 0; b < nb; b++) {
    const base = b * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    dv.setUint16(o, f32ToF16(d), true);
    for (let j = 0; j < QK8_0; j++) dv.setInt8(o + 2 + j, roundf(f(x[base + j] * id)));
  }
  return out;
}

/** Q8_0 bytes back to float32 (d · q), for tests and inspection. */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const nb = bytes.byteLength / Q8_0_BLOCK_BYTES;
  const out = new Float32Array(nb * QK8_0);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    const o = b * Q8_0_BLOCK_BYTES;
    const d = F16_TABLE[dv.getUint16(o, true)];
    for (let j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = Math.fround(d * dv.getInt8(o + 2 + j));
  }
  return out;
}

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
    case 'Q8_0':
      return quantizeQ8_0(x);
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
// Reading (header and tensor bytes; for tests and inspection)

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

/** Parse a GGUF file's header (metadata and tensor infos). Throws DsError on a malformed file. */
export function readGgufHeader(path: string): GgufHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    throw new DsError('MISSING_FILE', `${path}: GGUF file cannot be opened`);
  }
  try {
    const size = fstatSync(fd).size;
    let pos = 0;
    const take = (n: number): Buffer => {
      if (pos + n > size) throw new DsError('BAD_INPUT', `${path}: GGUF header ends early (truncated?)`);
      const b = Buffer.alloc(n);
      let got = 0;
      while (got < n) got += readSync(fd, b, got, n - got, pos + got);
      pos += n;
      return b;
    };
    const u32 = () => take(4).readUInt32LE();
    const u64 = () => Number(take(8).readBigUInt64LE());
    const str = () => take(u64()).toString('utf8');
    const scalar = (t: number): unknown => {
      switch (t) {
        case GgufType.UINT8: return take(1).readUInt8();
        case GgufType.INT8: return take(1).readInt8();
        case GgufType.UINT16: return take(2).readUInt16LE();
        case GgufType.INT16: return take(2).readInt16LE();
        case GgufType.UINT32: return take(4).readUInt32LE();
        case GgufType.INT32: return take(4).readInt32LE();
        case GgufType.FLOAT32: return take(4).readFloatLE();
        case GgufType.BOOL: return take(1).readUInt8() !== 0;
        case GgufType.STRING: return str();
        case GgufType.UINT64: return take(8).readBigUInt64LE();
        case GgufType.INT64: return take(8).readBigInt64LE();
        case GgufType.FLOAT64: return take(8).readDoubleLE();
        default: throw new DsError('BAD_INPUT', `${path}: unknown GGUF value type ${t}`);
      }
    };
    if (u32() !== GGUF_MAGIC) throw new DsError('BAD_INPUT', `${path}: not a GGUF file (bad magic)`);
    const version = u32();
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
        const arr: unknown[] = [];
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
      const ne: number[] = [];
      for (let d = 0; d < nd; d++) ne.push(u64());
      const type = u32();
      const offset = u64();
      tensors.push({ name, shape: ne.reverse(), type, offset });
    }
    const alignment = Number(metadata.get('general.alignment') ?? GGUF_DEFAULT_ALIGNMENT);
    const dataOffset = alignUp(pos, alignment);
    for (const t of tensors) t.offset += dataOffset;
    return { version, metadata, types, tensors, alignment, dataOffset };
  } finally {
    closeSync(fd);
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
