// One training step without an update: forward with a tape, the losses, backward, and the
// gradient of every trained tensor by Hugging Face name. Semantics are those of
// ../shared/golden/models/v3-tiny/train.json:
//   main_ce  mean over every position t < T_b − 1 of −log p(tokens[b][t+1])
//   mtp_ce   MTP row i (hidden state i, token i+1, position i) for i = 0 … T_b − 2, the
//            mean over rows i ≤ T_b − 3 of −log p(tokens[b][i+2])
//   total    main_ce + mtpWeight · mtp_ce + seqAux · Σ_layers mean_b Σ_i f_i P_i
// The MTP module's embedding and head are the main model's during training, and the MTP
// loss flows back into the main model through the hidden states (after model.norm).
// balance_loss reports α·Σ_i f_i P_i with train.json's α = 1e-4 whatever seqAux is, so
// seqAux = 1e-4 adds exactly the reported values to the total and seqAux = 0 (the default,
// as in train.json's total) only reports them.

import { DsError } from '../errors.ts';
import { refTrainKernels } from '../kernels/ref/train.ts';
import type { TrainKernels } from '../kernels/train.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { AttnImpl, SeqSlice } from '../model/mla.ts';
import { routeParams, type Routing } from '../model/moe.ts';
import { Tape } from '../model/tape.ts';
import { BALANCE_ALPHA, meanCrossEntropy, sequenceBalance, type BalanceTopk } from './loss.ts';

export interface TrainStepOptions {
  /** λ, the MTP loss's weight in the total (default 0.3, as train.json). */
  mtpWeight?: number;
  /** α of the sequence-wise balance loss in the total (default 0: reported only). */
  seqAux?: number;
  attn?: AttnImpl;
  /** Which selection f_i counts (default 'routed': with bias and group limit). */
  balanceTopk?: BalanceTopk;
  trainKernels?: TrainKernels;
  /** false: losses only, no backward pass (grads comes back empty). Default true. */
  backward?: boolean;
  /** Called with every MoE layer's routing (main layers, then the MTP's), e.g. expert loads. */
  onRoute?: (layer: number, r: Routing) => void;
}

export interface TrainStepResult {
  /** mtp_ce is null when the model has no MTP module or no sequence has 3 tokens. */
  loss: { main_ce: number; mtp_ce: number | null; total: number };
  /** Per MoE layer ("model.layers.N"): α·Σ_i f_i P_i with α = 1e-4, mean over sequences. */
  balance_loss: Record<string, number>;
  /** The same, per sequence. */
  balance_per_sequence: Record<string, number[]>;
  /** d total / d W for every trained tensor (matrices row-major [out, in]). */
  grads: Map<string, Float32Array>;
}

/** Forward and backward over a batch of token sequences (each at least 2 tokens long). */
export function trainStep(model: DeepseekV3, tokens: number[][], opts: TrainStepOptions = {}): TrainStepResult {
  const m = model.forTraining();
  const TK = opts.trainKernels ?? refTrainKernels;
  const lambda = opts.mtpWeight ?? 0.3;
  const alpha = opts.seqAux ?? 0;
  const attn = opts.attn ?? 'absorb';
  const onRoute = opts.onRoute;
  const { vocab_size: V, hidden_size: D, num_hidden_layers: L } = m.cfg;
  if (tokens.length === 0) throw new DsError('BAD_INPUT', 'a training batch needs at least one sequence');
  tokens.forEach((ids, b) => {
    if (ids.length < 2) throw new DsError('BAD_INPUT', `sequence ${b} has ${ids.length} tokens; training needs 2 or more`);
  });

  // Main model: every row predicts the next token of its sequence.
  const tape = new Tape();
  const caches = tokens.map(() => m.newCache());
  const fwd = m.forward(
    tokens.map((ids, b) => ({ ids, cache: caches[b] })),
    { logits: 'all', attn, tape, onRoute },
  );
  const T = fwd.hidden.length / D;
  const targets = new Int32Array(T).fill(-1);
  fwd.seqs.forEach((s, b) => {
    for (let t = 0; t + 1 < s.len; t++) targets[s.row + t] = tokens[b][t + 1];
  });
  const dLogits = new Float32Array(T * V);
  const main = meanCrossEntropy(TK, dLogits, fwd.logits, targets, V, 1);

  // MTP: row i of sequence b joins h_i with token i+1 and predicts token i+2.
  let mtpCe: number | null = null;
  let dMtp: Float32Array | null = null;
  let mtpSeqs: SeqSlice[] | null = null;
  if (m.hasMtp) {
    const out = m.mtp(
      tokens.map((ids, b) => ({
        ids: ids.slice(1),
        hidden: fwd.hidden.subarray(fwd.seqs[b].row * D, (fwd.seqs[b].row + ids.length - 1) * D),
        cache: caches[b],
      })),
      { attn, tape, onRoute },
    );
    mtpSeqs = tape.mtp.get(L)!.ctx!.seqs;
    const Tm = out.logits.length / V;
    const mtpTargets = new Int32Array(Tm).fill(-1);
    mtpSeqs.forEach((s, b) => {
      for (let i = 0; i + 2 < tokens[b].length; i++) mtpTargets[s.row + i] = tokens[b][i + 2];
    });
    dMtp = new Float32Array(Tm * V);
    const ce = meanCrossEntropy(TK, dMtp, out.logits, mtpTargets, V, lambda);
    if (ce.count > 0) mtpCe = ce.mean;
  }

  // Balance loss of every MoE layer (the MTP's over its own rows); with α > 0 its gradient
  // joins the router logits' in moeBackward.
  const p = routeParams(m.cfg, null);
  const E = m.cfg.n_routed_experts;
  const balance: Record<string, number> = {};
  const perSeq: Record<string, number[]> = {};
  let aux = 0;
  for (const [index, s] of [...tape.blocks].sort((a, b) => a[0] - b[0])) {
    if (!s.moe) continue;
    const seqs = index < L ? fwd.seqs : mtpSeqs!;
    const dl = alpha > 0 ? new Float32Array(s.moe.route.logits.length) : undefined;
    const vals = sequenceBalance(s.moe.route, seqs, p, E, opts.balanceTopk, dl, alpha / seqs.length);
    s.moe.dLogits = dl ?? null;
    const mean = vals.reduce((a, v) => a + v, 0) / vals.length;
    balance[`model.layers.${index}`] = BALANCE_ALPHA * mean;
    perSeq[`model.layers.${index}`] = vals.map((v) => BALANCE_ALPHA * v);
    aux += alpha * mean;
  }

  const result: TrainStepResult = {
    loss: { main_ce: main.mean, mtp_ce: mtpCe, total: main.mean + lambda * (mtpCe ?? 0) + aux },
    balance_loss: balance,
    balance_per_sequence: perSeq,
    grads: new Map(),
  };
  if (opts.backward === false) return result;

  // Backward: the MTP module first (its hidden-state gradient joins the main model's).
  const { tree, byName } = m.gradients();
  let dHidden: Float32Array | null = null;
  if (dMtp && (lambda !== 0 || alpha !== 0)) {
    const dh = m.mtpBackward(tape, tree, dMtp, TK);
    dHidden = new Float32Array(T * D);
    mtpSeqs!.forEach((s, b) => dHidden!.set(dh.subarray(s.row * D, (s.row + s.len) * D), fwd.seqs[b].row * D));
  }
  m.backward(tape, tree, dLogits, dHidden, TK);
  result.grads = byName;
  return result;
}
