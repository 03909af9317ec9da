// One DeepSeek decoder layer: x += MLA(RMSNorm(x)); x += FFN(RMSNorm(x)), where FFN is a
// dense SwiGLU MLP for the first `first_k_dense_replace` layers and DeepSeekMoE after.
// Shared by the main model and the MTP modules.

import type { Kernels, RouteParams } from '../kernels/kernels.ts';
import type { LayerCache } from './cache.ts';
import { mlaForward, type AttnImpl, type MlaDims, type SeqSlice } from './mla.ts';
import { mlpForward, moeForward, type Routing } from './moe.ts';
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
  const h = new Float32Array(T * D);
  K.rmsNorm(h, x, w.input_layernorm, T, ctx.dims.eps);
  K.add(x, mlaForward(K, w.self_attn, ctx.dims, h, T, ctx.pos, ctx.seqs, caches, ctx.impl), T * D);
  K.rmsNorm(h, x, w.post_attention_layernorm, T, ctx.dims.eps);
  const ffn = w.moe
    ? moeForward(K, w.moe, route!, h, T, ctx.onRoute && ((r) => ctx.onRoute!(index, r)))
    : mlpForward(K, w.mlp!, h, T);
  K.add(x, ffn, T * D);
}
