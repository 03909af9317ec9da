// One DeepSeek decoder layer: x += MLA(RMSNorm(x)); x += FFN(RMSNorm(x)), where FFN is a
// dense SwiGLU MLP for the first `first_k_dense_replace` layers and DeepSeekMoE after.
// Shared by the main model and the MTP modules. blockBackward is blockForward in reverse.

import { type Alloc } from '../tensor/scratch.ts';
import type { Kernels, RouteParams } from '../kernels/kernels.ts';
import type { LayerCache } from './cache.ts';
import { mlaAppend, mlaBackward, mlaForward, MlaSaved, type AttnImpl, type MlaDims, type SeqSlice } from './mla.ts';
import { mlpBackward, mlpForward, MlpSaved, moeBackward, moeForward, MoeSaved, type Routing } from './moe.ts';
import { NONE, type BackwardContext, type Tape } from './tape.ts';
import type { LayerWeights } from './weights.ts';

/** What every layer of one forward call shares. */
export interface StepContext {
  K: Kernels;
  dims: MlaDims;
  /** Flat batch: T tokens, their absolute positions, and which rows belong to which sequence. */
  T: number;
  pos: Int32Array;
  seqs: SeqSlice[];
  impl: AttnImpl;
  /** Called with each MoE layer's routing decisions (for tests, statistics and training). */
  onRoute?: (layer: number, r: Routing) => void;
  /** Training: where each layer keeps what its backward needs. Absent at inference. */
  tape?: Tape;
  /** Where the pass takes its temporary arrays (HEAP when taping: the tape keeps them). */
  mem: Alloc;
}

/** What blockBackward needs, kept by blockForward in ctx.tape.blocks under the layer index. */
export class BlockSaved {
  /** [T, D] the residual stream entering the layer, and after the attention. */
  x0 = NONE;
  x1 = NONE;
  attn = new MlaSaved();
  mlp: MlpSaved | undefined;
  moe: MoeSaved | undefined;
}

/** Run layer `index` on the residual stream x [T, D], in place. */
export function blockForward(
  ctx: StepContext,
  w: LayerWeights,
  route: RouteParams | null,
  index: number,
  caches: LayerCache[],
  x: Float32Array,
): void {
  const { K, T } = ctx;
  const D = w.input_layernorm.length;
  const s = ctx.tape ? new BlockSaved() : undefined;
  if (s) {
    ctx.tape!.blocks.set(index, s);
    s.x0 = x.slice();
    if (w.moe) s.moe = new MoeSaved();
    else s.mlp = new MlpSaved();
  }
  const { mem } = ctx;
  const h = mem.f32(T * D);
  K.rmsNorm(h, x, w.input_layernorm, T, ctx.dims.eps);
  K.add(x, mlaForward(K, w.self_attn, ctx.dims, h, T, ctx.pos, ctx.seqs, caches, ctx.impl, s?.attn, mem), T * D);
  if (s) s.x1 = x.slice();
  const h2 = s ? mem.f32(T * D) : h; // the attention kept h when training
  K.rmsNorm(h2, x, w.post_attention_layernorm, T, ctx.dims.eps);
  const ffn = w.moe
    ? moeForward(K, w.moe, route!, h2, T, ctx.onRoute && ((r) => ctx.onRoute!(index, r)), s?.moe, mem)
    : mlpForward(K, w.mlp!, h2, T, s?.mlp, mem);
  K.add(x, ffn, T * D);
}

/**
 * The part of blockForward that outlives the call: the layer's cache entries for the rows of
 * x [T, D] (the residual stream entering the layer), for rows whose output nobody reads.
 */
export function blockAppend(ctx: StepContext, w: LayerWeights, caches: LayerCache[], x: Float32Array): void {
  const { K, T, mem } = ctx;
  const h = mem.f32(T * w.input_layernorm.length);
  K.rmsNorm(h, x, w.input_layernorm, T, ctx.dims.eps);
  mlaAppend(K, w.self_attn, ctx.dims, h, T, ctx.pos, ctx.seqs, caches, mem);
}

/**
 * Backward of blockForward for layer `index`: dx [T, D] holds the gradient of the layer's
 * output and becomes that of its input, in place. Weight gradients accumulate in g.
 */
export function blockBackward(
  ctx: BackwardContext,
  w: LayerWeights,
  g: LayerWeights,
  route: RouteParams | null,
  index: number,
  dx: Float32Array,
): void {
  const { K, TK, T } = ctx;
  const s = ctx.tape.blocks.get(index);
  if (!s) throw new Error(`blockBackward: layer ${index} was not recorded`);
  const D = w.input_layernorm.length;
  const eps = ctx.dims.eps;
  const dr = new Float32Array(T * D);

  // x2 = x1 + FFN(norm(x1))
  const dh2 = w.moe
    ? moeBackward(K, TK, w.moe, g.moe!, route!, s.moe!, dx, T)
    : mlpBackward(K, TK, w.mlp!, g.mlp!, s.mlp!, dx, T);
  TK.rmsNormBackward(dr, g.post_attention_layernorm, dh2, s.x1, w.post_attention_layernorm, T, eps);
  K.add(dx, dr, T * D);

  // x1 = x0 + MLA(norm(x0))
  const dh = mlaBackward(K, TK, w.self_attn, g.self_attn, ctx.dims, s.attn, dx, T, ctx.pos, ctx.seqs, ctx.impl);
  TK.rmsNormBackward(dr, g.input_layernorm, dh, s.x0, w.input_layernorm, T, eps);
  K.add(dx, dr, T * D);
}
