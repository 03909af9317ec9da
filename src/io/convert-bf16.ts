// FP8 → BF16 checkpoint conversion, with the semantics of DeepSeek's `inference/fp8_cast_bf16.py`:
// every F8_E4M3 weight becomes W = bf16(e4m3(code) · weight_scale_inv[i/128][j/128]) (one float32
// multiplication, then round-to-nearest-even to bfloat16, as their Triton `weight_dequant` stores
// into a bfloat16 tensor), every `*_scale_inv` tensor is dropped, and every other tensor is copied
// byte for byte. The output is a sharded Hugging Face folder with its index, config.json without
// `quantization_config` (torch_dtype "bfloat16"), and the tokenizer / chat-template files copied.
//
// Streamed tensor by tensor (writeCheckpoint's data callback): at most one tensor's bytes (plus its
// BF16 result) are in memory at a time, so a 671B checkpoint converts in bounded memory.
//
// The cast is lossy in general: an e4m3 code has 4 significant bits but the block scale has 24, so
// their product needs up to 28 and BF16 keeps 8. Only power-of-two scales make it exact.

import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DsError } from '../errors.ts';
import { E4M3_TABLE, f32ToBf16, isDType, toF32, type DType } from '../tensor/dtypes.ts';
import { Checkpoint, writeCheckpoint, type TensorSpec } from './safetensors.ts';
import { readConfigJson } from './config.ts';

/** Files copied unchanged when present (besides every `*.jinja`). */
export const COPIED_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'generation_config.json',
  'special_tokens_map.json',
  // Referenced by config.json's auto_map in the released checkpoints (trust_remote_code).
  'configuration_deepseek.py',
  'modeling_deepseek.py',
];

/** Hugging Face's default shard size ("5GB"). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export interface ConvertBf16Options {
  /** Largest output shard in bytes (default 5 GB); the output always has an index. */
  maxShardBytes?: number;
  /** Called after each tensor is written (done counts tensors of the output). */
  onTensor?: (name: string, done: number, total: number) => void;
}

export interface ConvertBf16Report {
  /** F8_E4M3 weights cast to BF16. */
  converted: number;
  /** Tensors copied unchanged. */
  copied: number;
  /** `*_scale_inv` tensors dropped. */
  dropped: number;
  /** Output shard files written. */
  shards: number;
  /** Other files copied (tokenizer, chat template, ...). */
  files: string[];
}

function bad(msg: string): never {
  throw new DsError('BAD_INPUT', msg);
}

/** The scale tensor that belongs to an FP8 weight (fp8_cast_bf16.py: `f"{name}_scale_inv"`). */
export function fp8ScaleName(weightName: string): string {
  return `${weightName}_scale_inv`;
}

/**
 * Dequantise one FP8 [rows, cols] matrix to BF16 bits: bf16(float32(e4m3(code) · scale)), per
 * block of `block` = [bR, bC]. Uses a 256-entry table per block, so the cost is one lookup per
 * element.
 */
export function fp8ToBf16(
  codes: Uint8Array,
  scale: Float32Array,
  rows: number,
  cols: number,
  block: readonly [number, number],
): Uint16Array {
  const [bR, bC] = block;
  const sR = Math.ceil(rows / bR);
  const sC = Math.ceil(cols / bC);
  if (scale.length !== sR * sC) {
    throw new Error(`fp8ToBf16: scale has ${scale.length} entries, [${rows}, ${cols}] / ${bR}×${bC} needs ${sR * sC}`);
  }
  const out = new Uint16Array(rows * cols);
  const lut = new Uint16Array(256);
  for (let br = 0; br < sR; br++) {
    for (let bc = 0; bc < sC; bc++) {
      const s = scale[br * sC + bc];
      // The product of two float32 values is exact in a double; f32ToBf16 rounds it to
      // float32 first (Triton's float32 multiply) and then to bfloat16, nearest-even.
      for (let c = 0; c < 256; c++) lut[c] = f32ToBf16(E4M3_TABLE[c] * s);
      const r1 = Math.min(rows, (br + 1) * bR);
      const c0 = bc * bC;
      const c1 = Math.min(cols, c0 + bC);
      for (let i = br * bR; i < r1; i++) {
        const row = i * cols;
        for (let j = c0; j < c1; j++) out[row + j] = lut[codes[row + j]];
      }
    }
  }
  return out;
}

/** The FP8 block size from config.json's quantization_config (default 128×128). */
function blockSize(config: Record<string, unknown>, file: string): [number, number] {
  const q = config.quantization_config;
  if (q === undefined || q === null) return [128, 128];
  if (typeof q !== 'object') throw new DsError('BAD_CONFIG', `${file}: quantization_config must be an object`);
  const qc = q as Record<string, unknown>;
  if (qc.quant_method !== undefined && qc.quant_method !== 'fp8') {
    throw new DsError('BAD_CONFIG', `${file}: quantization_config.quant_method ${JSON.stringify(qc.quant_method)} is not fp8`);
  }
  if (qc.fmt !== undefined && qc.fmt !== 'e4m3') {
    throw new DsError('BAD_CONFIG', `${file}: quantization_config.fmt ${JSON.stringify(qc.fmt)} is not e4m3`);
  }
  const bs = qc.weight_block_size ?? [128, 128];
  if (!Array.isArray(bs) || bs.length !== 2 || !bs.every((x) => Number.isInteger(x) && x > 0)) {
    throw new DsError('BAD_CONFIG', `${file}: quantization_config.weight_block_size must be two positive integers`);
  }
  return [bs[0], bs[1]];
}

function readConfig(dir: string): { config: Record<string, unknown>; file: string } {
  const { raw, file } = readConfigJson(dir);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new DsError('BAD_CONFIG', `${file}: must hold a JSON object`);
  }
  return { config: raw as Record<string, unknown>, file };
}

/** Refuse an output folder that exists with something in it, or that is the input. */
function checkOutDir(src: string, out: string): void {
  if (resolve(src) === resolve(out)) bad(`${out}: the output folder is the input folder`);
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) bad(`${out}: exists and is not a folder`);
  if (readdirSync(out).length > 0) bad(`${out}: output folder exists and is not empty (refusing to overwrite)`);
}

/**
 * Convert the FP8 checkpoint in `srcDir` (one file or shards) to a BF16 checkpoint in `outDir`.
 * Throws DsError: BAD_INPUT when nothing is FP8 or the output folder is not empty,
 * MISSING_TENSOR naming a weight whose scale is absent, BAD_SHAPE / BAD_DTYPE for a scale that
 * does not fit its weight.
 */
export function convertFp8ToBf16(srcDir: string, outDir: string, opts: ConvertBf16Options = {}): ConvertBf16Report {
  const { config, file: configFile } = readConfig(srcDir);
  const block = blockSize(config, configFile);
  checkOutDir(srcDir, outDir);
  const ckpt = Checkpoint.open(srcDir);
  try {
    const names = ckpt.names();
    const fp8 = new Set(names.filter((n) => ckpt.entry(n).dtype === 'F8_E4M3'));
    if (fp8.size === 0) {
      bad(`${srcDir}: no F8_E4M3 tensors, nothing to convert (the checkpoint is not FP8)`);
    }
    // Validate every pairing before writing anything.
    const scales = new Set<string>();
    for (const w of fp8) {
      const e = ckpt.entry(w);
      const sName = fp8ScaleName(w);
      if (e.shape.length !== 2) {
        throw new DsError('BAD_SHAPE', `${e.file}: FP8 tensor "${w}" has shape [${e.shape}], expected a matrix`);
      }
      if (!ckpt.has(sName)) {
        throw new DsError('MISSING_TENSOR', `${e.file}: FP8 tensor "${w}" has no "${sName}" block scales`);
      }
      const s = ckpt.entry(sName);
      const want = [Math.ceil(e.shape[0] / block[0]), Math.ceil(e.shape[1] / block[1])];
      if (s.shape.length !== 2 || s.shape[0] !== want[0] || s.shape[1] !== want[1]) {
        throw new DsError(
          'BAD_SHAPE',
          `${s.file}: tensor "${sName}" has shape [${s.shape}], [${e.shape}] in ${block[0]}×${block[1]} blocks needs [${want}]`,
        );
      }
      if (!isDType(s.dtype) || s.dtype === 'F8_E4M3') {
        throw new DsError('BAD_DTYPE', `${s.file}: tensor "${sName}" has dtype ${s.dtype}, expected a float dtype`);
      }
      scales.add(sName);
    }
    for (const n of names) {
      // A scale without its FP8 weight: fp8_cast_bf16.py keeps such a tensor; so do we.
      const e = ckpt.entry(n);
      if (!isDType(e.dtype) && !scales.has(n)) {
        throw new DsError('BAD_DTYPE', `${e.file}: tensor "${n}" has dtype ${e.dtype}, which dsv3 cannot write`);
      }
    }

    // Output order: by input file, then by position in it, so shards keep the input's grouping.
    const kept = names.filter((n) => !scales.has(n));
    kept.sort((a, b) => {
      const ea = ckpt.entry(a);
      const eb = ckpt.entry(b);
      return ea.file < eb.file ? -1 : ea.file > eb.file ? 1 : ea.offset - eb.offset;
    });
    const specs: TensorSpec[] = kept.map((n) => {
      const e = ckpt.entry(n);
      return { name: n, dtype: fp8.has(n) ? 'BF16' : (e.dtype as DType), shape: e.shape.slice() };
    });

    mkdirSync(outDir, { recursive: true });
    let done = 0;
    writeCheckpoint(
      outDir,
      specs,
      (name) => {
        const t = ckpt.read(name);
        let bytes = t.data;
        if (fp8.has(name)) {
          const s = ckpt.read(fp8ScaleName(name));
          const bits = fp8ToBf16(t.data, toF32(s.dtype, s.data), t.shape[0], t.shape[1], block);
          bytes = new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
        }
        opts.onTensor?.(name, ++done, specs.length);
        return bytes;
      },
      { maxShardBytes: opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES, forceIndex: true },
    );

    const out: Record<string, unknown> = { ...config, torch_dtype: 'bfloat16' };
    delete out.quantization_config;
    writeFileSync(join(outDir, 'config.json'), JSON.stringify(out, null, 2) + '\n');
    const files = ['config.json'];
    for (const f of readdirSync(srcDir).sort()) {
      if (!(COPIED_FILES.includes(f) || f.endsWith('.jinja'))) continue;
      if (!statSync(join(srcDir, f)).isFile()) continue;
      copyFileSync(join(srcDir, f), join(outDir, f));
      files.push(f);
    }
    const shards = readdirSync(outDir).filter((f) => f.endsWith('.safetensors')).length;
    return { converted: fp8.size, copied: kept.length - fp8.size, dropped: scales.size, shards, files };
  } finally {
    ckpt.close();
  }
}

