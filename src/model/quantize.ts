// Quantising a loaded model's weights at load time (`--quantize q8_0|q6_k|q4_k_m`): every matrix
// gets the ggml block type llama-quantize's recipe gives the same tensor (io/gguf-recipes.ts),
// quantised row by row from its stored format, so no matrix is ever held as float32 as a whole.
// The router (ffn_gate_inp) stays as stored, as llama.cpp keeps it; vectors are untouched.

import type { DeepseekConfig } from '../io/config.ts';
import { ggufExpertsName, ggufName } from '../io/gguf-names.ts';
import { recipeType, type QuantRecipe } from '../io/gguf-recipes.ts';
import type { Kernels } from '../kernels/kernels.ts';
import { decodeRow } from '../kernels/ref/index.ts';
import { f32ToF16, isBlockType, rowBytes, type BlockType } from '../tensor/dtypes.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import type { LayerWeights, MlpWeights, ModelWeights } from './weights.ts';
import type { Steps } from './steps.ts';

/**
 * One matrix in `type` (a matrix already in `type` is kept): block types by K.quantize, which
 * works row by row from the stored format, so the matrix is never held as float32 as a whole.
 */
export function quantizeMatrix(
  K: Kernels,
  m: LinearWeight,
  type: BlockType | 'F16',
  alloc?: (bytes: number) => Uint8Array,
): LinearWeight {
  if (m.dtype === type) return m;
  if (type === 'F16') {
    // The fallback for rows that are not whole blocks; f16 rounding as ggml's.
    const row = new Float32Array(m.cols);
    const data = new Uint16Array(m.rows * m.cols);
    for (let r = 0; r < m.rows; r++) {
      decodeRow(m, r, row);
      for (let k = 0; k < m.cols; k++) data[r * m.cols + k] = f32ToF16(row[k]);
    }
    return { dtype: 'F16', rows: m.rows, cols: m.cols, data };
  }
  const rb = rowBytes(type, m.cols);
  const data = alloc ? alloc(m.rows * rb) : new Uint8Array(m.rows * rb);
  K.quantize(data, m, type);
  return { dtype: type, rows: m.rows, cols: m.cols, data };
}

export interface QuantizeWeightsOptions {
  alloc?: (bytes: number) => Uint8Array;
  notes?: string[];
  onMatrix?: () => void;
}

/**
 * The weights with every matrix quantised by `recipe`, pausing after every matrix (run it with
 * runSteps or runStepsAsync); `notes` collects the fallbacks. Matrices shared between places
 * (an MTP module's copy of the embedding or head) stay shared.
 */
export function* quantizeWeightsSteps(
  K: Kernels,
  w: ModelWeights,
  cfg: DeepseekConfig,
  recipe: QuantRecipe,
  opts: QuantizeWeightsOptions = {},
): Steps<ModelWeights> {
  const notes = opts.notes ?? [];
  const tied = w.lm_head === w.embed_tokens;
  const done = new Map<LinearWeight, LinearWeight>();
  const q = function* (m: LinearWeight, name: string, shape = [m.rows, m.cols]): Steps<LinearWeight> {
    const seen = done.get(m);
    if (seen) return seen;
    const t = recipeType(recipe, { name, shape, layers: cfg.num_hidden_layers, experts: cfg.n_routed_experts, tied }, notes);
    const out = isBlockType(t) || t === 'F16' ? quantizeMatrix(K, m, t, opts.alloc) : m;
    done.set(m, out);
    opts.onMatrix?.();
    yield;
    return out;
  };
  const opt = function* (m: LinearWeight | null, hf: string): Steps<LinearWeight | null> {
    return m ? yield* q(m, ggufName(hf)) : null;
  };
  const mlp = function* (x: MlpWeights, p: string): Steps<MlpWeights> {
    return {
      gate_proj: yield* q(x.gate_proj, ggufName(`${p}.gate_proj.weight`)),
      up_proj: yield* q(x.up_proj, ggufName(`${p}.up_proj.weight`)),
      down_proj: yield* q(x.down_proj, ggufName(`${p}.down_proj.weight`)),
    };
  };
  const layer = function* (l: LayerWeights, i: number): Steps<LayerWeights> {
    const p = `model.layers.${i}`;
    const a = l.self_attn;
    const E = cfg.n_routed_experts;
    const self_attn = {
      ...a,
      q_a_proj: yield* opt(a.q_a_proj, `${p}.self_attn.q_a_proj.weight`),
      q_b_proj: yield* opt(a.q_b_proj, `${p}.self_attn.q_b_proj.weight`),
      q_proj: yield* opt(a.q_proj, `${p}.self_attn.q_proj.weight`),
      kv_a_proj_with_mqa: yield* q(a.kv_a_proj_with_mqa, ggufName(`${p}.self_attn.kv_a_proj_with_mqa.weight`)),
      kv_b_proj: yield* opt(a.kv_b_proj, `${p}.self_attn.kv_b_proj.weight`),
      k_b_proj: yield* opt(a.k_b_proj, `${p}.self_attn.k_b_proj.weight`),
      v_b_proj: yield* opt(a.v_b_proj, `${p}.self_attn.v_b_proj.weight`),
      o_proj: yield* q(a.o_proj, ggufName(`${p}.self_attn.o_proj.weight`)),
    };
    const dense = l.mlp && (yield* mlp(l.mlp, `${p}.mlp`));
    let moe = l.moe;
    if (moe) {
      const experts: MlpWeights[] = [];
      for (const x of moe.experts) {
        experts.push({
          gate_proj: yield* q(x.gate_proj, ggufExpertsName(i, 'gate_proj'), [E, x.gate_proj.rows, x.gate_proj.cols]),
          up_proj: yield* q(x.up_proj, ggufExpertsName(i, 'up_proj'), [E, x.up_proj.rows, x.up_proj.cols]),
          down_proj: yield* q(x.down_proj, ggufExpertsName(i, 'down_proj'), [E, x.down_proj.rows, x.down_proj.cols]),
        });
      }
      const shared = moe.shared && (yield* mlp(moe.shared, `${p}.mlp.shared_experts`));
      moe = { ...moe, experts, shared };
    }
    return { ...l, self_attn, mlp: dense, moe };
  };
  const embed = yield* q(w.embed_tokens, 'token_embd.weight');
  const head = tied ? embed : yield* q(w.lm_head, 'output.weight');
  const layers: LayerWeights[] = [];
  for (const [i, l] of w.layers.entries()) layers.push(yield* layer(l, i));
  const mtp: ModelWeights['mtp'] = [];
  for (const [k, m] of w.mtp.entries()) {
    const i = cfg.num_hidden_layers + k;
    mtp.push({
      ...m,
      embed_tokens: yield* q(m.embed_tokens, 'token_embd.weight'),
      // eh_proj has no llama.cpp counterpart: the recipe's base type.
      eh_proj: yield* q(m.eh_proj, `blk.${i}.eh_proj.weight`),
      layer: yield* layer(m.layer, i),
      head: yield* q(m.head, 'output.weight'),
    });
  }
  return { embed_tokens: embed, layers, norm: w.norm, lm_head: head, mtp };
}
