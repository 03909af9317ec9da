// Autoregressive generation in token ids for a batch of prompts. Step 0 runs every prompt
// in one forward pass; each later step feeds every unfinished sequence its last token, all
// in one forward pass over their latent caches. Finished sequences leave the batch.
// Strings (tokenizing, stop strings, streaming text) are the caller's business.

import type { AttnImpl } from '../model/mla.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { SequenceCache } from '../model/cache.ts';
import { DsError } from '../errors.ts';

/** Chooses the next token of a sequence from its logits [vocab] and its ids so far. */
export type TokenPicker = (logits: Float32Array, history: readonly number[]) => number;

export interface GenerateOptions {
  maxNewTokens: number;
  /** Default: greedy (argmax, lowest id on ties). */
  pick?: TokenPicker;
  /** Generation of a sequence ends after it emits one of these ids (kept in the output). */
  stopIds?: readonly number[];
  attn?: AttnImpl;
  /**
   * Called for every generated token, with the logits it was chosen from. Returning false
   * ends that sequence (e.g. a stop string matched).
   */
  onToken?: (seq: number, id: number, logits: Float32Array) => boolean | void;
}

export interface GenerateResult {
  /** Generated ids per prompt (prompt not included). */
  ids: number[][];
  finish: ('stop' | 'length')[];
  /** Wall-clock seconds of the prompt pass and of the decode steps. */
  prefillSeconds: number;
  decodeSeconds: number;
}

/** Index of the largest value; the first one wins ties (as torch.argmax). */
export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

export const greedy: TokenPicker = (logits) => argmax(logits);

export function generate(model: DeepseekV3, prompts: number[][], opts: GenerateOptions): GenerateResult {
  const V = model.cfg.vocab_size;
  const maxLen = model.cfg.max_position_embeddings;
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new DsError('BAD_INPUT', `prompt ${i} is empty`);
    if (p.length > maxLen) {
      throw new DsError('CONTEXT_OVERFLOW', `prompt ${i} has ${p.length} tokens; the model allows ${maxLen}`);
    }
  });
  const pick = opts.pick ?? greedy;
  const stop = new Set(opts.stopIds ?? []);
  const caches: SequenceCache[] = prompts.map(() => model.newCache());
  const history = prompts.map((p) => [...p]);
  const out: number[][] = prompts.map(() => []);
  const finish: ('stop' | 'length')[] = prompts.map(() => 'length');
  let active = prompts.map((_, i) => i).filter(() => opts.maxNewTokens > 0);

  const t0 = performance.now();
  let t1 = t0;
  let feed = prompts;
  for (let step = 0; active.length > 0; step++) {
    const r = model.forward(
      active.map((i, j) => ({ ids: feed[j], cache: caches[i] })),
      { logits: 'last', attn: opts.attn },
    );
    if (step === 0) t1 = performance.now();
    const next: number[] = [];
    for (const [j, i] of active.entries()) {
      const logits = r.logits.subarray(j * V, (j + 1) * V);
      const id = pick(logits, history[i]);
      out[i].push(id);
      history[i].push(id);
      const keep = opts.onToken?.(i, id, logits) !== false;
      if (!keep || stop.has(id)) finish[i] = 'stop';
      else if (out[i].length < opts.maxNewTokens && history[i].length < maxLen) next.push(i);
    }
    feed = next.map((i) => [history[i][history[i].length - 1]]);
    active = next;
  }
  const t2 = performance.now();
  return { ids: out, finish, prefillSeconds: (t1 - t0) / 1e3, decodeSeconds: (t2 - t1) / 1e3 };
}
