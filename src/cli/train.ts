// `dsv3 train`: train a DeepSeek-V3-architecture model on a CPU, the DeepSeek way (MTP
// objective, auxiliary-loss-free balancing plus the sequence-wise balance loss, optional
// simulated FP8 GEMMs). The run folder holds the tokenized data, the checkpoint (Hugging
// Face layout, loadable by `dsv3 generate --model OUT/checkpoint`) and loss.svg.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { DsError } from '../errors.ts';
import { loadConfig, parseConfig, type DeepseekConfig } from '../io/config.ts';
import { tokenizerConfig, trainBpe } from '../text/bpe-trainer.ts';
import { writeFileAtomic } from '../train/atomic.ts';
import { readCorpus, splitDocs, type CorpusSource } from '../train/data.ts';
import { RECIPE, checkMemory, readRunState, train } from '../train/loop.ts';
import { PRESETS } from '../train/presets.ts';
import { loadKernels } from '../kernels/index.ts';
import { MODEL_OPTIONS, UsageError, floatOption, intOption, parse } from './args.ts';

const HELP = `usage: dsv3 train --out DIR [options]
data and model:
  --data LIST             comma-separated: brown, nlp-corpus, text:PATH, jsonl:PATH (default brown,nlp-corpus)
  --tokenizer DIR         tokenizer.json + tokenizer_config.json; default: train a BPE tokenizer
  --vocab-size N          vocabulary of the trained tokenizer (default 8192, or the --config's)
  --preset default|tiny   model size (default: default), or --config FILE (a config.json)
  --resume                continue the run in --out where it stopped, with its recorded settings
                          (target step count included); options given again override them
schedule:
  --steps N (1000) --batch B (8) --seq-len T (128) --lr (3e-3) --warmup (100) --min-lr-ratio (0.1)
  --weight-decay (0.1) --clip (1.0) --seed (0) --val-fraction (0.02)
  --eval-every N (100) --eval-windows N (32) --save-every N (500)
DeepSeek-V3 objectives:
  --mtp-weight λ (0.3) --seq-aux α (1e-4) --bias-update-speed γ (0.001) --fp8
Ctrl-C or SIGTERM saves a checkpoint after the step in progress and stops (exit 130 / 143);
a second one during that step aborts without saving (the last checkpoint stays as it was).`;

function parseSources(list: string): CorpusSource[] {
  return list.split(',').map((s) => {
    const t = s.trim();
    if (t === 'brown') return { kind: 'brown' } as const;
    if (t === 'nlp-corpus') return { kind: 'nlp-corpus' } as const;
    if (t.startsWith('text:') && t.length > 5) return { kind: 'text', path: t.slice(5), split: 'paragraph' } as const;
    if (t.startsWith('jsonl:') && t.length > 6) return { kind: 'jsonl', path: t.slice(6) } as const;
    throw new UsageError(`--data: unknown source "${t}" (brown, nlp-corpus, text:PATH, jsonl:PATH)`);
  });
}

/** A number option within [min, max] (`above`: strictly greater than min). */
function rangeOption(v: string | undefined, name: string, def: number, r: { min?: number; max?: number; above?: boolean }): number {
  const n = floatOption(v, name, def);
  const lo = r.min ?? -Infinity;
  const hi = r.max ?? Infinity;
  if ((r.above ? n <= lo : n < lo) || n > hi) {
    const want = r.max === undefined ? `${r.above ? '>' : '>='} ${lo}` : `in ${r.above ? '(' : '['}${lo}, ${hi}]`;
    throw new UsageError(`--${name} must be a number ${want}, got "${v}"`);
  }
  return n;
}

/** Highest token id + 1 of a tokenizer.json. */
function vocabOf(dir: string): number {
  const j = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  let max = Math.max(...(Object.values(j.model.vocab) as number[]));
  for (const t of j.added_tokens ?? []) max = Math.max(max, t.id);
  return max + 1;
}

export async function trainCommand(argv: string[]): Promise<number> {
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
  const tty = process.stderr.isTTY;
  const log = (line: string) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}dsv3 train: ${line}\n`);
  /** A progress line for one phase: rewritten in place on a terminal, else a line every 2 s. */
  const progressLine = (label: string) => {
    let last = -Infinity;
    return (done: number, total: number) => {
      const now = performance.now();
      if (done < total && now - last < (tty ? 100 : 2000)) return;
      last = now;
      const text = `dsv3 train: ${label} ${done}/${total} (${Math.floor((100 * done) / Math.max(total, 1))}%)`;
      process.stderr.write(tty ? `\r\x1b[K${text}${done >= total ? '\n' : ''}` : `${text}\n`);
    };
  };

  // Every option is checked here, before anything slow (tokenizer training can take minutes).
  if (!v.out) throw new UsageError('--out DIR is required');
  const out = v.out;
  const backend = v.kernels ?? 'auto';
  if (backend !== 'auto' && backend !== 'native' && backend !== 'ref') {
    throw new UsageError(`--kernels must be auto, native or ref, got "${backend}"`);
  }
  const threads = intOption(v.threads, 'threads', 0);
  const modelDir = join(out, 'checkpoint');
  // A resumed run keeps its recorded settings (its target step count first) unless given again.
  let recorded: Record<string, unknown> = {};
  let config: DeepseekConfig | undefined;
  let checkConfig: DeepseekConfig; // what the options are checked against
  if (v.resume) {
    if (v.preset !== undefined || v.config !== undefined) {
      throw new UsageError('--resume continues the model in OUT/checkpoint: drop --preset/--config');
    }
    const st = readRunState(out, log);
    if (!st) throw new DsError('MISSING_FILE', `${modelDir}: no checkpoint to resume (trainer_state.json missing)`);
    recorded = st.run ?? {};
    checkConfig = loadConfig(modelDir);
  } else {
    const st = readRunState(out, log);
    if (st) {
      throw new UsageError(
        `${out} already holds a run (checkpoint at step ${st.step}): continue it with --resume, ` +
          `or delete ${modelDir} to start over`,
      );
    }
    if (v.preset !== undefined && v.config !== undefined) throw new UsageError('--preset and --config: give one');
    if (v.config) {
      if (!existsSync(v.config)) throw new DsError('MISSING_FILE', `--config ${v.config}: not found`);
      config = parseConfig(JSON.parse(readFileSync(v.config, 'utf8')), v.config);
    } else if (!PRESETS[v.preset ?? 'default']) {
      throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}, got "${v.preset}"`);
    }
    checkConfig = config ?? PRESETS[v.preset ?? 'default'](intOption(v['vocab-size'], 'vocab-size', 8192, 300));
  }
  const num = (key: string, def: number) => (typeof recorded[key] === 'number' ? (recorded[key] as number) : def);
  const sources: CorpusSource[] =
    v.data !== undefined ? parseSources(v.data)
    : Array.isArray(recorded.sources) ? (recorded.sources as CorpusSource[])
    : parseSources('brown,nlp-corpus');
  // (A resumed run whose data/ cache matches does not read its corpus again.)
  for (const s of v.resume && v.data === undefined ? [] : sources) {
    if ((s.kind === 'text' || s.kind === 'jsonl') && !existsSync(s.path)) {
      throw new DsError('MISSING_FILE', `--data ${s.kind}:${s.path}: not found`);
    }
  }
  const seed = intOption(v.seed, 'seed', num('seed', 0));
  const valFraction = rangeOption(v['val-fraction'], 'val-fraction', num('val_fraction', 0.02), { min: 0, max: 0.5 });
  const steps = intOption(v.steps, 'steps', num('steps', 1000), 1);
  const batch = intOption(v.batch, 'batch', num('batch', 8), 1);
  const seqLen = intOption(v['seq-len'], 'seq-len', num('seq_len', 128), 2);
  const lr = rangeOption(v.lr, 'lr', num('lr', 3e-3), { min: 0, above: true });
  const warmup = intOption(v.warmup, 'warmup', num('warmup', 100));
  const minLrRatio = rangeOption(v['min-lr-ratio'], 'min-lr-ratio', num('min_lr_ratio', RECIPE.minLrRatio), { min: 0, max: 1 });
  const weightDecay = rangeOption(v['weight-decay'], 'weight-decay', num('weight_decay', RECIPE.weightDecay), { min: 0 });
  const clip = rangeOption(v.clip, 'clip', num('clip', RECIPE.clip), { min: 0 });
  const mtpWeight = rangeOption(v['mtp-weight'], 'mtp-weight', num('mtp_weight', RECIPE.mtpWeight), { min: 0 });
  const seqAux = rangeOption(v['seq-aux'], 'seq-aux', num('seq_aux', RECIPE.seqAux), { min: 0 });
  const biasUpdateSpeed = rangeOption(v['bias-update-speed'], 'bias-update-speed', num('bias_update_speed', RECIPE.biasUpdateSpeed), { min: 0 });
  const evalEvery = intOption(v['eval-every'], 'eval-every', num('eval_every', 100));
  const evalWindows = intOption(v['eval-windows'], 'eval-windows', num('eval_windows', 32));
  const saveEvery = intOption(v['save-every'], 'save-every', num('save_every', 500));
  const fp8 = v.fp8 ?? (recorded.fp8 === true);
  if (seqLen > checkConfig.max_position_embeddings) {
    throw new UsageError(`--seq-len ${seqLen} exceeds the model's max_position_embeddings ${checkConfig.max_position_embeddings}`);
  }
  checkMemory(checkConfig, batch * seqLen);
  // The tokenizer: given, the run's own (resume: the copy its checkpoint carries), or trained
  // once on the training split and kept in the run folder.
  const tokenizerDir = v.tokenizer ?? (v.resume ? modelDir : join(out, 'tokenizer'));
  const trainTokenizer = !v.tokenizer && !v.resume && !existsSync(join(tokenizerDir, 'tokenizer.json'));
  const vocabSize = intOption(v['vocab-size'], 'vocab-size', config?.vocab_size ?? 8192, 300);
  if (trainTokenizer && vocabSize < 300) throw new UsageError(`--vocab-size must be at least 300 to train a tokenizer, got ${vocabSize}`);
  if (!trainTokenizer && !existsSync(join(tokenizerDir, 'tokenizer.json'))) {
    throw new DsError('MISSING_FILE', `${join(tokenizerDir, 'tokenizer.json')}: not found`);
  }
  if (config && (trainTokenizer ? vocabSize : vocabOf(tokenizerDir)) > config.vocab_size) {
    throw new UsageError(
      `--config ${v.config}: vocab_size ${config.vocab_size} is smaller than the tokenizer's ` +
        `${trainTokenizer ? `--vocab-size ${vocabSize}` : vocabOf(tokenizerDir)}`,
    );
  }
  const kernels = loadKernels({ backend, threads: threads || undefined });

  mkdirSync(out, { recursive: true });
  if (trainTokenizer) {
    const t0 = performance.now();
    log(`reading the corpus…`);
    const { train: docs } = splitDocs(readCorpus(sources), { valFraction, seed });
    log(`training a ${vocabSize}-token BPE tokenizer on ${docs.length} documents…`);
    const counting = progressLine('tokenizer: counting words in documents');
    function* texts() {
      for (let i = 0; i < docs.length; i++) {
        if (i % 200 === 0) counting(i, docs.length);
        yield docs[i].text;
      }
      counting(docs.length, docs.length);
    }
    const merging = progressLine('tokenizer: merges');
    const json = trainBpe(texts(), {
      vocabSize,
      onProgress: merging,
      onStats: (st) => log(`tokenizer: ${st.merges} merges from ${st.words} words in ${((performance.now() - t0) / 1e3).toFixed(1)} s`),
    });
    mkdirSync(tokenizerDir, { recursive: true });
    // tokenizer.json last: its presence says the tokenizer is complete.
    writeFileAtomic(join(tokenizerDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig({ modelMaxLength: 1024 }), null, 2));
    writeFileAtomic(join(tokenizerDir, 'tokenizer.json'), JSON.stringify(json));
  }
  if (!v.resume && !config) config = PRESETS[v.preset ?? 'default'](vocabOf(tokenizerDir));

  // Ctrl-C / SIGTERM: the handler runs between steps (the loop yields to the event loop after
  // each); the first asks for a save and a stop, a second one before the save aborts. Once the
  // save starts the handlers are gone, so a further signal kills the process at once: the
  // checkpoint swap is crash-safe, so the last checkpoint survives that.
  const signals: NodeJS.Signals[] = [];
  const release = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  function onSignal(sig: NodeJS.Signals) {
    signals.push(sig);
    if (signals.length === 1) {
      log(`${sig}: saving a checkpoint and stopping (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again aborts without saving)`);
      return;
    }
    release();
    log(`${sig}: aborted without saving`);
    process.kill(process.pid, sig); // die of the signal, as an interrupted program should
    process.exit(128 + constants.signals[sig]);
  }
  const fmt = (s: number) => `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  try {
    const res = await train({
      out,
      config,
      resume: v.resume,
      tokenizerDir,
      sources,
      kernels,
      steps,
      batch,
      seqLen,
      lr,
      warmup,
      minLrRatio,
      weightDecay,
      clip,
      mtpWeight,
      seqAux,
      biasUpdateSpeed,
      fp8,
      seed,
      valFraction,
      evalEvery,
      evalWindows,
      saveEvery,
      log,
      dataProgress: progressLine('data: tokenizing documents'),
      progress: (p) => {
        const width = 24;
        const done = Math.round((p.step / p.steps) * width);
        const line =
          `[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${p.step}/${p.steps} loss ${p.loss.toFixed(3)} ` +
          `${p.tokPerSec.toFixed(0)} tok/s ETA ${fmt(p.etaSec)}`;
        if (tty) process.stderr.write(`\r\x1b[K${line}`);
        else if (p.step % 50 === 0 || p.step === p.steps) process.stderr.write(`${line}\n`);
      },
      onStart: () => {
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      },
      shouldStop: () => {
        if (signals.length === 0) return false;
        release(); // the save begins: from here a signal kills at once
        return true;
      },
    });
    if (tty) process.stderr.write('\n');
    process.stdout.write(
      JSON.stringify({
        steps: res.steps,
        stopped: res.stopped,
        loss: res.finalLoss,
        val_loss: res.valLoss,
        tokens_per_sec: Math.round(res.tokensPerSec),
        expert_load: res.expertLoad,
        checkpoint: modelDir,
      }) + '\n',
    );
    return res.stopped && signals.length ? 128 + constants.signals[signals[0]] : 0;
  } finally {
    release();
  }
}
