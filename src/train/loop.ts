// The training loop, top to bottom: data → model → for each step: batch, forward and
// backward (trainStep), AdamW update, auxiliary-loss-free bias update, logging, periodic
// validation and checkpoints. The DeepSeek-V3 recipe: next-token CE + λ·MTP CE + α·the
// sequence-wise balance loss, routing balanced by the per-expert bias (moved by γ toward
// balance after every step, never by gradients), optional simulated FP8 GEMMs.

import { existsSync, mkdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { totalmem } from 'node:os';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { DsError } from '../errors.ts';
import type { DeepseekConfig } from '../io/config.ts';
import type { Kernels } from '../kernels/kernels.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { writeRandomCheckpoint } from '../model/init.ts';
import type { Routing } from '../model/moe.ts';
import { tensorTable, trainedTensors } from '../model/weights.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { writeFileAtomic } from './atomic.ts';
import { loadOptimizer, recoverCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.ts';
import { packDocs, readCorpus, splitDocs, WindowSampler, type CorpusSource, type SamplerState } from './data.ts';
import { evaluate } from './eval.ts';
import { fp8Kernels, type Fp8Kernels } from './fp8.ts';
import { AdamW, decays, learningRate } from './optim.ts';
import { lossCurveSvg } from './plot.ts';
import { trainStep } from './step.ts';

/**
 * The recipe's settings that rarely change (DeepSeek-V3's: cosine to 10%, decay 0.1, clip 1,
 * MTP weight 0.3, balance-loss α 1e-4, bias update speed γ 0.001); `dsv3 train` defaults.
 */
export const RECIPE = {
  minLrRatio: 0.1,
  weightDecay: 0.1,
  clip: 1,
  mtpWeight: 0.3,
  seqAux: 1e-4,
  biasUpdateSpeed: 0.001,
} as const satisfies Partial<TrainOptions>;

export interface TrainOptions {
  out: string;
  /** A fresh model of this config, or continue the checkpoint in `out` (resume). */
  config?: DeepseekConfig;
  resume?: boolean;
  tokenizerDir: string;
  sources: CorpusSource[];
  kernels: Kernels;
  steps: number;
  batch: number;
  seqLen: number;
  lr: number;
  warmup: number;
  minLrRatio: number;
  weightDecay: number;
  clip: number;
  mtpWeight: number;
  seqAux: number;
  biasUpdateSpeed: number;
  fp8: boolean;
  seed: number;
  valFraction: number;
  evalEvery: number;
  evalWindows: number;
  saveEvery: number;
  /** Called with a log line (stderr in the CLI). */
  log: (line: string) => void;
  /** Called after each step, for a progress bar. */
  progress?: (p: { step: number; steps: number; loss: number; tokPerSec: number; etaSec: number }) => void;
  /** Progress of data preparation (tokenizing the corpus): `done` of `total` documents. */
  dataProgress?: (done: number, total: number) => void;
  /** Called once, just before the first step (the CLI installs its signal handlers here). */
  onStart?: () => void;
  /**
   * Polled after each step, once the event loop has run (so signal handlers get to set what
   * it reads): true saves a checkpoint and stops (Ctrl-C, SIGTERM).
   */
  shouldStop?: () => boolean;
}

export interface TrainSummary {
  steps: number;
  /** True when shouldStop ended the run before `steps` (the checkpoint holds `steps`). */
  stopped: boolean;
  finalLoss: number;
  valLoss: number | null;
  tokensPerSec: number;
  history: TrainerState['history'];
  /** Per MoE layer: max and mean expert load (fraction of routed slots) over the last steps. */
  expertLoad: Record<string, { max: number; mean: number }>;
}

/** Tokens of the corpus split, cached in the run folder so restarts skip tokenizing. */
function tokensFor(opts: TrainOptions, tok: Tokenizer): { train: Int32Array; val: Int32Array } {
  const cache = join(opts.out, 'data');
  const key = JSON.stringify({ sources: opts.sources, val: opts.valFraction, seed: opts.seed, vocab: tok.vocabSize });
  const meta = join(cache, 'meta.json');
  if (existsSync(meta) && readFileSync(meta, 'utf8') === key) {
    const read = (f: string) => {
      const b = readFileSync(join(cache, f));
      return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    };
    return { train: read('train.bin'), val: read('val.bin') };
  }
  const t0 = performance.now();
  const docs = readCorpus(opts.sources);
  const { train, val } = splitDocs(docs, { valFraction: opts.valFraction, seed: opts.seed });
  opts.log(`data: ${docs.length} documents (${val.length} held out), tokenizing…`);
  const total = train.length + val.length;
  const t = packDocs(train, tok, { onProgress: (n) => opts.dataProgress?.(n, total) });
  const v = val.length ? packDocs(val, tok, { onProgress: (n) => opts.dataProgress?.(train.length + n, total) }) : new Int32Array(0);
  opts.dataProgress?.(total, total);
  opts.log(`data: ${t.length} training tokens, ${v.length} held out, in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  // meta.json goes last and vouches for the .bin files: take the old one away first.
  mkdirSync(cache, { recursive: true });
  if (existsSync(meta)) unlinkSync(meta);
  writeFileAtomic(join(cache, 'train.bin'), new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
  writeFileAtomic(join(cache, 'val.bin'), new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  writeFileAtomic(meta, key);
  return { train: t, val: v };
}

/**
 * Refuse a run that cannot fit in this machine's memory: fp32 weights, gradients and two
 * Adam moments (16 bytes per parameter), plus a rough bound on saved activations.
 */
export function checkMemory(cfg: DeepseekConfig, tokensPerStep: number, available = totalmem()): void {
  const params = tensorTable(cfg).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  const layers = cfg.num_hidden_layers + cfg.num_nextn_predict_layers;
  const perToken =
    4 * (layers * (12 * cfg.hidden_size + cfg.num_attention_heads * 4 * cfg.kv_lora_rank +
      6 * (cfg.num_experts_per_tok + cfg.n_shared_experts) * cfg.moe_intermediate_size) + 3 * cfg.vocab_size);
  const need = params * 16 + tokensPerStep * perToken;
  if (need > 0.8 * available) {
    const gb = (b: number) => (b / 2 ** 30).toFixed(1);
    throw new DsError(
      'BAD_CONFIG',
      `this model needs about ${gb(need)} GB to train (${(params / 1e6).toFixed(0)}M parameters × 16 bytes ` +
        `+ activations of ${tokensPerStep} tokens per step); the machine has ${gb(available)} GB`,
    );
  }
}

/** Move each expert's selection bias by γ toward balance: down if overloaded, up if not. */
export function updateBias(bias: Float32Array, load: Float64Array, gamma: number): void {
  let mean = 0;
  for (let e = 0; e < load.length; e++) mean += load[e];
  mean /= load.length;
  for (let e = 0; e < load.length; e++) bias[e] += gamma * Math.sign(mean - load[e]);
}

/**
 * The saved state of the run in `out` (its checkpoint/trainer_state.json), after finishing
 * or undoing a checkpoint swap a crash interrupted; null when there is no checkpoint.
 */
export function readRunState(out: string, log?: (line: string) => void): (TrainerState & { adam_step: number }) | null {
  const modelDir = join(out, 'checkpoint');
  for (const note of recoverCheckpoint(modelDir)) log?.(`checkpoint: ${note}`);
  const f = join(modelDir, 'trainer_state.json');
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : null;
}

export async function train(opts: TrainOptions): Promise<TrainSummary> {
  const tok = Tokenizer.fromDir(opts.tokenizerDir);
  mkdirSync(opts.out, { recursive: true });
  const modelDir = join(opts.out, 'checkpoint');

  // The model: fresh random weights, or the last checkpoint of this run.
  let loadDir = modelDir;
  if (opts.resume) {
    if (!readRunState(opts.out, opts.log)) {
      throw new DsError('MISSING_FILE', `${modelDir}: no checkpoint to resume (trainer_state.json missing)`);
    }
  } else {
    if (!opts.config) throw new DsError('BAD_INPUT', 'train: a config is needed to start a new run');
    if (opts.config.vocab_size < tok.vocabSize) {
      throw new DsError('BAD_CONFIG', `vocab_size ${opts.config.vocab_size} is smaller than the tokenizer's ${tok.vocabSize}`);
    }
    checkMemory(opts.config, opts.batch * opts.seqLen);
    // Scratch weights, read once: checkpoint/ (an earlier run's, maybe) changes only at the first save.
    loadDir = join(opts.out, 'checkpoint.init');
    rmSync(loadDir, { recursive: true, force: true });
    writeRandomCheckpoint(loadDir, opts.config, { dtype: 'F32', seed: opts.seed });
  }
  const loaded = DeepseekV3.load(loadDir, { kernels: opts.kernels, mtp: true }).forTraining();
  if (loadDir !== modelDir) rmSync(loadDir, { recursive: true, force: true });
  const cfg = loaded.cfg;
  if (opts.seqLen > cfg.max_position_embeddings) {
    throw new DsError('BAD_INPUT', `--seq-len ${opts.seqLen} exceeds max_position_embeddings ${cfg.max_position_embeddings}`);
  }
  const w = loaded.weights;

  let K: Kernels = opts.kernels;
  let fp8: Fp8Kernels | null = null;
  if (opts.fp8) {
    const all = new Set<LinearWeight['data']>();
    const exempt = new Set<LinearWeight['data']>([w.embed_tokens.data, w.lm_head.data]);
    for (const l of [...w.layers, ...w.mtp.map((m) => m.layer)]) if (l.moe) exempt.add(l.moe.gate.data);
    const collect = (x: unknown): void => {
      if (x && typeof x === 'object' && 'dtype' in x && 'rows' in x) all.add((x as LinearWeight).data);
      else if (x && typeof x === 'object') for (const v of Object.values(x)) collect(v);
    };
    collect(w);
    fp8 = fp8Kernels(opts.kernels, all, exempt);
    K = fp8;
  }
  const model = new DeepseekV3(cfg, w, K).forTraining();
  // The fp32 master weights the optimizer updates in place, by Hugging Face name.
  const tensors = trainedTensors(cfg, model.weights);
  const shapes = new Map(tensorTable(cfg).map((t) => [t.name, t.shape]));

  const opt = new AdamW({ lr: opts.lr, weightDecay: opts.weightDecay, clip: opts.clip });
  let step = 0;
  let samplerState: SamplerState | undefined;
  let history: TrainerState['history'] = [];
  if (opts.resume) {
    const st = loadOptimizer(modelDir, model, opt);
    step = st.step;
    samplerState = st.sampler as SamplerState;
    history = st.history;
    opts.log(step < opts.steps ? `resumed at step ${step}, training to step ${opts.steps}` : `the run is at step ${step}: nothing to train (target ${opts.steps})`);
  }

  const data = tokensFor(opts, tok);
  const sampler = new WindowSampler(data.train, opts.seqLen, { seed: opts.seed, state: samplerState });
  const valWindows: number[][] = [];
  for (let s = 0; s + opts.seqLen + 1 <= data.val.length && valWindows.length < opts.evalWindows; s += opts.seqLen) {
    valWindows.push(Array.from(data.val.subarray(s, s + opts.seqLen + 1)));
  }
  opts.log(
    `train: ${data.train.length} tokens (${sampler.numWindows} windows of ${opts.seqLen}), ` +
      `val: ${valWindows.length} windows; ${tensors.size} tensors, ` +
      `${[...tensors.values()].reduce((n, v) => n + v.length, 0)} parameters; kernels ${K.name}`,
  );

  const L = cfg.num_hidden_layers;
  const moeLayers = [...w.layers.keys(), ...w.mtp.map((_, k) => L + k)].filter((i) =>
    i < L ? w.layers[i].moe : w.mtp[i - L].layer.moe,
  );
  const biasOf = (i: number) => (i < L ? w.layers[i].moe! : w.mtp[i - L].layer.moe!).bias;
  const loadWindow = new Map<number, Float64Array>(moeLayers.map((i) => [i, new Float64Array(cfg.n_routed_experts)]));

  let savedStep = opts.resume ? step : -1; // what checkpoint/ holds, when it is this run's
  const save = () => {
    if (savedStep === step) return;
    saveCheckpoint(modelDir, model, {
      dtype: 'F32',
      tokenizerDir: opts.tokenizerDir,
      optimizer: opt,
      state: { step, sampler: sampler.state(), history, run: runInfo(opts) },
      mtpCopies: true,
    });
    savedStep = step;
    writeFileAtomic(join(opts.out, 'loss.svg'), lossCurveSvg(
      [
        { name: 'train', points: history.map((h) => [h.step, h.loss]) },
        { name: 'validation', points: history.filter((h) => h.val !== undefined).map((h) => [h.step, h.val!]) },
      ],
      { title: 'dsv3 training loss', yLabel: 'cross-entropy (nats/token)' },
    ));
  };
  const validate = () => (valWindows.length ? evalLoss(model, valWindows) : undefined);

  const t0 = performance.now();
  const step0 = step;
  let lastLoss = NaN;
  let lastVal: number | null = null;
  let stopped = false;
  opts.onStart?.();
  while (step < opts.steps) {
    const batch: number[][] = [];
    for (let b = 0; b < opts.batch; b++) batch.push(Array.from(sampler.next().tokens));
    const loads = new Map<number, Float64Array>();
    const r = trainStep(model, batch, {
      mtpWeight: opts.mtpWeight,
      seqAux: opts.seqAux,
      attn: 'naive',
      onRoute: (layer: number, rt: Routing) => {
        const l = loads.get(layer) ?? new Float64Array(cfg.n_routed_experts);
        for (const e of rt.idx) l[e]++;
        loads.set(layer, l);
      },
    });
    const lr = learningRate(step, { lr: opts.lr, warmup: opts.warmup, total: opts.steps, minRatio: opts.minLrRatio });
    opt.update(tensors, r.grads, { lr, decay: (n) => decays(n, shapes.get(n) ?? [1]) });
    fp8?.newStep();
    // Auxiliary-loss-free balancing: the bias follows the load of this step's batch.
    for (const [layer, l] of loads) {
      const bias = biasOf(layer);
      if (bias && opts.biasUpdateSpeed > 0) updateBias(bias, l, opts.biasUpdateSpeed);
      const acc = loadWindow.get(layer);
      if (acc) for (let e = 0; e < l.length; e++) acc[e] = 0.9 * acc[e] + 0.1 * l[e];
    }
    step++;
    lastLoss = r.loss.main_ce;
    const entry: TrainerState['history'][number] = { step, loss: r.loss.main_ce };
    if (opts.evalEvery > 0 && (step % opts.evalEvery === 0 || step === opts.steps)) {
      lastVal = validate() ?? null;
      if (lastVal !== null) entry.val = lastVal;
      opts.log(
        `step ${step}: loss ${r.loss.main_ce.toFixed(4)}` +
          (r.loss.mtp_ce !== null ? ` mtp ${r.loss.mtp_ce.toFixed(4)}` : '') +
          (lastVal !== null ? ` val ${lastVal.toFixed(4)}` : '') +
          ` lr ${lr.toExponential(2)} | expert load ${formatLoad(loadWindow)}`,
      );
    }
    history.push(entry);
    const secs = (performance.now() - t0) / 1e3;
    const tps = ((step - step0) * opts.batch * opts.seqLen) / secs;
    opts.progress?.({
      step,
      steps: opts.steps,
      loss: r.loss.main_ce,
      tokPerSec: tps,
      etaSec: ((opts.steps - step) * secs) / (step - step0),
    });
    if ((opts.saveEvery > 0 && step % opts.saveEvery === 0) || step === opts.steps) save();
    if (step === opts.steps) break;
    // Let the event loop run (signal handlers, I/O): a step is synchronous from end to end.
    await yieldToEventLoop();
    if (opts.shouldStop?.()) {
      stopped = true;
      save();
      opts.log(`stopped at step ${step} of ${opts.steps}; checkpoint saved, continue with --resume`);
      break;
    }
  }
  const secs = (performance.now() - t0) / 1e3;
  return {
    steps: step,
    stopped,
    finalLoss: lastLoss,
    valLoss: lastVal,
    tokensPerSec: ((step - step0) * opts.batch * opts.seqLen) / Math.max(secs, 1e-9),
    history,
    expertLoad: loadStats(loadWindow),
  };
}

/** Mean next-token CE (main head) on validation windows. */
function evalLoss(model: DeepseekV3, windows: number[][]): number {
  const r = evaluate(model, windows);
  return r.nll / r.tokens;
}

function loadStats(win: Map<number, Float64Array>): Record<string, { max: number; mean: number }> {
  const out: Record<string, { max: number; mean: number }> = {};
  for (const [layer, l] of win) {
    const total = l.reduce((a, b) => a + b, 0) || 1;
    const frac = [...l].map((x) => x / total);
    out[`model.layers.${layer}`] = { max: Math.max(...frac), mean: 1 / l.length };
  }
  return out;
}

function formatLoad(win: Map<number, Float64Array>): string {
  return [...win]
    .map(([layer, l]) => {
      const mean = l.reduce((a, b) => a + b, 0) / l.length || 1;
      return `L${layer} max/mean ${(Math.max(...l) / mean).toFixed(2)}`;
    })
    .join(', ');
}

/**
 * The run's settings, kept in trainer_state.json: `steps` is the target a `--resume` without
 * `--steps` trains to, and the rest are what it continues with unless given again.
 */
function runInfo(o: TrainOptions): Record<string, unknown> {
  return {
    steps: o.steps,
    batch: o.batch,
    seq_len: o.seqLen,
    lr: o.lr,
    warmup: o.warmup,
    min_lr_ratio: o.minLrRatio,
    weight_decay: o.weightDecay,
    clip: o.clip,
    mtp_weight: o.mtpWeight,
    seq_aux: o.seqAux,
    bias_update_speed: o.biasUpdateSpeed,
    fp8: o.fp8,
    seed: o.seed,
    val_fraction: o.valFraction,
    eval_every: o.evalEvery,
    eval_windows: o.evalWindows,
    save_every: o.saveEvery,
    sources: o.sources,
  };
}
