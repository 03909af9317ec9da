// A Multi-Token Prediction module (DeepSeek-V3 §2.2), as vLLM runs the released weights:
// row i combines the main model's final hidden state h_i (after model.norm) with the
// embedding of token i+1 and predicts token i+2, at RoPE position i:
//   x = eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)])   (embedding first)
//   x = decoder layer(x)                                 (its own latent cache)
//   logits = head(norm(x))
// The embedding of a row at position 0 is zeroed (vLLM does so), so row 0 sees only h_0.

import type { RouteParams } from '../kernels/kernels.ts';
import { blockForward, type StepContext } from './block.ts';
import type { LayerCache } from './cache.ts';
import type { MtpWeights } from './weights.ts';

export interface MtpOutput {
  /** [T, vocab] */
  logits: Float32Array;
  /** [T, D] the decoder layer's output, before shared_head.norm. */
  block: Float32Array;
}

/** ids [T]: the next tokens t_{i+1}; hidden [T, D]: h_i; positions i in ctx.pos. */
export function mtpForward(
  ctx: StepContext,
  w: MtpWeights,
  route: RouteParams,
  index: number,
  caches: LayerCache[],
  ids: Int32Array,
  hidden: Float32Array,
): MtpOutput {
  const { K, T } = ctx;
  const D = w.enorm.length;
  const e = new Float32Array(T * D);
  K.embedding(e, w.embed_tokens, ids);
  for (let t = 0; t < T; t++) if (ctx.pos[t] === 0) e.fill(0, t * D, (t + 1) * D);
  const en = new Float32Array(T * D);
  const hn = new Float32Array(T * D);
  K.rmsNorm(en, e, w.enorm, T, ctx.dims.eps);
  K.rmsNorm(hn, hidden, w.hnorm, T, ctx.dims.eps);
  const cat = new Float32Array(T * 2 * D); // [T, 2D]: normed embedding, then normed hidden
  for (let t = 0; t < T; t++) {
    cat.set(en.subarray(t * D, (t + 1) * D), t * 2 * D);
    cat.set(hn.subarray(t * D, (t + 1) * D), t * 2 * D + D);
  }
  const x = new Float32Array(T * D);
  K.matmul(x, cat, T, w.eh_proj);
  blockForward(ctx, w.layer, route, index, caches, x);
  const xn = new Float32Array(T * D);
  K.rmsNorm(xn, x, w.norm, T, ctx.dims.eps);
  const logits = new Float32Array(T * w.head.rows);
  K.matmul(logits, xn, T, w.head);
  return { logits, block: x };
}
