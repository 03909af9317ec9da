// Matmul throughput of the native kernels against the TypeScript reference.
//   node --import tsx bench/kernels.ts [--size 2048] [--threads N] [--no-ref] [--level avx2]
// GFLOP/s counts 2·M·N·K; GB/s counts the bytes of W, x and out that one call must move.
// M=1 (decode) calls rotate over copies of W totalling >= 192 MB, so W comes from DRAM as
// in a real model (a single 2048x2048 weight would sit in L3); their ceiling is the read
// bandwidth line, a plain multi-threaded streaming sum over 128 MiB (C++, best of 15).
// cpu% is process CPU time / (wall time · threads): well below 100 means other processes
// took the cores and the numbers are low.

import { refKernels } from '../src/kernels/ref/index.ts';
import { loadNative, nativeAddon, nativeInfo, nativeLoadError, setNativeLevel, setThreads } from '../src/kernels/native.ts';
import type { Kernels } from '../src/kernels/kernels.ts';
import type { LinearWeight } from '../src/tensor/weight.ts';
import { DTYPE_BYTES, f32ToBf16, f32ToE4m3, type DType } from '../src/tensor/dtypes.ts';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const size = Number(opt('--size') ?? 2048);
const withRef = !args.includes('--no-ref');

const native = loadNative();
if (!native) {
  console.error(`native kernels unavailable (${nativeLoadError()}); run npm run build:native`);
  process.exit(1);
}
if (opt('--threads')) setThreads(Number(opt('--threads')));
if (opt('--level')) setNativeLevel(opt('--level')!);
const info = nativeInfo()!;

function weight(dtype: DType, rows: number, cols: number): LinearWeight {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
  const n = rows * cols;
  switch (dtype) {
    case 'F32':
      return { dtype, rows, cols, data: Float32Array.from({ length: n }, rnd) };
    case 'BF16':
      return { dtype, rows, cols, data: Uint16Array.from({ length: n }, () => f32ToBf16(rnd())) };
    case 'F16':
      throw new Error('not benchmarked');
    case 'F8_E4M3': {
      const codes = new Uint8Array(256);
      for (let i = 0; i < 256; i++) codes[i] = f32ToE4m3(rnd() * 448);
      const data = Uint8Array.from({ length: n }, (_, i) => codes[(i * 2654435761) >>> 24]);
      const scale = Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => 1e-3 * (1 + rnd()));
      return { dtype, rows, cols, data, scale, block: [128, 128] };
    }
  }
}

/** Median seconds per call over enough calls to fill ~`budget` seconds, and the CPU share. */
function time(f: (i: number) => void, budget: number, maxIters: number, threads: number): [number, number] {
  f(0);
  const times: number[] = [];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (times.length < maxIters && (performance.now() - t0) / 1e3 < budget) {
    const t = performance.now();
    f(times.length);
    times.push((performance.now() - t) / 1e3);
  }
  const wall = (performance.now() - t0) / 1e3;
  const c = process.cpuUsage(c0);
  times.sort((a, b) => a - b);
  return [times[Math.floor(times.length / 2)], (c.user + c.system) / 1e6 / wall / threads];
}

interface Row { dtype: DType; M: number; backend: string; ms: number; gflops: number; gbs: number; cpu: number }
const rows: Row[] = [];
const N = size, K = size;
for (const dtype of ['F32', 'BF16', 'F8_E4M3'] as DType[]) {
  const w = weight(dtype, N, K);
  const copies = Math.max(1, Math.ceil(192e6 / (N * K * DTYPE_BYTES[dtype])));
  const cold: LinearWeight[] = [w];
  for (let c = 1; c < copies; c++) cold.push({ ...w, data: w.data.slice() });
  for (const M of [1, 128]) {
    const x = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i));
    const out = new Float32Array(M * N);
    const bytes = N * K * DTYPE_BYTES[dtype] + M * K * 4 + M * N * 4;
    const flops = 2 * M * N * K;
    const bench = (name: string, k: Kernels, budget: number, maxIters: number, threads: number) => {
      const ws = M === 1 ? cold : [w];
      const [s, cpu] = time((i) => k.matmul(out, x, M, ws[i % ws.length]), budget, maxIters, threads);
      rows.push({ dtype, M, backend: name, ms: s * 1e3, gflops: flops / s / 1e9, gbs: bytes / s / 1e9, cpu });
    };
    bench(`native/${nativeAddon()!.level()}`, native, 1.5, 2000, info.threads);
    if (withRef) bench('ref', refKernels, M === 1 ? 1 : 0.1, M === 1 ? 50 : 1, 1);
  }
}

const bw = nativeAddon()!.readBandwidth(128 * 1024 * 1024, 15);
console.log(`dsv3 kernels bench: ${N}x${K} weights, ${info.threads} threads, CPU: ${info.cpuFeatures}`);
console.log('dtype     M    backend          ms/call    GFLOP/s     GB/s   cpu%');
for (const r of rows) {
  console.log(`${r.dtype.padEnd(8)} ${String(r.M).padStart(4)}    ${r.backend.padEnd(14)} ${r.ms.toFixed(3).padStart(9)} ${r.gflops.toFixed(2).padStart(10)} ${r.gbs.toFixed(2).padStart(8)} ${(100 * r.cpu).toFixed(0).padStart(6)}`);
}
console.log(`read bandwidth (streaming sum, ${info.threads} threads): ${bw.toFixed(1)} GB/s`);
for (const r of rows.filter((r) => r.M === 1 && r.backend.startsWith('native'))) {
  console.log(`M=1 ${r.dtype}: ${((100 * r.gbs) / bw).toFixed(0)}% of the read bandwidth`);
}
