// The native CPU backend: a thin wrapper around the C++ addon in native/ (built into
// build/Release/dsv3_native.node by `npm run build:native`, or during `npm ci`). The
// addon reads and writes the TypedArrays' own memory; nothing is copied here.

import { createRequire } from 'node:module';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FfnWeights, Kernels, MappedFile, RouteParams, SampleResult, SampleRow } from './kernels.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import { FORMATS } from '../tensor/dtypes.ts';
import { DsError } from '../errors.ts';
import { penalizes, sampleBatch as refSampleBatch } from './ref/sample.ts';

type F32 = Float32Array;
type WData = Float32Array | Uint16Array | Uint8Array;

/** The addon's exports (see native/binding.cc). */
/** A weight as the addon's ops take it: see weight() in native/binding.cc. */
export type WeightHandle = object & { readonly __weight: unique symbol };

/** The addon's exports (see native/binding.cc). */
export interface NativeAddon {
  /** One descriptor per matrix, validated once: (data, dtype code, rows, cols, scale, block). */
  weight(data: WData, dt: number, rows: number, cols: number, scale: F32 | null, b0: number, b1: number): WeightHandle;
  matmul(out: F32, x: F32, M: number, w: WeightHandle, r0: number, N: number): void;
  matmulT(out: F32, x: F32, M: number, w: WeightHandle, r0: number, R: number): void;
  matmulHeads(out: F32, x: F32, M: number, H: number, w: WeightHandle, r0: number, step: number, N: number): void;
  matmulTHeads(out: F32, x: F32, M: number, H: number, xs: number, w: WeightHandle, r0: number, step: number, R: number): void;
  embedding(out: F32, w: WeightHandle, ids: Int32Array): void;
  rmsNorm(out: F32, x: F32, weight: F32, M: number, eps: number): void;
  rope(x: F32, T: number, H: number, stride: number, offset: number, pos: Int32Array, freqs: F32): void;
  softmax(x: F32, rows: number, cols: number): void;
  siluMul(out: F32, gate: F32, up: F32, n: number): void;
  add(out: F32, a: F32, n: number): void;
  attnLatent(out: F32, qLat: F32, qPe: F32, kv: F32, pe: F32, T: number, H: number, C: number,
    R: number, p0: number, scale: number): void;
  attention(out: F32, q: F32, k: F32, v: F32, T: number, H: number, Dk: number, Dv: number,
    p0: number, scale: number): void;
  moeRoute(outIdx: Int32Array, outW: F32, logits: F32, T: number, E: number, topk: number,
    nGroup: number, topkGroup: number, softmax: boolean, bias: F32 | null, normalize: boolean,
    scale: number): void;
  gatherRows(out: F32, x: F32, rows: Int32Array, D: number): void;
  scatterAddRows(out: F32, src: F32, rows: Int32Array, weights: F32, D: number): void;
  argmax(x: F32): number;
  f8NanFree(codes: Uint8Array): boolean;
  ffnExperts(y: F32, x: F32, D: number, handles: WeightHandle[], offsets: Int32Array, rows: Int32Array, weights: F32): void;
  setThreads(n: number): void;
  getThreads(): number;
  level(): string;
  levels(): string[];
  setLevel(name: string): void;
  cpuFeatures(): string;
  readBandwidth(bytes: number, reps: number): number;
  setWeightBytes(bytes: number): boolean;
  adviseHugePages(a: ArrayBufferView): boolean;
  mapFile(path: string): object;
  mapSize(handle: object): number;
  mapView(handle: object, offset: number, length: number): ArrayBuffer;
  quantize(out: Uint8Array, w: WeightHandle, type: number): void;
  /** Kernels.sampleBatch on packed rows (see sampleNative). */
  sampleBatch(logits: F32, V: number, rows: Int32Array, params: Float64Array, hist: Int32Array, histOff: Int32Array,
    masks: (Int32Array | Uint32Array | null)[], outIds: Int32Array, outDrew: Uint8Array, outLp: F32,
    outTopIds: Int32Array, outTopLp: F32, maxTop: number): void;
  /** The sampler's Math.exp (0), Math.log (1), Math.log2 (2), or exp via the level's exp_sum (3, x <= 0). */
  jsMath(fn: number, x: Float64Array, out: Float64Array): void;
}


let addon: NativeAddon | null | undefined;
let loadError = '';

/** Where the built addon lives: build/Release, or $DSV3_NATIVE_PATH (for development). */
export function nativeAddonPath(): string {
  if (process.env.DSV3_NATIVE_PATH) return process.env.DSV3_NATIVE_PATH;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  return join(root, 'build', 'Release', 'dsv3_native.node');
}

/** The raw addon, or null (the reason is in nativeLoadError()). Loaded once. */
export function nativeAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    loadError = `${path} is not built`;
    addon = null;
    return null;
  }
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    loadError = e instanceof Error ? e.message.split('\n')[0] : String(e);
    addon = null;
  }
  return addon;
}

export function nativeLoadError(): string {
  nativeAddon();
  return loadError;
}

/** Worker threads of the native pool (the caller counts as one); 0 or less = all cores. */
export function setThreads(n: number): void {
  const a = nativeAddon();
  if (!a) throw new Error(`dsv3: native kernels unavailable (${loadError})`);
  a.setThreads(Math.max(0, Math.floor(n)));
}

export interface NativeInfo {
  level: string;
  levels: string[];
  threads: number;
  cpuFeatures: string;
}

export function nativeInfo(): NativeInfo | null {
  const a = nativeAddon();
  if (!a) return null;
  return { level: a.level(), levels: a.levels(), threads: a.getThreads(), cpuFeatures: a.cpuFeatures() };
}

/**
 * Switch the instruction-set level (one of nativeInfo().levels). The best level is chosen
 * at load (or by DSV3_NATIVE_LEVEL); switching is meant for tests and benchmarks.
 */
export function setNativeLevel(level: string): void {
  const a = nativeAddon();
  if (!a) throw new Error(`dsv3: native kernels unavailable (${loadError})`);
  a.setLevel(level);
}

/**
 * Memory read bandwidth (GB/s) of a streaming sum over `bytes` bytes on every pool thread,
 * the best of `reps` passes; null when the addon is not loaded.
 */
export function readBandwidth(bytes = 256 << 20, reps = 3): number | null {
  const a = nativeAddon();
  return a ? a.readBandwidth(bytes, reps) : null;
}

/**
 * Ask Linux to back a (large, preferably not yet written) array with 2 MiB pages. Streaming
 * a weight over thousands of 4 KiB pages costs a TLB miss per page, expensive under a
 * hypervisor. Returns false where unsupported or when the addon is not loaded.
 */
export function adviseHugePages(a: ArrayBufferView): boolean {
  const n = nativeAddon();
  return n ? n.adviseHugePages(a) : false;
}

/** Checkpoint files up to this size are read into memory rather than mapped (see mapFile). */
const READ_MAX_BYTES = 64 << 20;

/** Mapped files are viewed through windows of 2 · MAP_STEP bytes starting every MAP_STEP. */
const MAP_STEP = 2 ** 31;

/** Arenas of this size hold the smaller weight matrices; bigger ones get their own buffer. */
const ARENA_BYTES = 64 << 20;

/** Bytes handed out by every weight allocator of this process (weights are never given back). */
let weightBytes = 0;

/**
 * A bump allocator over ARENA_BYTES arenas advised to use 2 MiB pages before anything is
 * written to them (so the kernel backs them with huge pages on first touch). Matrices of a
 * quarter arena or more get a buffer of their own, advised the same way.
 */
function hugePageAllocator(a: NativeAddon): (bytes: number) => Uint8Array {
  let arena: Uint8Array | null = null;
  let used = 0;
  return (bytes) => {
    // The addon picks its decode order by whether all weights fit in the last-level cache.
    weightBytes += bytes;
    a.setWeightBytes(weightBytes);
    if (bytes >= ARENA_BYTES / 4) {
      const own = new Uint8Array(bytes);
      a.adviseHugePages(own);
      return own;
    }
    const size = (bytes + 63) & ~63;
    if (!arena || used + size > arena.length) {
      arena = new Uint8Array(ARENA_BYTES);
      a.adviseHugePages(arena);
      used = 0;
    }
    const out = arena.subarray(used, used + bytes);
    used += size;
    return out;
  };
}

/** A file mapped into memory, whatever its size (Kernels.mapFile decides when to map). */
function mapInPlace(a: NativeAddon, path: string): MappedFile {
  const handle = a.mapFile(path);
  const byteLength = a.mapSize(handle);
  // Mapped weights count toward the last-level-cache decision like allocated ones.
  weightBytes += byteLength;
  a.setWeightBytes(weightBytes);
  // Node caps one ArrayBuffer over outside memory at 4 GiB, and V8 counts each one's size
  // toward its garbage-collection pressure when it is made: one per tensor made a 10 GB model
  // load in seconds of collections. So views come from a few windows of 4 GiB that start
  // every 2 GiB (each range of up to 2 GiB lies inside one), made on first use.
  const windows = new Map<number, ArrayBuffer>();
  const view = (offset: number, length: number): Uint8Array => {
    if (length > MAP_STEP) return new Uint8Array(a.mapView(handle, offset, length));
    const k = Math.floor(offset / MAP_STEP);
    let w = windows.get(k);
    if (!w) windows.set(k, (w = a.mapView(handle, k * MAP_STEP, Math.min(2 * MAP_STEP, byteLength - k * MAP_STEP))));
    return new Uint8Array(w, offset - k * MAP_STEP, length);
  };
  return { byteLength, view };
}

/** `path` mapped into memory through the addon (for tests of the mapped path); null without it. */
export function mapFileInPlace(path: string): MappedFile | null {
  const a = nativeAddon();
  return a ? mapInPlace(a, path) : null;
}

/** Numbers per row in the addon's sampleBatch params (see SampleBatch in native/binding.cc). */
const SAMPLE_PARAMS = 10;

/**
 * Whether the addon's ports of Math.exp, Math.log and Math.log2 (native/js_math.h) give this
 * Node's bits, on a fixed spread of arguments (the sampler's ids depend on them). They are
 * V8's fdlibm functions; a Node whose V8 computes them differently gets the reference sampler.
 */
export function nativeMathMatches(a: NativeAddon): boolean {
  const n = 16384;
  const neg = new Float64Array(n);
  const pos = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    neg[i] = i < 8 ? [-0, -1e-300, -(2 ** -28), -0.34657359027997264, -0.34657359027997275, -1.0397207708399179, -745.1332191019412, -Infinity][i]!
      : -((i * 0.6180339887498949) % 1) * 2 ** ((i % 11) - 1) * (i % 3 === 0 ? 90 : 1);
    pos[i] = i < 4 ? [1, 0.5, 2 ** -0.125, 5e-324][i]! : ((i * 0.7548776662466927) % 1) * 2 ** ((i % 61) - 40) + 2 ** -1074;
  }
  const out = new Float64Array(n);
  const same = (fn: number, x: Float64Array, f: (v: number) => number) => {
    a.jsMath(fn, x, out);
    for (let i = 0; i < n; i++) if (!Object.is(out[i], f(x[i]!))) return false;
    return true;
  };
  return same(0, neg, Math.exp) && same(3, neg, Math.exp) && same(1, pos, Math.log) && same(2, pos, Math.log2);
}

/** Kernels.sampleBatch through the addon: the rows packed into flat arrays, one call, all rows over the pool. */
function sampleNative(a: NativeAddon, logits: F32, V: number, rows: readonly SampleRow[]): SampleResult[] {
  if (!Number.isInteger(V) || V < 1) throw new RangeError(`sampleBatch: V must be a positive integer, got ${V}`);
  const R = rows.length;
  const idx = new Int32Array(R);
  const params = new Float64Array(R * SAMPLE_PARAMS);
  const histOff = new Int32Array(R + 1);
  const masks: (Int32Array | Uint32Array | null)[] = new Array(R);
  let nh = 0;
  let maxTop = 0;
  for (const r of rows) {
    if (r.history && penalizes(r)) nh += r.history.length;
    maxTop = Math.max(maxTop, r.logprobs);
  }
  const hist = new Int32Array(nh);
  let h = 0;
  for (let i = 0; i < R; i++) {
    const r = rows[i]!;
    if (!Number.isInteger(r.row) || r.row < 0 || (r.row + 1) * V > logits.length) {
      throw new RangeError(`sampleBatch: row ${r.row} is outside logits of ${logits.length / V} rows`);
    }
    idx[i] = r.row;
    const o = i * SAMPLE_PARAMS;
    params[o] = r.temperature;
    params[o + 1] = r.topK;
    params[o + 2] = r.topP;
    params[o + 3] = r.minP;
    params[o + 4] = r.repetitionPenalty;
    params[o + 5] = r.frequencyPenalty;
    params[o + 6] = r.presencePenalty;
    params[o + 7] = r.vocab;
    params[o + 8] = r.u;
    params[o + 9] = r.logprobs;
    if (r.history && penalizes(r)) {
      const hs = r.history;
      for (let j = 0; j < hs.length; j++) {
        const id = hs[j]!;
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new DsError('BAD_INPUT', `history[${j}] = ${id} is not a token id below ${V}`);
        }
        hist[h++] = id;
      }
    }
    histOff[i + 1] = h;
    masks[i] = r.mask;
  }
  const ids = new Int32Array(R);
  const drew = new Uint8Array(R);
  const lp = new Float32Array(R);
  const topIds = new Int32Array(R * maxTop).fill(-1);
  const topLp = new Float32Array(R * maxTop);
  a.sampleBatch(logits, V, idx, params, hist, histOff, masks, ids, drew, lp, topIds, topLp, maxTop);
  return rows.map((r, i) => {
    const res: SampleResult = { id: ids[i]!, drew: drew[i] === 1 };
    if (r.logprobs >= 0) {
      res.logprob = lp[i]!;
      res.top = [];
      for (let j = 0; j < r.logprobs; j++) {
        const id = topIds[i * maxTop + j]!;
        if (id < 0) break;
        res.top.push({ id, logprob: topLp[i * maxTop + j]! });
      }
    }
    return res;
  });
}

/** Whether sampleBatch runs in the addon (decided on first use; see nativeMathMatches). */
let nativeSampling: boolean | undefined;

function makeKernels(a: NativeAddon): Kernels {
  // FP8 matrices found once to hold no NaN code (0x7F, 0xFF) go to the addon as code 4, and
  // its kernels skip their per-block look for NaN codes (about 20% of an FP8 GEMV). Loaded
  // weights are never written after their first use, so the answer is kept per array.
  const nanFree = new WeakMap<Uint8Array, boolean>();
  const code = (w: LinearWeight): number => {
    if (w.dtype !== 'F8_E4M3') return FORMATS[w.dtype].native;
    const d = w.data as Uint8Array;
    let free = nanFree.get(d);
    if (free === undefined) nanFree.set(d, (free = a.f8NanFree(d)));
    return free ? 4 : FORMATS.F8_E4M3.native;
  };
  // Each matrix crosses into the addon as one descriptor, made on its first use and kept while
  // the matrix lives (a matrix's arrays and numbers are never changed after it is made).
  const handles = new WeakMap<LinearWeight, WeightHandle>();
  const h = (w: LinearWeight): WeightHandle => {
    let x = handles.get(w);
    if (!x) {
      const b = w.block;
      x = a.weight(w.data, code(w), w.rows, w.cols, w.scale ?? null, b ? b[0] : 0, b ? b[1] : 0);
      handles.set(w, x);
    }
    return x;
  };
  return {
    name: 'native',
    weightAllocator: () => hugePageAllocator(a),
    mapFile(path) {
      // Files that fit the last-level cache are read into the 2 MiB-page arenas instead: copying
      // them costs nothing, and decode then runs ~15-25% faster (no TLB misses over 4 KiB file
      // pages; measured on the shipped 18 MB model). Larger ones are used in place: bench-m's
      // 4.4 GB loads in 0.02 s instead of 4-10 s at the same decode speed, and a 16B model
      // shares the page cache instead of doubling it.
      return statSync(path).size <= READ_MAX_BYTES ? null : mapInPlace(a, path);
    },
    matmul: (out, x, M, w: LinearWeight, r0 = 0, N = w.rows - r0) => a.matmul(out, x, M, h(w), r0, N),
    matmulT: (out, x, M, w: LinearWeight, r0, R) => a.matmulT(out, x, M, h(w), r0, R),
    matmulHeads: (out, x, M, H, w: LinearWeight, r0, step, N) => a.matmulHeads(out, x, M, H, h(w), r0, step, N),
    matmulTHeads: (out, x, M, H, xs, w: LinearWeight, r0, step, R) => a.matmulTHeads(out, x, M, H, xs, h(w), r0, step, R),
    embedding: (out, table: LinearWeight, ids) => a.embedding(out, h(table), ids),
    rmsNorm: (out, x, weight, M, eps) => a.rmsNorm(out, x, weight, M, eps),
    rope: (x, T, H, stride, offset, pos, freqs) => a.rope(x, T, H, stride, offset, pos, freqs),
    softmax: (x, rows, cols) => a.softmax(x, rows, cols),
    siluMul: (out, gate, up, n) => a.siluMul(out, gate, up, n),
    add: (out, x, n) => a.add(out, x, n),
    attnLatent: (out, qLat, qPe, kv, pe, T, H, C, R, p0, scale) =>
      a.attnLatent(out, qLat, qPe, kv, pe, T, H, C, R, p0, scale),
    attention: (out, q, k, v, T, H, Dk, Dv, p0, scale) => a.attention(out, q, k, v, T, H, Dk, Dv, p0, scale),
    moeRoute(outIdx, outW, logits, T, E, p: RouteParams) {
      a.moeRoute(outIdx, outW, logits, T, E, p.topk, p.nGroup, p.topkGroup, p.scoring === 'softmax',
        p.bias, p.normalize, p.scale);
    },
    gatherRows: (out, x, rows, D) => a.gatherRows(out, x, rows, D),
    scatterAddRows: (out, src, rows, weights, D) => a.scatterAddRows(out, src, rows, weights, D),
    argmax: (x) => a.argmax(x),
    ffnExperts(y, x, D, nets: readonly FfnWeights[], offsets, rows, weights) {
      a.ffnExperts(y, x, D, nets.flatMap((n) => [h(n.gate_proj), h(n.up_proj), h(n.down_proj)]), offsets, rows, weights);
    },
    quantize: (out, w: LinearWeight, type) => a.quantize(out, h(w), FORMATS[type].native),
    sampleBatch(logits, V, rows) {
      // An addon built before sampleBatch, or a Node whose Math functions the addon does not
      // reproduce, samples with the reference (the same ids, slower).
      if (nativeSampling === undefined) nativeSampling = typeof a.sampleBatch === 'function' && nativeMathMatches(a);
      return nativeSampling ? sampleNative(a, logits, V, rows) : refSampleBatch(logits, V, rows);
    },
  };
}

let kernels: Kernels | null = null;

/** The native Kernels, or null when the addon is not built or does not load. */
export function loadNative(): Kernels | null {
  if (kernels) return kernels;
  const a = nativeAddon();
  if (!a) return null;
  kernels = makeKernels(a);
  return kernels;
}
