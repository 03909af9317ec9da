// `npm run bench [-- --quick] [-- --json] [-- --threads N] [-- --rounds N] [-- --prepare]`: dsv3 against llama.cpp at its
// best (its own llama-bench and llama-batched-bench tools, built once from the llama.cpp
// source that node-llama-cpp ships) on the GGUF export of the same random-weight
// checkpoints, in one run with the same thread count. Also measures the machine's memory
// read bandwidth and the batch-1 decode roofline (active weight bytes per token ÷ bandwidth).
// Generated checkpoints, GGUF files and the llama.cpp build live in .cache/ (git-ignored);
// --prepare only makes them. Each engine runs --rounds times (default 3), alternating which
// goes first, and each figure is the median of its rounds: on this shared VM memory
// bandwidth swings between ~30 and ~47 GB/s from minute to minute (llama.cpp's bench-m
// decode read 21.7 and 43.6 tok/s an hour apart), so one run, or the best of a few, says
// more about the neighbours than about the engine.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { convertToGguf } from '../src/io/convert-gguf.ts';
import type { DeepseekConfig } from '../src/io/config.ts';
import { tinyConfig, writeRandomCheckpoint, type InitDType } from '../src/model/init.ts';
import type { QuantRecipe } from '../src/io/gguf-recipes.ts';
import { benchLConfig, writeRandomGguf } from './random-gguf.ts';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    threads: { type: 'string' },
    smoke: { type: 'boolean' },
    prepare: { type: 'boolean' },
    rounds: { type: 'string' },
    models: { type: 'string' },
  },
});
const ROOT = resolve(import.meta.dirname, '..');
const CACHE = join(ROOT, '.cache', 'bench');
const THREADS = Number(args.threads ?? availableParallelism());
const ROUNDS = Math.max(1, Number(args.rounds ?? (args.smoke ? 1 : 3)));
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

const yarn = (factor: number, orig: number) => ({
  type: 'yarn',
  factor,
  original_max_position_embeddings: orig,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1,
  mscale_all_dim: 1,
});

const BENCH_S = () =>
  tinyConfig({
    vocab_size: 8192, hidden_size: 512, intermediate_size: 1536, moe_intermediate_size: 256,
    num_hidden_layers: 8, first_k_dense_replace: 1, num_attention_heads: 8,
    n_routed_experts: 32, n_shared_experts: 1, num_experts_per_tok: 4, n_group: 4, topk_group: 2,
    routed_scaling_factor: 2.5, q_lora_rank: 256, kv_lora_rank: 128,
    qk_nope_head_dim: 64, qk_rope_head_dim: 32, v_head_dim: 64,
    rope_scaling: yarn(4, 1024), max_position_embeddings: 4096, num_nextn_predict_layers: 0,
  });

const BENCH_M = () =>
  tinyConfig({
    vocab_size: 102400, hidden_size: 2048, intermediate_size: 10944, moe_intermediate_size: 1408,
    num_hidden_layers: 4, first_k_dense_replace: 1, num_attention_heads: 16,
    n_routed_experts: 64, n_shared_experts: 2, num_experts_per_tok: 6, n_group: 8, topk_group: 4,
    routed_scaling_factor: 2.5, q_lora_rank: null, kv_lora_rank: 512,
    qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128,
    rope_scaling: yarn(40, 4096), max_position_embeddings: 163840, num_nextn_predict_layers: 0,
  });

const SMOKE = () => tinyConfig({ num_nextn_predict_layers: 0, max_position_embeddings: 1024 });

interface Case {
  model: string;
  dtype: 'bf16' | 'fp8' | QuantRecipe;
  cfg: () => DeepseekConfig;
  /** A safetensors checkpoint of random weights, exported to GGUF for llama.cpp. */
  init?: InitDType;
  gguf: 'auto' | QuantRecipe;
  /**
   * Real-size (bench-l): random weights written straight into the GGUF file (bench/random-gguf.ts)
   * that both engines load; a shorter protocol (prefill 512, decode 32) plus time to first token.
   */
  large?: boolean;
}

const ALL_CASES: Case[] = [
  { model: 'bench-s', dtype: 'bf16', cfg: BENCH_S, init: 'BF16', gguf: 'auto' },
  { model: 'bench-m', dtype: 'bf16', cfg: BENCH_M, init: 'BF16', gguf: 'auto' },
  { model: 'bench-m', dtype: 'fp8', cfg: BENCH_M, init: 'FP8', gguf: 'q8_0' },
  { model: 'bench-l', dtype: 'q8_0', cfg: benchLConfig, gguf: 'q8_0', large: true },
  { model: 'bench-l', dtype: 'q4_k_m', cfg: benchLConfig, gguf: 'q4_k_m', large: true },
];
// Default: bench-s and bench-m (--quick: bench-s); bench-l (about 27 GB of files, tens of
// minutes) only when named: --models bench-l, or --models bench-s,bench-m,bench-l.
const MODELS = args.models ? args.models.split(',') : args.quick ? ['bench-s'] : ['bench-s', 'bench-m'];
for (const m of MODELS) if (!ALL_CASES.some((c) => c.model === m)) throw new Error(`--models: unknown model "${m}"`);
const CASES: Case[] = args.smoke
  ? [{ model: 'smoke', dtype: 'bf16', cfg: SMOKE, init: 'BF16', gguf: 'auto' }]
  : ALL_CASES.filter((c) => MODELS.includes(c.model));

/** Peak RSS (MB) and stdout of a command, through python's getrusage of its child. */
function measured(cmd: string[], env: NodeJS.ProcessEnv = process.env): { out: string; rssMb: number } {
  const py =
    'import resource,subprocess,sys\n' +
    'r=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE)\n' +
    'sys.stdout.buffer.write(r.stdout)\n' +
    'sys.stderr.write("\\nRSS_KB %d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n' +
    'sys.exit(r.returncode)';
  const r = spawnSync('python3', ['-c', py, ...cmd], { env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed:\n${r.stderr.slice(-3000)}`);
  const rss = /RSS_KB (\d+)/.exec(r.stderr);
  return { out: r.stdout, rssMb: rss ? Number(rss[1]) / 1024 : NaN };
}

/** Build llama-bench and llama-batched-bench from node-llama-cpp's bundled llama.cpp, once. */
function llamaTools(): { bench: string; batched: string; simple: string } {
  const src = join(ROOT, '.cache', 'llama.cpp');
  const bin = join(src, 'build', 'bin');
  const tools = { bench: join(bin, 'llama-bench'), batched: join(bin, 'llama-batched-bench'), simple: join(bin, 'llama-simple') };
  if (existsSync(tools.bench) && existsSync(tools.batched) && existsSync(tools.simple)) return tools;
  const bundle = join(ROOT, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
  if (!existsSync(bundle)) throw new Error(`${bundle} not found: npm ci installs node-llama-cpp (devDependency)`);
  if (!existsSync(join(src, 'CMakeLists.txt'))) {
    log('cloning llama.cpp from node-llama-cpp’s git bundle…');
    execFileSync('git', ['clone', '-q', bundle, src], { stdio: 'inherit' });
  }
  log('building llama-bench (once; several minutes)…');
  const flags = ['-DCMAKE_BUILD_TYPE=Release', '-DLLAMA_CURL=OFF', '-DLLAMA_BUILD_TESTS=OFF', '-DGGML_NATIVE=ON'];
  execFileSync('cmake', ['-S', src, '-B', join(src, 'build'), ...flags], { stdio: 'inherit' });
  execFileSync('cmake', ['--build', join(src, 'build'), '-j', String(THREADS), '--target', 'llama-bench', 'llama-batched-bench', 'llama-simple'], {
    stdio: 'inherit',
  });
  return tools;
}

/** Read bandwidth (GB/s) with a small C++ kernel, compiled once. */
function bandwidth(): number {
  const dir = join(ROOT, '.cache', 'bench');
  const exe = join(dir, 'readbw2');
  if (!existsSync(exe)) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'readbw.cc'),
      // Integer sums vectorise without reassociation concerns, so the loop is memory-bound.
      `#include <chrono>\n#include <cstdio>\n#include <cstdint>\n#include <vector>\n#include <omp.h>\n` +
        `int main(){const size_t n=(size_t)1<<28;std::vector<uint32_t> a(n,1);double best=1e9;uint64_t s=0;\n` +
        `for(int r=0;r<5;r++){auto t0=std::chrono::steady_clock::now();uint64_t acc=0;\n` +
        `#pragma omp parallel for reduction(+:acc)\nfor(size_t i=0;i<n;i++)acc+=a[i];\n` +
        `double dt=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();s+=acc;if(dt<best)best=dt;}\n` +
        `printf("%f %llu\\n",n*4.0/best/1e9,(unsigned long long)s);}\n`,
    );
    execFileSync('g++', ['-O3', '-march=native', '-fopenmp', join(dir, 'readbw.cc'), '-o', exe]);
  }
  const out = execFileSync(exe, { env: { ...process.env, OMP_NUM_THREADS: String(THREADS) } }).toString();
  return Number(out.split(' ')[0]);
}

interface Row {
  model: string;
  dtype: string;
  metric: 'prefill_tps' | 'decode_tps' | 'peak_rss_mb' | 'ttft_s';
  prompt: number;
  batch: number;
  dsv3: number;
  llama_cpp: number | null;
}

/** bench-l's protocol for llama.cpp: llama-bench -p 512 -n 32 -r 2 (as the dsv3 worker's --large). */
function benchLlamaLarge(gguf: string, tools: { bench: string }) {
  const a = measured([tools.bench, '-m', gguf, '-t', String(THREADS), '-r', '2', '-o', 'jsonl', '-p', '512', '-n', '32']);
  const rows = a.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const ts = (p: number, n: number) => rows.find((r) => r.n_prompt === p && r.n_gen === n)?.avg_ts ?? null;
  return { prefill_512: ts(512, 0), decode_tg64: ts(0, 32), peak_rss_mb: a.rssMb };
}

/**
 * Time to first token: the wall-clock time from starting a process to its exit after it has
 * loaded the model, prefilled an 8-token prompt and generated one token (greedy), with the
 * file already in the page cache (one untimed run first); the median of 3. The same for both
 * engines: `dsv3 generate --ids … --max-new-tokens 1` and llama.cpp's llama-simple -n 1.
 */
function ttft(cmd: string[]): number {
  const once = () => {
    const t0 = performance.now();
    const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed:\n${(r.stderr ?? '').slice(-2000)}`);
    return (performance.now() - t0) / 1e3;
  };
  once();
  const t = [once(), once(), once()].sort((a, b) => a - b);
  return t[1];
}

function benchLlama(gguf: string, tools: { bench: string; batched: string }, quick: boolean) {
  const reps = quick ? '2' : '3';
  const common = ['-m', gguf, '-t', String(THREADS), '-r', reps, '-o', 'jsonl'];
  const a = measured([tools.bench, ...common, '-p', '128,512', '-n', '64']);
  const d = measured([tools.bench, ...common, '-p', '0', '-n', '64', '-d', '512']);
  const rows = [...a.out.split('\n'), ...d.out.split('\n')].filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const ts = (p: number, n: number, depth: number) =>
    rows.find((r) => r.n_prompt === p && r.n_gen === n && (r.n_depth ?? 0) === depth)?.avg_ts ?? null;
  const ntg = quick ? '16' : '64';
  const b = measured([tools.batched, '-m', gguf, '-t', String(THREADS), '-c', '4096', '-npp', '128', '-ntg', ntg, '-npl', '8',
    '--output-format', 'jsonl']);
  const bj = b.out.split('\n').find((l) => l.startsWith('{'));
  return {
    prefill_128: ts(128, 0, 0),
    prefill_512: ts(512, 0, 0),
    decode_tg64: ts(0, 64, 0),
    decode_d512: ts(0, 64, 512),
    decode_b8: bj ? JSON.parse(bj).speed_tg : null,
    peak_rss_mb: Math.max(a.rssMb, d.rssMb),
  };
}

/** Each figure's median over the rounds (the lower middle one for an even count). */
function median(runs: Record<string, number | null>[]): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const key of Object.keys(runs[0])) {
    const v = runs.map((r) => r[key]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    v.sort((a, b) => a - b);
    out[key] = v.length === 0 ? null : v[Math.floor((v.length - 1) / 2)];
  }
  return out;
}

function main(): void {
  mkdirSync(CACHE, { recursive: true });
  const bw = bandwidth();
  log(`memory read bandwidth ${bw.toFixed(1)} GB/s, ${THREADS} threads`);
  const tools = args.smoke ? null : llamaTools();
  const rows: Row[] = [];
  for (const c of CASES) {
    const dir = join(CACHE, `${c.model}-${c.dtype}`);
    const cfg = c.cfg();
    const gguf = join(CACHE, `${c.model}-${c.dtype}.gguf`);
    if (c.large) {
      if (!existsSync(gguf)) {
        log(`writing ${c.model} (${c.dtype}) random weights straight into ${gguf}…`);
        writeRandomGguf(gguf, cfg, c.gguf as QuantRecipe, c.model);
      }
    } else {
      if (!existsSync(join(dir, 'config.json'))) {
        log(`writing ${c.model} (${c.dtype}) random weights…`);
        writeRandomCheckpoint(dir, cfg, { dtype: c.init, seed: 1 });
      }
      if (tools && !existsSync(gguf)) {
        log(`exporting ${c.model} to GGUF (${c.gguf})…`);
        convertToGguf(dir, gguf, { type: c.gguf });
      }
    }
    if (args.prepare) continue;
    const worker = [process.execPath, '--import', 'tsx', join(ROOT, 'bench', 'dsv3-worker.ts'), c.large ? gguf : dir, String(THREADS)];
    if (c.large) worker.push('--large');
    if (args.quick || args.smoke) worker.push('--quick');
    if (args.smoke) worker.push('--any-kernels');
    const runOurs = () => {
      log(`dsv3 on ${c.model} ${c.dtype}…`);
      const m = measured(worker);
      const r = JSON.parse(m.out.trim().split('\n').at(-1)!);
      r.peak_rss_mb = m.rssMb;
      if (c.large) r.ttft_s = ttft(ttftOurs);
      return r as Record<string, number | null>;
    };
    const ids = '1,2,3,4,5,6,7,8';
    const ttftOurs = [process.execPath, join(ROOT, 'bin', 'dsv3.js'), 'generate', '--model', gguf, '--ids', ids,
      '--max-new-tokens', '1', '--temperature', '0', '--json', '--threads', String(THREADS)];
    const runTheirs = () => {
      log(`llama.cpp on ${c.model} ${c.gguf}…`);
      if (!c.large) return benchLlama(gguf, tools!, !!args.quick) as Record<string, number | null>;
      const r: Record<string, number | null> = benchLlamaLarge(gguf, tools!);
      r.ttft_s = ttft([tools!.simple, '-m', gguf, '-n', '1', 'The jury said that']);
      return r;
    };
    const oursAll: Record<string, number | null>[] = [];
    const theirsAll: Record<string, number | null>[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0 || !tools) oursAll.push(runOurs());
      if (tools) theirsAll.push(runTheirs());
      if (round % 2 === 1 && tools) oursAll.push(runOurs());
    }
    const ours = median(oursAll);
    const theirs = tools ? median(theirsAll) : {};
    const add = (metric: Row['metric'], key: string, prompt: number, batch: number) =>
      rows.push({ model: c.model, dtype: c.dtype, metric, prompt, batch, dsv3: ours[key] ?? NaN, llama_cpp: theirs[key] ?? null });
    if (c.large) {
      add('prefill_tps', 'prefill_512', 512, 1);
      add('decode_tps', 'decode_tg64', 0, 1);
      add('ttft_s', 'ttft_s', 8, 1);
      add('peak_rss_mb', 'peak_rss_mb', 0, 1);
    } else {
      add('prefill_tps', 'prefill_128', 128, 1);
      add('prefill_tps', 'prefill_512', 512, 1);
      add('decode_tps', 'decode_tg64', 0, 1);
      add('decode_tps', 'decode_d512', 512, 1);
      add('decode_tps', 'decode_b8', 128, 8);
      add('peak_rss_mb', 'peak_rss_mb', 0, 1);
    }
    const bytes = ours.active_bytes!; // as loaded: FP8 codes and scales, BF16 head and router
    const roofline = (bw * 1e9) / bytes;
    log(`${c.model} ${c.dtype}: ${(bytes / 2 ** 20).toFixed(1)} MiB of weights per token → roofline ${roofline.toFixed(1)} tok/s at batch 1`);
    rows.push({ model: c.model, dtype: c.dtype, metric: 'decode_tps', prompt: -1, batch: 1, dsv3: roofline, llama_cpp: null });
  }
  for (const r of rows) {
    const ratio = r.llama_cpp ? r.dsv3 / r.llama_cpp : null;
    if (args.json) {
      const line = { ...r, ratio: ratio === null ? null : +ratio.toFixed(3) } as Record<string, unknown>;
      if (r.prompt === -1) {
        line.metric = 'roofline_decode_tps';
        line.prompt = 0;
        line.bandwidth_gbs = +bw.toFixed(1);
      }
      process.stdout.write(JSON.stringify(line) + '\n');
    } else {
      const what = r.prompt === -1 ? 'decode roofline (b1)' : `${r.metric} p${r.prompt} b${r.batch}`;
      const f = (x: number | null) => (x === null ? '—' : x.toFixed(1));
      process.stdout.write(
        `${`${r.model} ${r.dtype}`.padEnd(14)} ${what.padEnd(24)} dsv3 ${f(r.dsv3).padStart(8)}  ` +
          `llama.cpp ${f(r.llama_cpp).padStart(8)}  ratio ${ratio === null ? '—' : ratio.toFixed(2)}\n`,
      );
    }
  }
}

main();
