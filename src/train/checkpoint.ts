// Saving a training run in the Hugging Face layout (config.json, model.safetensors with the
// MTP module as layer num_hidden_layers, tokenizer files), so `dsv3 generate` and
// vLLM-style loaders read it, plus what --resume needs to continue exactly: the AdamW
// moments and the fp32 master weights (optimizer.safetensors) and the trainer state
// (trainer_state.json: step, data position, loss history). A save is crash-safe: see
// saveCheckpoint and recoverCheckpoint for the protocol.

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { configToJson, type DeepseekConfig } from '../io/config.ts';
import { Checkpoint, writeCheckpoint, type TensorSpec } from '../io/safetensors.ts';
import { DsError } from '../errors.ts';
import { f32ToBf16 } from '../tensor/dtypes.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import { tensorTable, trainedTensors } from '../model/weights.ts';
import type { AdamW } from './optim.ts';
import { syncDir, syncTree, writeFileAtomic } from './atomic.ts';

export type SaveDType = 'F32' | 'BF16';

/** Every tensor of the model by Hugging Face name (MTP embedding/head: the tied main ones). */
export function namedTensors(model: DeepseekV3, opts: { mtpCopies?: boolean } = {}): Map<string, Float32Array> {
  const cfg = model.cfg;
  const w = model.weights;
  const trained = trainedTensors(cfg, w);
  const out = new Map<string, Float32Array>();
  const L = cfg.num_hidden_layers;
  for (const slot of tensorTable(cfg, { mtp: w.mtp.length > 0 })) {
    const n = slot.name;
    let data = trained.get(n);
    const bias = /^model\.layers\.(\d+)\.mlp\.gate\.e_score_correction_bias$/.exec(n);
    if (bias) {
      const i = Number(bias[1]);
      data = (i < L ? w.layers[i] : w.mtp[i - L].layer).moe!.bias!;
    } else if (/^model\.layers\.\d+\.embed_tokens\.weight$/.test(n)) {
      if (!opts.mtpCopies) continue;
      data = trained.get('model.embed_tokens.weight');
    } else if (/^model\.layers\.\d+\.shared_head\.head\.weight$/.test(n)) {
      if (!opts.mtpCopies) continue;
      data = trained.get('lm_head.weight');
    }
    if (!data) throw new Error(`namedTensors: no data for "${n}"`);
    out.set(n, data);
  }
  return out;
}


/** Write tensors as one safetensors checkpoint into `dir` via a temporary folder. */
function writeTensors(dir: string, tensors: Map<string, Float32Array>, dtype: SaveDType, shapes: Map<string, number[]>) {
  const specs: TensorSpec[] = [...tensors.keys()].map((name) => ({
    name,
    dtype: dtype === 'BF16' && !name.endsWith('e_score_correction_bias') ? 'BF16' : 'F32',
    shape: shapes.get(name)!,
  }));
  const kind = new Map(specs.map((s) => [s.name, s.dtype]));
  writeCheckpoint(dir, specs, (name) => {
    const v = tensors.get(name)!;
    if (kind.get(name) === 'F32') return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    const u = new Uint16Array(v.length);
    for (let i = 0; i < v.length; i++) u[i] = f32ToBf16(v[i]);
    return new Uint8Array(u.buffer);
  });
}

export interface TrainerState {
  step: number;
  sampler: unknown;
  history: { step: number; loss: number; val?: number }[];
  run: Record<string, unknown>;
}

/**
 * The crash-safe save protocol for a checkpoint folder D. Only renames change what D is, and
 * each rename is atomic; the commit point is the rename of the finished D.saving to D.new.
 *   1. write everything into D.saving and fsync it all (a crash here: D.saving is garbage);
 *   2. rename D.saving → D.new, fsync the parent (committed: D.new is complete and newest);
 *   3. rename D → D.old (if D exists), then D.new → D, fsync the parent;
 *   4. remove D.old.
 * Invariants: D.new exists only when complete; D.old is complete whenever D is missing.
 * recoverCheckpoint finishes or undoes whatever a crash interrupted, from any of these states.
 */
export function recoverCheckpoint(dir: string): string[] {
  const notes: string[] = [];
  const tmp = `${dir}.saving`;
  const fresh = `${dir}.new`;
  const old = `${dir}.old`;
  if (existsSync(tmp)) {
    rmSync(tmp, { recursive: true, force: true });
    notes.push(`removed the unfinished save ${tmp}`);
  }
  if (existsSync(fresh)) {
    // Crashed after the commit: finish the swap (D may be there still, or already D.old).
    if (existsSync(dir)) {
      rmSync(old, { recursive: true, force: true });
      renameSync(dir, old);
    }
    renameSync(fresh, dir);
    syncDir(dirname(dir));
    notes.push(`completed the interrupted swap of ${fresh} into ${dir}`);
  } else if (!existsSync(dir) && existsSync(old)) {
    // Only an older protocol could get here; the previous checkpoint is whole, so keep it.
    renameSync(old, dir);
    syncDir(dirname(dir));
    notes.push(`restored ${dir} from ${old}`);
  }
  if (existsSync(old)) rmSync(old, { recursive: true, force: true });
  return notes;
}

/**
 * Save model + tokenizer (+ optimizer and trainer state when given) into `dir`, replacing
 * what is there only once everything is written and flushed to disk (see recoverCheckpoint).
 */
export function saveCheckpoint(
  dir: string,
  model: DeepseekV3,
  opts: {
    dtype?: SaveDType;
    tokenizerDir?: string;
    optimizer?: AdamW;
    state?: TrainerState;
    mtpCopies?: boolean;
  } = {},
): void {
  recoverCheckpoint(dir);
  const tmp = `${dir}.saving`;
  mkdirSync(tmp, { recursive: true });
  const cfg: DeepseekConfig = {
    ...model.cfg,
    torch_dtype: opts.dtype === 'BF16' ? 'bfloat16' : 'float32',
    quantization_config: null,
  };
  writeFileAtomic(join(tmp, 'config.json'), JSON.stringify(configToJson(cfg), null, 2) + '\n');
  const tensors = namedTensors(model, { mtpCopies: opts.mtpCopies });
  const shapes = new Map(tensorTable(cfg).map((s) => [s.name, s.shape]));
  writeTensors(tmp, tensors, opts.dtype ?? 'F32', shapes);
  if (opts.tokenizerDir) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      if (existsSync(join(opts.tokenizerDir, f))) writeFileAtomic(join(tmp, f), readFileSync(join(opts.tokenizerDir, f)));
    }
  }
  if (opts.optimizer) {
    // fp32 master weights (the model file may be BF16) and both Adam moments.
    const o = opts.optimizer;
    const trained = trainedTensors(model.cfg, model.weights);
    const all = new Map<string, Float32Array>();
    const oShapes = new Map<string, number[]>();
    for (const [n, v] of trained) {
      const shape = shapes.get(n)!;
      all.set(`master.${n}`, v);
      all.set(`m.${n}`, o.m.get(n) ?? new Float32Array(v.length));
      all.set(`v.${n}`, o.v.get(n) ?? new Float32Array(v.length));
      for (const p of ['master', 'm', 'v']) oShapes.set(`${p}.${n}`, shape);
    }
    const od = join(tmp, 'optimizer');
    writeTensors(od, all, 'F32', oShapes);
  }
  if (opts.state) {
    writeFileAtomic(join(tmp, 'trainer_state.json'),
      JSON.stringify({ ...opts.state, adam_step: opts.optimizer?.step ?? 0 }, null, 2) + '\n');
  }
  syncTree(tmp); // the safetensors files are written by their own writer: flush them too
  const fresh = `${dir}.new`;
  renameSync(tmp, fresh); // the commit point
  syncDir(dirname(dir));
  recoverCheckpoint(dir); // the swap: D → D.old, D.new → D, remove D.old
}

/** Restore fp32 master weights and Adam moments saved by saveCheckpoint into a training model. */
export function loadOptimizer(dir: string, model: DeepseekV3, opt: AdamW): TrainerState {
  const stateFile = join(dir, 'trainer_state.json');
  const od = join(dir, 'optimizer');
  if (!existsSync(stateFile) || !existsSync(od)) {
    throw new DsError('MISSING_FILE', `${dir}: no trainer_state.json / optimizer/ to resume from (not a training checkpoint)`);
  }
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as TrainerState & { adam_step: number };
  const ck = Checkpoint.open(od);
  try {
    for (const [n, v] of trainedTensors(model.cfg, model.weights)) {
      for (const p of ['master', 'm', 'v'] as const) {
        const name = `${p}.${n}`;
        if (!ck.has(name)) throw new DsError('MISSING_TENSOR', `${od}: no "${name}" (checkpoint from another model?)`);
        const t = ck.read(name);
        if (t.data.byteLength !== v.byteLength) {
          throw new DsError('BAD_SHAPE', `${od}: "${name}" has ${t.data.byteLength / 4} values, the model ${v.length}`);
        }
        const src = new Float32Array(t.data.buffer, t.data.byteOffset, v.length);
        if (p === 'master') v.set(src);
        else (p === 'm' ? opt.m : opt.v).set(n, src.slice());
      }
    }
  } finally {
    ck.close();
  }
  opt.step = state.adam_step;
  return state;
}
