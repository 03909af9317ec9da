// `dsv3 bench [--model DIR]`: how fast a checkpoint runs here. Prefill of fresh prompts,
// decoding at batch 1 (from an empty cache and after a prompt) and at batch B, peak memory,
// and the batch-1 decode roofline (weight bytes one token reads over the machine's measured
// read bandwidth). With --json, one line per figure:
//   {"model": NAME, "metric": "prefill_tps" | "decode_tps" | "peak_rss_mb" | "roofline_decode_tps",
//    "prompt": N, "batch": B, "dsv3": VALUE}
// (the line format of `npm run bench`, without llama.cpp's columns).

import { basename, resolve } from 'node:path';
import { activeWeightBytes, benchModel } from '../engine/bench.ts';
import { readBandwidth } from '../kernels/native.ts';
import { MODEL_OPTIONS, UsageError, intOption, loadModel, parse } from './args.ts';
import { modelDir } from './text.ts';

const HELP = `usage: dsv3 bench [--model DIR] [--prompts 128,512] [--tokens 64] [--depth 512]
  [--batch 8] [--batch-depth 128] [--reps 3] [--json] [--kernels auto|native|ref] [--threads N]
  prefill tok/s per prompt length; decode tok/s at batch 1, at batch 1 after --depth tokens,
  and at --batch sequences after --batch-depth tokens each (0 skips a run); each figure is the
  median of --reps timed runs after a warm-up; peak RSS; batch-1 decode roofline`;

export function benchCommand(argv: string[]): number {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    prompts: { type: 'string' },
    tokens: { type: 'string' },
    depth: { type: 'string' },
    batch: { type: 'string' },
    'batch-depth': { type: 'string' },
    reps: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const prompts = (values.prompts ?? '128,512').split(',').filter((p) => p.trim() !== '').map((p) => intOption(p.trim(), 'prompts', 0, 1));
  const tokens = intOption(values.tokens, 'tokens', 64, 1);
  const batch = intOption(values.batch, 'batch', 8, 0);
  const reps = intOption(values.reps, 'reps', 3, 1);
  const dir = modelDir(values.model);
  const model = loadModel(dir, { ...values, mtp: false });
  const ctx = model.cfg.max_position_embeddings;
  const depth = intOption(values.depth, 'depth', Math.min(512, ctx - 1 - tokens), 0);
  const batchDepth = intOption(values['batch-depth'], 'batch-depth', Math.min(128, ctx - 1 - tokens), 0);
  for (const [what, n] of [...prompts.map((p) => ['--prompts', p] as const), ['--depth + --tokens', depth + tokens] as const,
    ['--batch-depth + --tokens', batchDepth + tokens] as const]) {
    if (n >= ctx) throw new UsageError(`${what} (${n}) must stay below the model's context of ${ctx} tokens`);
  }

  const figures = benchModel(model, { prompts, decodeTokens: tokens, depth, batch, batchDepth, reps });
  const name = basename(resolve(dir));
  const rows: { metric: string; prompt: number; batch: number; dsv3: number; note: string }[] = figures.map((f) => ({
    metric: f.metric,
    prompt: f.prompt,
    batch: f.batch,
    dsv3: f.value,
    note: f.metric === 'prefill_tps' ? `prefill ${f.prompt} tokens` : `decode, batch ${f.batch}${f.prompt ? `, after ${f.prompt} tokens` : ''}`,
  }));
  rows.push({ metric: 'peak_rss_mb', prompt: 0, batch: 1, dsv3: process.resourceUsage().maxRSS / 1024, note: 'peak resident memory' });
  const bytes = activeWeightBytes(model);
  const bw = readBandwidth();
  if (bw !== null) {
    rows.push({
      metric: 'roofline_decode_tps', prompt: 0, batch: 1, dsv3: (bw * 1e9) / bytes,
      note: `decode roofline: ${(bytes / 2 ** 20).toFixed(1)} MiB per token at ${bw.toFixed(1)} GB/s`,
    });
  }
  for (const r of rows) {
    if (values.json) {
      process.stdout.write(JSON.stringify({ model: name, metric: r.metric, prompt: r.prompt, batch: r.batch, dsv3: +r.dsv3.toFixed(2) }) + '\n');
    } else {
      const unit = r.metric === 'peak_rss_mb' ? 'MB   ' : 'tok/s';
      process.stdout.write(`${r.dsv3.toFixed(1).padStart(10)} ${unit}  ${r.note}\n`);
    }
  }
  return 0;
}
