// A Multi-Token Prediction module (DeepSeek-V3 §2.2), as vLLM runs the released weights:
// row i combines the main model's final hidden state h_i (after model.norm) with the
// embedding of token i+1 and predicts token i+2, at RoPE position i:
//   x = eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)])   (embedding first)
//   x = decoder layer(x)                                 (its own latent cache)
//   logits = head(norm(x))
// The embedding of a row at position 0 is zeroed (vLLM does so), so row 0 sees only h_0.
// mtpBackward runs it in reverse and returns the gradient of the hidden states h_i, which
// flows on into the main model. In training, the module's embedding and head are the main
// model's (see DeepseekV3.forTraining), so their gradients land on the main tensors.

import type { RouteParams } from '../kernels/kernels.ts';
import { blockAppend, blockBackward, blockForward, type StepContext } from './block.ts';
import type { SeqSlice } from './mla.ts';
import type { LayerCache } from './cache.ts';
import { NONE, embeddingBackward, linearBackward, type BackwardContext } from './tape.ts';
import type { MtpWeights } from './weights.ts';
import type { Reused } from '../tensor/scratch.ts';

/** n elements of `r`'s memory, or a fresh array without it. */
function outArray(r: Reused | undefined, n: number): Float32Array {
  return r ? r.view(n) : new Float32Array(n);
}

/** What mtpBackward needs, kept by mtpForward in ctx.tape.mtp under the layer index. */
export class MtpSaved {
  ctx: StepContext | null = null;
  ids: Int32Array = new Int32Array(0);
  /** [T, D] the embeddings (rows at position 0 zeroed) and the hidden states h_i. */
  e = NONE;
  hidden = NONE;
  /** [T, 2D] eh_proj's input. */
  cat = NONE;
  /** [T, D] the decoder layer's output, and after shared_head.norm. */
  x = NONE;
  xn = NONE;
}

export interface MtpOutput {
  /**
   * [T, vocab], or [sequences, vocab] for each sequence's last row (`last`); vocab is the
   * head's row count, or the draft vocabulary asked for (the first `vocab` token ids).
   */
  logits: Float32Array;
  /** [T, D] (or [sequences, D] with `last`) the decoder layer's output, before shared_head.norm. */
  block: Float32Array;
}

/**
 * ids [T]: the next tokens t_{i+1}; hidden [T, D]: h_i; positions i in ctx.pos. With `last`,
 * only each sequence's last row is run through the layer and the head (drafting reads no
 * other): the rows before it only append their entries to the module's cache, which is all
 * a later row needs of them, so the last rows' numbers are those of a pass over every row.
 * With 'none', every row only appends its cache entries (catching the cache up).
 */
export function mtpForward(
  ctx: StepContext,
  w: MtpWeights,
  route: RouteParams,
  index: number,
  caches: LayerCache[],
  ids: Int32Array,
  hidden: Float32Array,
  last: boolean | 'none' = false,
  vocab: number = w.head.rows,
  /** Reused memory for the outputs (see ForwardOptions.reuse); fresh arrays without. */
  out?: { logits: Reused; block: Reused },
): MtpOutput {
  const { K, T, mem } = ctx;
  const D = w.enorm.length;
  const e = mem.f32(T * D);
  K.embedding(e, w.embed_tokens, ids);
  for (let t = 0; t < T; t++) if (ctx.pos[t] === 0) e.fill(0, t * D, (t + 1) * D);
  const en = mem.f32(T * D);
  const hn = mem.f32(T * D);
  K.rmsNorm(en, e, w.enorm, T, ctx.dims.eps);
  K.rmsNorm(hn, hidden, w.hnorm, T, ctx.dims.eps);
  const cat = mem.f32(T * 2 * D); // [T, 2D]: normed embedding, then normed hidden
  for (let t = 0; t < T; t++) {
    cat.set(en.subarray(t * D, (t + 1) * D), t * 2 * D);
    cat.set(hn.subarray(t * D, (t + 1) * D), t * 2 * D + D);
  }
  // With `last`, every row's x is a temporary: only the last rows' copies are returned.
  let x = last ? mem.f32(T * D) : outArray(out?.block, T * D);
  K.matmul(x, cat, T, w.eh_proj);
  if (last === 'none') {
    // Cache entries only (rows a later pass attends to; no logits, no block output).
    if (ctx.tape) throw new Error('mtpForward: training runs every row');
    blockAppend(ctx, w.layer, caches, x);
    return { logits: new Float32Array(0), block: new Float32Array(0) };
  }
  let sub = ctx;
  if (last) {
    if (ctx.tape) throw new Error('mtpForward: training runs every row');
    const n = ctx.seqs.length;
    if (T > n) {
      // Rows before each sequence's last: their cache entries only.
      const xl = mem.f32((T - n) * D);
      const pl = new Int32Array(T - n);
      const sl: SeqSlice[] = [];
      let r = 0;
      for (const s of ctx.seqs) {
        xl.set(x.subarray(s.row * D, (s.row + s.len - 1) * D), r * D);
        pl.set(ctx.pos.subarray(s.row, s.row + s.len - 1), r);
        sl.push({ row: r, len: s.len - 1, p0: s.p0 });
        r += s.len - 1;
      }
      blockAppend({ ...ctx, T: T - n, pos: pl, seqs: sl }, w.layer, caches, xl);
    }
    const xs = outArray(out?.block, n * D);
    const ps = new Int32Array(n);
    const ss = ctx.seqs.map((s, i): SeqSlice => {
      const r = s.row + s.len - 1;
      xs.set(x.subarray(r * D, (r + 1) * D), i * D);
      ps[i] = ctx.pos[r];
      return { row: i, len: 1, p0: s.p0 + s.len - 1 };
    });
    x = xs;
    sub = { ...ctx, T: n, pos: ps, seqs: ss };
  }
  const rows = sub.T;
  blockForward(sub, w.layer, route, index, caches, x);
  const xn = mem.f32(rows * D);
  K.rmsNorm(xn, x, w.norm, rows, ctx.dims.eps);
  // A draft vocabulary: only the head's first `vocab` rows (token ids), a zero-copy slice.
  const logits = outArray(out?.logits, rows * vocab);
  K.matmul(logits, xn, rows, w.head, 0, vocab);
  if (ctx.tape) {
    const s = new MtpSaved();
    s.ctx = ctx;
    s.ids = ids;
    s.e = e;
    s.hidden = hidden;
    s.cat = cat;
    s.x = x;
    s.xn = xn;
    ctx.tape.mtp.set(index, s);
  }
  return { logits, block: x };
}

/**
 * Backward of mtpForward for the module at layer `index`: dlogits [T, vocab] → the
 * gradient of the hidden states h_i [T, D]. Weight gradients accumulate in g.
 */
export function mtpBackward(
  ctx: BackwardContext,
  w: MtpWeights,
  g: MtpWeights,
  route: RouteParams,
  index: number,
  dlogits: Float32Array,
): Float32Array {
  const { K, TK, T } = ctx;
  const s = ctx.tape.mtp.get(index);
  if (!s) throw new Error(`mtpBackward: MTP module at layer ${index} was not recorded`);
  const D = w.enorm.length;
  const eps = ctx.dims.eps;
  const dxn = linearBackward(K, g.head, w.head, dlogits, s.xn, T);
  const dx = new Float32Array(T * D);
  TK.rmsNormBackward(dx, g.norm, dxn, s.x, w.norm, T, eps);
  blockBackward(ctx, w.layer, g.layer, route, index, dx);
  const dcat = linearBackward(K, g.eh_proj, w.eh_proj, dx, s.cat, T); // [T, 2D]
  const den = new Float32Array(T * D);
  const dhn = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    den.set(dcat.subarray(t * 2 * D, t * 2 * D + D), t * D);
    dhn.set(dcat.subarray(t * 2 * D + D, (t + 1) * 2 * D), t * D);
  }
  const de = new Float32Array(T * D);
  TK.rmsNormBackward(de, g.enorm, den, s.e, w.enorm, T, eps);
  for (let t = 0; t < T; t++) if (ctx.pos[t] === 0) de.fill(0, t * D, (t + 1) * D);
  embeddingBackward(K, g.embed_tokens, de, s.ids);
  const dh = new Float32Array(T * D);
  TK.rmsNormBackward(dh, g.hnorm, dhn, s.hidden, w.hnorm, T, eps);
  return dh;
}
