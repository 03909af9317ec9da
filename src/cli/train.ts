// `dsv3 train`: train a DeepSeek-V3-architecture model on a CPU, the DeepSeek way (MTP
// objective, auxiliary-loss-free balancing plus the sequence-wise balance loss, optional
// simulated FP8 GEMMs). The run folder holds the tokenized data, the checkpoint (Hugging
// Face layout, loadable by `dsv3 generate --model OUT/checkpoint`) and loss.svg.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DsError } from '../errors.ts';
import { parseConfig } from '../io/config.ts';
import { tokenizerConfig, trainBpe } from '../text/bpe-trainer.ts';
import { readCorpus, splitDocs, type CorpusSource } from '../train/data.ts';
import { RECIPE, train } from '../train/loop.ts';
import { PRESETS } from '../train/presets.ts';
import { loadKernels } from '../kernels/index.ts';
import { MODEL_OPTIONS, UsageError, floatOption, intOption, parse } from './args.ts';

const HELP = `usage: dsv3 train --out DIR [options]
data and model:
  --data LIST             comma-separated: brown, nlp-corpus, text:PATH, jsonl:PATH (default brown,nlp-corpus)
  --tokenizer DIR         tokenizer.json + tokenizer_config.json; default: train a BPE tokenizer
  --vocab-size N          vocabulary of the trained tokenizer (default 8192)
  --preset default|tiny   model size (default: default), or --config FILE (a config.json)
  --resume                continue the run in --out exactly where it stopped
schedule:
  --steps N (1000) --batch B (8) --seq-len T (128) --lr (3e-3) --warmup (100) --min-lr-ratio (0.1)
  --weight-decay (0.1) --clip (1.0) --seed (0) --val-fraction (0.02)
  --eval-every N (100) --eval-windows N (32) --save-every N (500)
DeepSeek-V3 objectives:
  --mtp-weight λ (0.3) --seq-aux α (1e-4) --bias-update-speed γ (0.001) --fp8`;

function parseSources(list: string): CorpusSource[] {
  return list.split(',').map((s) => {
    const t = s.trim();
    if (t === 'brown') return { kind: 'brown' } as const;
    if (t === 'nlp-corpus') return { kind: 'nlp-corpus' } as const;
    if (t.startsWith('text:')) return { kind: 'text', path: t.slice(5), split: 'paragraph' } as const;
    if (t.startsWith('jsonl:')) return { kind: 'jsonl', path: t.slice(6) } as const;
    throw new UsageError(`--data: unknown source "${t}" (brown, nlp-corpus, text:PATH, jsonl:PATH)`);
  });
}

export function trainCommand(argv: string[]): number {
  const { values: v } = parse(argv, {
    ...MODEL_OPTIONS,
    out: { type: 'string' },
    data: { type: 'string' },
    tokenizer: { type: 'string' },
    'vocab-size': { type: 'string' },
    preset: { type: 'string' },
    config: { type: 'string' },
    resume: { type: 'boolean' },
    steps: { type: 'string' },
    batch: { type: 'string' },
    'seq-len': { type: 'string' },
    lr: { type: 'string' },
    warmup: { type: 'string' },
    'min-lr-ratio': { type: 'string' },
    'weight-decay': { type: 'string' },
    clip: { type: 'string' },
    seed: { type: 'string' },
    'val-fraction': { type: 'string' },
    'eval-every': { type: 'string' },
    'eval-windows': { type: 'string' },
    'save-every': { type: 'string' },
    'mtp-weight': { type: 'string' },
    'seq-aux': { type: 'string' },
    'bias-update-speed': { type: 'string' },
    fp8: { type: 'boolean' },
  });
  if (v.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (!v.out) throw new UsageError('--out DIR is required');
  const out = v.out;
  const sources = parseSources(v.data ?? 'brown,nlp-corpus');
  const seed = intOption(v.seed, 'seed', 0);
  const valFraction = floatOption(v['val-fraction'], 'val-fraction', 0.02);
  mkdirSync(out, { recursive: true });

  // Tokenizer: given, or trained once on the training split and kept in the run folder.
  let tokenizerDir = v.tokenizer;
  if (!tokenizerDir) {
    tokenizerDir = join(out, 'tokenizer');
    if (!existsSync(join(tokenizerDir, 'tokenizer.json'))) {
      const vocab = intOption(v['vocab-size'], 'vocab-size', 8192, 300);
      process.stderr.write(`dsv3 train: training a ${vocab}-token BPE tokenizer…\n`);
      const { train: docs } = splitDocs(readCorpus(sources), { valFraction, seed });
      mkdirSync(tokenizerDir, { recursive: true });
      writeFileSync(join(tokenizerDir, 'tokenizer.json'), JSON.stringify(trainBpe(docs.map((d) => d.text), { vocabSize: vocab })));
      writeFileSync(join(tokenizerDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig({ modelMaxLength: 1024 }), null, 2));
    }
  }
  if (!existsSync(join(tokenizerDir, 'tokenizer.json'))) {
    throw new DsError('MISSING_FILE', `${join(tokenizerDir, 'tokenizer.json')}: not found`);
  }
  const vocabOf = () => {
    const j = JSON.parse(readFileSync(join(tokenizerDir!, 'tokenizer.json'), 'utf8'));
    let max = Math.max(...(Object.values(j.model.vocab) as number[]));
    for (const t of j.added_tokens ?? []) max = Math.max(max, t.id);
    return max + 1;
  };

  let config;
  if (!v.resume) {
    if (v.config) config = parseConfig(JSON.parse(readFileSync(v.config, 'utf8')), v.config);
    else {
      const name = v.preset ?? 'default';
      const preset = PRESETS[name];
      if (!preset) throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}`);
      config = preset(vocabOf());
    }
  }

  const kernels = loadKernels({
    backend: (v.kernels as 'auto' | 'native' | 'ref' | undefined) ?? 'auto',
    threads: intOption(v.threads, 'threads', 0) || undefined,
  });
  let stop = false;
  const onSigint = () => {
    if (stop) process.exit(130);
    stop = true;
    process.stderr.write('\ndsv3 train: stopping after this step (Ctrl-C again to abort without saving)\n');
  };
  process.on('SIGINT', onSigint);
  const tty = process.stderr.isTTY;
  const fmt = (s: number) => `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  try {
    const res = train({
      out,
      config,
      resume: v.resume,
      tokenizerDir,
      sources,
      kernels,
      steps: intOption(v.steps, 'steps', 1000, 1),
      batch: intOption(v.batch, 'batch', 8, 1),
      seqLen: intOption(v['seq-len'], 'seq-len', 128, 2),
      lr: floatOption(v.lr, 'lr', 3e-3),
      warmup: intOption(v.warmup, 'warmup', 100),
      minLrRatio: floatOption(v['min-lr-ratio'], 'min-lr-ratio', RECIPE.minLrRatio),
      weightDecay: floatOption(v['weight-decay'], 'weight-decay', RECIPE.weightDecay),
      clip: floatOption(v.clip, 'clip', RECIPE.clip),
      mtpWeight: floatOption(v['mtp-weight'], 'mtp-weight', RECIPE.mtpWeight),
      seqAux: floatOption(v['seq-aux'], 'seq-aux', RECIPE.seqAux),
      biasUpdateSpeed: floatOption(v['bias-update-speed'], 'bias-update-speed', RECIPE.biasUpdateSpeed),
      fp8: v.fp8 ?? false,
      seed,
      valFraction,
      evalEvery: intOption(v['eval-every'], 'eval-every', 100),
      evalWindows: intOption(v['eval-windows'], 'eval-windows', 32),
      saveEvery: intOption(v['save-every'], 'save-every', 500),
      log: (line) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}dsv3 train: ${line}\n`),
      progress: (p) => {
        const width = 24;
        const done = Math.round((p.step / p.steps) * width);
        const line =
          `[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${p.step}/${p.steps} loss ${p.loss.toFixed(3)} ` +
          `${p.tokPerSec.toFixed(0)} tok/s ETA ${fmt(p.etaSec)}`;
        if (tty) process.stderr.write(`\r\x1b[K${line}`);
        else if (p.step % 50 === 0 || p.step === p.steps) process.stderr.write(`${line}\n`);
      },
      shouldStop: () => stop,
    });
    if (tty) process.stderr.write('\n');
    process.stdout.write(
      JSON.stringify({
        steps: res.steps,
        loss: res.finalLoss,
        val_loss: res.valLoss,
        tokens_per_sec: Math.round(res.tokensPerSec),
        expert_load: res.expertLoad,
        checkpoint: join(out, 'checkpoint'),
      }) + '\n',
    );
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}
