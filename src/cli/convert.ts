// `dsv3 convert`: checkpoint conversion.
//   dsv3 convert --model DIR --to bf16 --out DIR2 [--max-shard-size BYTES]
//     FP8 → BF16 as DeepSeek's fp8_cast_bf16.py: a sharded checkpoint with its index.
//   dsv3 convert --model DIR --to gguf --out FILE.gguf [--type auto|f32|f16|bf16|q8_0|q6_k|q4_k_m]
//     one GGUF file for llama.cpp's deepseek2 architecture.
// Progress goes to stderr; stdout gets one JSON summary line.

import { convertFp8ToBf16, DEFAULT_MAX_SHARD_BYTES } from '../io/convert-bf16.ts';
import { convertToGguf, GGUF_OUT_TYPES, type GgufOutType } from '../io/convert-gguf.ts';
import { UsageError, parse, requireModel } from './args.ts';
import { loadKernels } from '../kernels/index.ts';
import { rowBytes, type BlockType } from '../tensor/dtypes.ts';
import { f32Weight } from '../tensor/weight.ts';

const HELP = `usage: dsv3 convert --model DIR --to bf16 --out DIR2 [--max-shard-size BYTES]
       dsv3 convert --model DIR --to gguf --out FILE.gguf [--type auto|f32|f16|bf16|q8_0|q6_k|q4_k_m]

  --to bf16   FP8 (e4m3, 128x128 block scales) -> BF16, as DeepSeek's fp8_cast_bf16.py; the
              output folder must not exist or be empty. Shards of at most --max-shard-size
              bytes (default 5000000000), with model.safetensors.index.json.
  --to gguf   GGUF for llama.cpp (architecture deepseek2). --type auto (default) keeps each
              weight's stored type (FP8 becomes BF16); norms and the router are always F32.
              q8_0, q6_k, q4_k_m: llama-quantize's recipes of those names (the same tensor
              types and the same bytes as llama-quantize gives from an F32 export).`;

function progress(label: string) {
  let last = 0;
  return (name: string, done: number, total: number) => {
    const now = performance.now();
    if (done === total || now - last > 500) {
      last = now;
      process.stderr.write(`\rdsv3 convert: ${label} ${done}/${total} ${name.slice(0, 60).padEnd(60)}`);
      if (done === total) process.stderr.write('\n');
    }
  };
}

export function convertCommand(argv: string[]): number {
  const { values } = parse(argv, {
    model: { type: 'string' },
    to: { type: 'string' },
    out: { type: 'string' },
    type: { type: 'string' },
    'max-shard-size': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const dir = requireModel(values.model);
  if (!values.out) throw new UsageError('--out is required');
  const t0 = performance.now();
  const secs = () => Number(((performance.now() - t0) / 1e3).toFixed(2));
  if (values.to === 'bf16') {
    if (values.type !== undefined) throw new UsageError('--type applies to --to gguf only');
    let max = DEFAULT_MAX_SHARD_BYTES;
    if (values['max-shard-size'] !== undefined) {
      max = Number(values['max-shard-size']);
      if (!Number.isSafeInteger(max) || max <= 0) {
        throw new UsageError(`--max-shard-size must be a positive number of bytes, got "${values['max-shard-size']}"`);
      }
    }
    const r = convertFp8ToBf16(dir, values.out, { maxShardBytes: max, onTensor: progress('tensor') });
    process.stdout.write(JSON.stringify({ to: 'bf16', out: values.out, ...r, seconds: secs() }) + '\n');
    return 0;
  }
  if (values.to === 'gguf') {
    if (values['max-shard-size'] !== undefined) throw new UsageError('--max-shard-size applies to --to bf16 only');
    const type = (values.type ?? 'auto') as GgufOutType;
    if (!GGUF_OUT_TYPES.includes(type)) {
      throw new UsageError(`--type must be one of ${GGUF_OUT_TYPES.join(', ')}, got "${values.type}"`);
    }
    // Quantizing goes through the kernels (native: multithreaded, byte-identical to the TypeScript
    // quantizer); the kernels are not loaded for the plain types.
    const K = type.startsWith('q') ? loadKernels({ backend: 'auto' }) : null;
    const quantize = K
      ? (x: Float32Array, t: BlockType, cols: number) => {
          const rows = x.length / cols;
          const out = new Uint8Array(rows * rowBytes(t, cols));
          K.quantize(out, f32Weight(x, rows, cols), t);
          return out;
        }
      : undefined;
    const r = convertToGguf(dir, values.out, { type, onTensor: progress('tensor'), quantize });
    for (const n of r.notes) process.stderr.write(`dsv3 convert: note: ${n}\n`);
    process.stdout.write(JSON.stringify({ to: 'gguf', out: values.out, ...r, seconds: secs() }) + '\n');
    return 0;
  }
  throw new UsageError(`--to must be "bf16" or "gguf", got ${values.to === undefined ? 'nothing' : `"${values.to}"`}`);
}
