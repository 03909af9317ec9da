// Held-out evaluation: mean next-token cross-entropy of a model over token windows, the
// basis of perplexity and bits per byte. Windows run in batches through the same forward
// pass as inference.

import type { DeepseekV3 } from '../model/deepseek-v3.ts';

export interface EvalResult {
  /** Sum of −ln p(next token) over every predicted position. */
  nll: number;
  /** Positions predicted. */
  tokens: number;
}

/**
 * Split `ids` into windows of at most `seqLen` tokens (each predicts seqLen − 1 next tokens,
 * consecutive windows share one token so every token after the first is predicted once).
 */
export function evalWindows(ids: readonly number[], seqLen: number): number[][] {
  const out: number[][] = [];
  for (let s = 0; s + 1 < ids.length; s += seqLen - 1) out.push(ids.slice(s, s + seqLen));
  return out;
}

/** Cross-entropy of the model on windows of token ids, `batch` windows per forward pass. */
export function evaluate(model: DeepseekV3, windows: number[][], batch = 4): EvalResult {
  const V = model.cfg.vocab_size;
  let nll = 0;
  let tokens = 0;
  for (let b = 0; b < windows.length; b += batch) {
    const group = windows.slice(b, b + batch).filter((w) => w.length > 1);
    if (group.length === 0) continue;
    const r = model.forward(
      group.map((ids) => ({ ids, cache: model.newCache() })),
      { logits: 'all' },
    );
    group.forEach((ids, j) => {
      const row0 = r.seqs[j].row;
      for (let t = 0; t + 1 < ids.length; t++) {
        const o = (row0 + t) * V;
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, r.logits[o + v]);
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(r.logits[o + v] - max);
        nll += max + Math.log(sum) - r.logits[o + ids[t + 1]];
        tokens++;
      }
    });
  }
  return { nll, tokens };
}
