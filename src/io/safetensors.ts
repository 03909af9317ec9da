// Safetensors reading (one file, or a sharded Hugging Face checkpoint folder) and streaming
// writing.
// io hands out raw little-endian bytes tagged with their dtype; it does no math and no conversion.
// Headers are validated as strictly as the reference Rust implementation: every tensor must fit
// its dtype and shape, and the tensors must tile the data section exactly (no overlap, no holes).
// Reads are positioned (one tensor's bytes at a time), so a checkpoint is never read whole.

import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import { DsError } from '../errors.ts';
import { DTYPE_BYTES, isDType, type DType } from '../tensor/dtypes.ts';
import { openRegularFile, readRegularText } from './files.ts';

/** One tensor as described by a header: where its bytes are, not the bytes themselves. */

/** A file mapped into memory: `view` gives bytes of it without copying. */
export interface Mapping {
  readonly byteLength: number;
  view(offset: number, length: number): Uint8Array;
}

/** How to open checkpoint files: `map` maps a whole file into memory (Kernels.mapFile), or returns null to have it read. */
export interface MapOptions {
  map?: (path: string) => Mapping | null;
}

/** Gives a zeroed buffer of `bytes` bytes for a tensor's data (at least 64-byte aligned). */
export type Allocator = (bytes: number) => Uint8Array;
const plainAlloc: Allocator = (bytes) => new Uint8Array(bytes);

export interface TensorEntry {
  name: string;
  /** The tag as written (F32, BF16, F16, F8_E4M3, I64, U8, F64, ...). */
  dtype: string;
  shape: number[];
  /** Path of the file that holds it. */
  file: string;
  /** Absolute byte offset of its data in that file. */
  offset: number;
  byteLength: number;
}

/**
 * A tensor's bytes: a fresh buffer (byteOffset 0), or, from a mapped file, a view into the
 * mapping at the tensor's offset (check alignment before taking a typed view).
 */
export interface RawTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** What the writers need to know about a tensor before its bytes are asked for. */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/** Bits per element of every dtype tag the safetensors format defines (Rust `Dtype`). */
const SAFETENSORS_DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

/** The 8-byte little-endian u64 that opens every file: the header's length in bytes. */
const LENGTH_PREFIX_BYTES = 8;
/** The reference implementation refuses headers above 100 MB; so do we, before allocating. */
const MAX_HEADER_BYTES = 100_000_000;
/** The header is padded with spaces to this multiple so the data section starts aligned. */
const HEADER_ALIGN = 8;
/** Largest single readSync/writeSync call; Node refuses lengths of 2 GiB and more. */
const IO_CHUNK_BYTES = 1 << 30;
/** Hugging Face's default `max_shard_size` ("5GB", decimal). */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;
const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';
const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;

function bad(file: string, msg: string, tensor?: string): never {
  const where = tensor === undefined ? file : `${file}: tensor ${JSON.stringify(tensor)}`;
  throw new DsError('BAD_SAFETENSORS', `${where}: ${msg}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Element count of `shape`, or undefined when it is not a safe integer. */
function elementCount(shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

/**
 * Open for reading; a missing or unreadable file is MISSING_FILE naming it, anything but a
 * regular file (a folder, a FIFO: never waited on) BAD_SAFETENSORS.
 */
function openForRead(file: string, what = 'file'): number {
  return openRegularFile(file, (why, missing) => {
    if (missing || why.startsWith('cannot')) throw new DsError('MISSING_FILE', `${file}: ${what} ${why}`);
    bad(file, why);
  });
}

/** Fill `buf` from `position`, looping over short reads; false if the file ends first. */
function readFully(fd: number, buf: Uint8Array, position: number): boolean {
  let done = 0;
  while (done < buf.byteLength) {
    const len = Math.min(buf.byteLength - done, IO_CHUNK_BYTES);
    const got = readSync(fd, buf, done, len, position + done);
    if (got === 0) return false;
    done += got;
  }
  return true;
}

function writeFully(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.byteLength) {
    const len = Math.min(buf.byteLength - done, IO_CHUNK_BYTES);
    done += writeSync(fd, buf, done, len);
  }
}

interface ParsedHeader {
  metadata: Record<string, string>;
  entries: Map<string, TensorEntry>;
  fileSize: number;
}

function parseHeader(file: string, fd: number): ParsedHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < LENGTH_PREFIX_BYTES) {
    bad(file, `is ${fileSize} bytes, shorter than the ${LENGTH_PREFIX_BYTES}-byte header length`);
  }
  const prefix = new Uint8Array(LENGTH_PREFIX_BYTES);
  if (!readFully(fd, prefix, 0)) bad(file, 'ended while reading the header length');
  const n64 = new DataView(prefix.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    bad(file, `header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`);
  }
  const n = Number(n64);
  if (LENGTH_PREFIX_BYTES + n > fileSize) {
    bad(file, `header length ${n} extends past the end of the ${fileSize}-byte file (truncated?)`);
  }
  const raw = new Uint8Array(n);
  if (!readFully(fd, raw, LENGTH_PREFIX_BYTES)) bad(file, 'ended while reading the header');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    bad(file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    bad(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) bad(file, 'header is not a JSON object');

  const dataStart = LENGTH_PREFIX_BYTES + n;
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, TensorEntry>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(value)) bad(file, '"__metadata__" is not an object');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') {
          bad(file, `"__metadata__" value for ${JSON.stringify(k)} is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    if (!isPlainObject(value)) bad(file, 'entry is not an object', name);
    const { dtype, shape, data_offsets: offsets } = value;
    if (dtype === undefined) bad(file, 'entry has no "dtype"', name);
    if (shape === undefined) bad(file, 'entry has no "shape"', name);
    if (offsets === undefined) bad(file, 'entry has no "data_offsets"', name);
    if (typeof dtype !== 'string') {
      bad(file, `"dtype" is not a string: ${JSON.stringify(dtype)}`, name);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      bad(file, `"shape" is not a list of non-negative integers: ${JSON.stringify(shape)}`, name);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      bad(file, `"data_offsets" is not [begin, end]: ${JSON.stringify(offsets)}`, name);
    }
    const known = Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_BITS, dtype);
    const bits = SAFETENSORS_DTYPE_BITS[dtype];
    if (!known || bits === undefined) {
      bad(file, `unknown dtype ${JSON.stringify(dtype)}`, name);
    }
    const [begin, end] = offsets as [number, number];
    const at = `data_offsets [${begin}, ${end}]`;
    if (end < begin) bad(file, `${at} end before they begin`, name);
    const count = elementCount(shape);
    const totalBits = count === undefined ? undefined : count * bits;
    if (totalBits === undefined || !Number.isSafeInteger(totalBits)) {
      bad(file, `shape ${JSON.stringify(shape)} is too large`, name);
    }
    if (totalBits % 8 !== 0) {
      bad(file, `shape ${JSON.stringify(shape)} of ${dtype} does not fill a whole byte`, name);
    }
    const byteLength = totalBits / 8;
    if (end - begin !== byteLength) {
      bad(
        file,
        `${at} span ${end - begin} bytes, ` +
          `but ${dtype} ${JSON.stringify(shape)} needs ${byteLength}`,
        name,
      );
    }
    if (end > dataLength) {
      bad(
        file,
        `${at} extend past the end of the data section (${dataLength} bytes; truncated file?)`,
        name,
      );
    }
    entries.set(name, {
      name,
      dtype,
      shape: shape.slice(),
      file,
      offset: dataStart + begin,
      byteLength,
    });
    spans.push({ name, begin, end });
  }

  // The tensors must tile [0, dataLength) exactly, as the reference implementation requires.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prev: { name: string; begin: number; end: number } | undefined;
  for (const s of spans) {
    if (s.begin < covered && prev) {
      bad(
        file,
        `data_offsets [${s.begin}, ${s.end}] overlap tensor ${JSON.stringify(prev.name)} ` +
          `[${prev.begin}, ${prev.end}]`,
        s.name,
      );
    }
    if (s.begin > covered) {
      const hole = `bytes [${covered}, ${s.begin}) of the data section`;
      bad(file, `${hole} before it belong to no tensor`, s.name);
    }
    covered = s.end;
    prev = s;
  }
  if (covered !== dataLength) {
    bad(
      file,
      `data section is ${dataLength} bytes but tensors cover only ${covered} ` +
        `(${dataLength - covered} trailing bytes belong to no tensor)`,
    );
  }
  return { metadata, entries, fileSize };
}

/** One safetensors file: its header is read and validated on open; tensors are read on demand. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly entries: Map<string, TensorEntry>;
  private readonly size: number;
  private fd: number;
  /** The whole file over a memory mapping, when opened with `map`. */
  private mapped: Mapping | null = null;

  private constructor(path: string, fd: number, h: ParsedHeader) {
    this.path = path;
    this.fd = fd;
    this.metadata = h.metadata;
    this.entries = h.entries;
    this.size = h.fileSize;
  }

  /**
   * Read and validate only the header; throws DsError (MISSING_FILE, BAD_SAFETENSORS). With
   * `map` (a function returning the whole file as an ArrayBuffer over a memory mapping), reads
   * return views into the mapping instead of copies.
   */
  static open(path: string, opts: MapOptions = {}): SafetensorsFile {
    const fd = openForRead(path);
    try {
      const f = new SafetensorsFile(path, fd, parseHeader(path, fd));
      f.mapped = opts.map?.(path) ?? null;
      if (f.mapped && f.mapped.byteLength !== f.size) bad(path, 'changed size while being opened');
      return f;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /**
   * Read one tensor's bytes into a fresh buffer from `alloc` (default: a new Uint8Array).
   * Throws MISSING_TENSOR if absent, BAD_DTYPE if its dtype is a valid safetensors tag that
   * dsv3 cannot hold. Reopens the file after close().
   */
  read(name: string, alloc: Allocator = plainAlloc): RawTensor {
    const e = this.entries.get(name);
    if (!e) {
      throw new DsError('MISSING_TENSOR', `${this.path}: no tensor ${JSON.stringify(name)}`);
    }
    if (!isDType(e.dtype)) {
      throw new DsError(
        'BAD_DTYPE',
        `${this.path}: tensor ${JSON.stringify(name)} has dtype ${e.dtype}, ` +
          'which dsv3 cannot use ' +
          `(supported: ${Object.keys(DTYPE_BYTES).join(', ')})`,
      );
    }
    if (this.mapped) {
      return { name, dtype: e.dtype, shape: e.shape.slice(), data: this.mapped.view(e.offset, e.byteLength) };
    }
    if (this.fd < 0) {
      const fd = openForRead(this.path);
      const size = fstatSync(fd).size;
      if (size !== this.size) {
        closeSync(fd);
        bad(this.path, `changed size since its header was read (${this.size} -> ${size} bytes)`);
      }
      this.fd = fd;
    }
    const data = alloc(e.byteLength);
    if (!readFully(this.fd, data, e.offset)) {
      bad(this.path, 'file ended while reading its data (truncated since opened?)', name);
    }
    return { name, dtype: e.dtype, shape: e.shape.slice(), data };
  }

  get isMapped(): boolean {
    return this.mapped !== null;
  }

  /** Release the file descriptor (a later read() reopens it). */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** A Hugging Face checkpoint folder: one file, or shards tied together by an index. */
export class Checkpoint {
  readonly dir: string;
  private readonly files: SafetensorsFile[];
  private readonly where: Map<string, { entry: TensorEntry; file: SafetensorsFile }>;

  private constructor(dir: string, files: SafetensorsFile[]) {
    this.dir = dir;
    this.files = files;
    this.where = new Map();
  }

  /**
   * dir/model.safetensors.index.json (sharded: "weight_map" name→file) if present, else
   * dir/model.safetensors, else every *.safetensors in dir (MISSING_FILE if none). Every shard's
   * header is validated; a tensor held by two files is BAD_SAFETENSORS, an indexed tensor its
   * shard lacks is MISSING_TENSOR. With an index, only the tensors it names are exposed.
   */
  static open(dir: string, opts: MapOptions = {}): Checkpoint {
    let st;
    try {
      st = statSync(dir);
    } catch {
      throw new DsError('MISSING_FILE', `${dir}: checkpoint folder does not exist`);
    }
    if (!st.isDirectory()) throw new DsError('MISSING_FILE', `${dir}: is not a folder`);

    const indexPath = join(dir, INDEX_FILE);
    const opened = new Map<string, SafetensorsFile>();
    const ck = new Checkpoint(dir, []);
    try {
      if (existsSync(indexPath)) {
        const weightMap = readIndex(indexPath);
        for (const [name, shard] of weightMap) {
          let f = opened.get(shard);
          if (!f) {
            const path = join(dir, shard);
            if (!existsSync(path)) {
              throw new DsError(
                'MISSING_FILE',
                `${indexPath}: shard ${JSON.stringify(shard)} (holding tensor ` +
                  `${JSON.stringify(name)}) does not exist: ${path}`,
              );
            }
            f = SafetensorsFile.open(path, opts);
            opened.set(shard, f);
            ck.files.push(f);
          }
          const entry = f.entries.get(name);
          if (!entry) {
            throw new DsError(
              'MISSING_TENSOR',
              `${indexPath}: tensor ${JSON.stringify(name)} is mapped to ${f.path}, ` +
                'which does not hold it',
            );
          }
          ck.where.set(name, { entry, file: f });
        }
        // The index assigns each name one shard; another shard holding it too is ambiguous.
        for (const f of ck.files) {
          for (const name of f.entries.keys()) {
            const owner = ck.where.get(name);
            if (owner && owner.file !== f) duplicate(name, owner.file.path, f.path);
          }
        }
      } else {
        const single = join(dir, SINGLE_FILE);
        const names = existsSync(single)
          ? [SINGLE_FILE]
          : readdirSync(dir)
              .filter((n) => n.endsWith('.safetensors'))
              .sort();
        if (names.length === 0) {
          throw new DsError(
            'MISSING_FILE',
            `${dir}: no ${INDEX_FILE}, no ${SINGLE_FILE} and no *.safetensors file`,
          );
        }
        for (const n of names) {
          const f = SafetensorsFile.open(join(dir, n), opts);
          ck.files.push(f);
          for (const [name, entry] of f.entries) {
            const owner = ck.where.get(name);
            if (owner) duplicate(name, owner.file.path, f.path);
            ck.where.set(name, { entry, file: f });
          }
        }
      }
    } catch (e) {
      ck.close();
      throw e;
    }
    return ck;
  }

  /** Whether tensor data are views into memory mappings of the files. */
  get isMapped(): boolean {
    return this.files.length > 0 && this.files.every((f) => f.isMapped);
  }

  /** Every tensor name, sorted. */
  names(): string[] {
    return [...this.where.keys()].sort();
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** Where a tensor lives; throws DsError MISSING_TENSOR naming tensor and folder. */
  entry(name: string): TensorEntry {
    return this.locate(name).entry;
  }

  /** Read only that tensor's bytes, at its offset, into a fresh buffer (from `alloc`). */
  read(name: string, alloc?: Allocator): RawTensor {
    return this.locate(name).file.read(name, alloc);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private locate(name: string): { entry: TensorEntry; file: SafetensorsFile } {
    const w = this.where.get(name);
    if (!w) {
      throw new DsError(
        'MISSING_TENSOR',
        `${this.dir}: checkpoint has no tensor ${JSON.stringify(name)}`,
      );
    }
    return w;
  }
}

function duplicate(name: string, a: string, b: string): never {
  throw new DsError(
    'BAD_SAFETENSORS',
    `tensor ${JSON.stringify(name)} is stored twice: in ${a} and in ${b}`,
  );
}

/** The index's weight_map as (tensor, shard file name) pairs, validated. */
function readIndex(indexPath: string): [string, string][] {
  let json: unknown;
  try {
    json = JSON.parse(readRegularText(indexPath, (why) => bad(indexPath, why)));
  } catch (e) {
    if (e instanceof DsError) throw e;
    bad(indexPath, `is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) bad(indexPath, 'is not a JSON object');
  const wm = json.weight_map;
  if (!isPlainObject(wm)) bad(indexPath, 'has no "weight_map" object');
  const out: [string, string][] = [];
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard === '') {
      bad(indexPath, `weight_map entry for ${JSON.stringify(name)} is not a file name`);
    }
    if (isAbsolute(shard) || normalize(shard).split(/[\\/]/).includes('..')) {
      bad(indexPath, `weight_map entry for ${JSON.stringify(name)} leaves the folder: ${shard}`);
    }
    out.push([name, shard]);
  }
  return out;
}

function checkSpecs(specs: readonly TensorSpec[], what: string): number[] {
  const seen = new Set<string>();
  return specs.map((s) => {
    const fail = (msg: string): never => {
      throw new DsError('BAD_INPUT', `${what}: tensor ${JSON.stringify(s.name)}: ${msg}`);
    };
    if (typeof s.name !== 'string' || s.name === '__metadata__') fail('invalid tensor name');
    if (seen.has(s.name)) fail('listed twice');
    seen.add(s.name);
    if (!isDType(s.dtype)) fail(`dtype ${JSON.stringify(s.dtype)} is not one dsv3 writes`);
    if (!Array.isArray(s.shape) || !s.shape.every(isCount)) {
      fail(`shape ${JSON.stringify(s.shape)} is not a list of non-negative integers`);
    }
    const n = elementCount(s.shape);
    const bytes = n === undefined ? undefined : n * DTYPE_BYTES[s.dtype];
    if (bytes === undefined || !Number.isSafeInteger(bytes)) fail('shape is too large');
    return bytes as number;
  });
}

/** Tensor indices in data order: element size descending, then name (byte order). */
function fileOrder(specs: readonly TensorSpec[]): number[] {
  const keys = specs.map((s) => Buffer.from(s.name, 'utf8'));
  const size = (i: number) => DTYPE_BYTES[specs[i].dtype];
  const order = specs.map((_, i) => i);
  return order.sort((a, b) => size(b) - size(a) || Buffer.compare(keys[a], keys[b]));
}

function writeFile(
  path: string,
  specs: readonly TensorSpec[],
  sizes: readonly number[],
  data: (name: string) => Uint8Array,
  metadata: Record<string, string>,
): void {
  const order = fileOrder(specs);
  const begins = new Array<number>(specs.length);
  let off = 0;
  for (const i of order) {
    begins[i] = off;
    off += sizes[i];
  }
  // Header keys: __metadata__ first, then tensors by name, as torch writes them. Built by hand
  // because JSON.stringify would move integer-like keys to the front.
  const byName = specs
    .map((_, i) => i)
    .sort((a, b) => Buffer.compare(Buffer.from(specs[a].name), Buffer.from(specs[b].name)));
  const parts = [`"__metadata__":${JSON.stringify(metadata)}`];
  for (const i of byName) {
    const s = specs[i];
    parts.push(
      `${JSON.stringify(s.name)}:{"dtype":${JSON.stringify(s.dtype)},` +
        `"shape":${JSON.stringify(s.shape)},` +
        `"data_offsets":[${begins[i]},${begins[i] + sizes[i]}]}`,
    );
  }
  let header = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (HEADER_ALIGN - (header.byteLength % HEADER_ALIGN)) % HEADER_ALIGN;
  if (pad) header = Buffer.concat([header, Buffer.alloc(pad, ' ')]);
  if (header.byteLength > MAX_HEADER_BYTES) {
    throw new DsError('BAD_INPUT', `${path}: header would exceed ${MAX_HEADER_BYTES} bytes`);
  }
  const prefix = Buffer.alloc(LENGTH_PREFIX_BYTES);
  prefix.writeBigUInt64LE(BigInt(header.byteLength));

  // Write beside the target and rename at the end, so a failure never leaves a half file there.
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  let ok = false;
  try {
    writeFully(fd, prefix);
    writeFully(fd, header);
    for (const i of order) {
      const s = specs[i];
      const bytes = data(s.name);
      if (!(bytes instanceof Uint8Array) || bytes.byteLength !== sizes[i]) {
        throw new DsError(
          'BAD_INPUT',
          `${path}: tensor ${JSON.stringify(s.name)}: data() gave ` +
            `${bytes instanceof Uint8Array ? bytes.byteLength : typeof bytes} bytes, ` +
            `${s.dtype} ${JSON.stringify(s.shape)} needs ${sizes[i]}`,
        );
      }
      writeFully(fd, bytes);
    }
    ok = true;
  } finally {
    closeSync(fd);
    if (ok) renameSync(tmp, path);
    else unlinkSync(tmp);
  }
}

/**
 * Write one safetensors file. `data(name)` is called once per tensor, in file order (element
 * size descending, then name), so callers can stream. `__metadata__` is `{"format": "pt"}` plus
 * `metadata`. The file appears only once complete.
 */
export function writeSafetensors(
  path: string,
  specs: TensorSpec[],
  data: (name: string) => Uint8Array,
  metadata?: Record<string, string>,
): void {
  const sizes = checkSpecs(specs, path);
  writeFile(path, specs, sizes, data, { format: 'pt', ...metadata });
}

/**
 * Write a Hugging Face checkpoint folder: one model.safetensors if everything fits in
 * maxShardBytes (default 5 GB) and !forceIndex, else model-00001-of-0000K.safetensors … plus
 * model.safetensors.index.json ({"metadata":{"total_size"},"weight_map"}). Shards are filled in
 * `specs` order; a tensor larger than maxShardBytes gets a shard of its own. Streams: at most one
 * tensor's bytes in memory at a time. Stale checkpoint files of another layout are removed.
 */
export function writeCheckpoint(
  dir: string,
  specs: TensorSpec[],
  data: (name: string) => Uint8Array,
  opts: { maxShardBytes?: number; forceIndex?: boolean } = {},
): void {
  const max = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(typeof max === 'number' && max > 0)) {
    throw new DsError('BAD_INPUT', `${dir}: maxShardBytes must be positive, got ${max}`);
  }
  const sizes = checkSpecs(specs, dir);
  const total = sizes.reduce((a, b) => a + b, 0);
  mkdirSync(dir, { recursive: true });

  const groups: number[][] = [];
  let cur: number[] = [];
  let curBytes = 0;
  for (let i = 0; i < specs.length; i++) {
    if (cur.length > 0 && curBytes + sizes[i] > max) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(i);
    curBytes += sizes[i];
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);

  const written = new Set<string>();
  if (groups.length === 1 && !opts.forceIndex) {
    writeFile(join(dir, SINGLE_FILE), specs, sizes, data, { format: 'pt' });
    written.add(SINGLE_FILE);
  } else {
    const k = String(groups.length).padStart(5, '0');
    const weightMap: Record<string, string> = {};
    groups.forEach((g, gi) => {
      const file = `model-${String(gi + 1).padStart(5, '0')}-of-${k}.safetensors`;
      const shardSpecs = g.map((i) => specs[i]);
      writeFile(join(dir, file), shardSpecs, g.map((i) => sizes[i]), data, { format: 'pt' });
      for (const i of g) weightMap[specs[i].name] = file;
      written.add(file);
    });
    const sorted: Record<string, string> = {};
    for (const name of Object.keys(weightMap).sort()) sorted[name] = weightMap[name];
    const index = { metadata: { total_size: total }, weight_map: sorted };
    const tmp = join(dir, `${INDEX_FILE}.${process.pid}.tmp`);
    const fd = openSync(tmp, 'w');
    try {
      writeFully(fd, Buffer.from(JSON.stringify(index, null, 2) + '\n', 'utf8'));
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(dir, INDEX_FILE));
    written.add(INDEX_FILE);
  }
  // Like save_pretrained: drop files of an earlier layout that Checkpoint.open would pick up.
  for (const f of readdirSync(dir)) {
    const stale = f === INDEX_FILE || f === SINGLE_FILE || SHARD_NAME.test(f);
    if (stale && !written.has(f)) unlinkSync(join(dir, f));
  }
}

