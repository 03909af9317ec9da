// `dsv3 train-step [--model DIR] --tokens F.json [--mtp-weight 0.3] [--seq-aux 0]
//  [--grads NAME,NAME|all] [--attn absorb|naive] --json`: one forward and backward pass
// over a batch (F.json holds a [batch][seq] array of token ids) without updating anything.
// With --json prints one object with the semantics of ../shared/golden's train.json:
//   {"loss": {"main_ce", "mtp_ce", "total"}, "balance_loss": {"model.layers.N": mean, …},
//    "grads": {"NAME": [[…]] for matrices ([out][in] rows), […] for vectors}}
// Used by checks outside the test suite: keep the output format stable.

import { readFileSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { tensorTable } from '../model/weights.ts';
import { trainStep } from '../train/step.ts';
import { MODEL_OPTIONS, UsageError, attnOption, floatOption, loadModel, numCheck, oneOfCheck, parse } from './args.ts';
import { modelDir } from './text.ts';

const HELP = `usage: dsv3 train-step [--model DIR] --tokens F.json [options]
  --model defaults to the shipped model
  F.json: a [batch][seq] JSON array of token ids (every sequence at least 2 long)
options:
  --mtp-weight L        weight of the MTP loss in the total (default 0.3)
  --seq-aux A           weight α of the sequence-wise balance loss in the total:
                        total += A · Σ_layers mean_b Σ_i f_i·P_i (default 0, as train.json's
                        total). balance_loss always reports 1e-4 · Σ_i f_i·P_i (train.json's
                        α), so --seq-aux 1e-4 adds exactly the printed values.
  --balance-topk routed|raw   experts f_i counts: the router's choice with bias and group
                        limit (default) or the plain top-k of the scores
  --grads NAME,NAME|all gradients to print (Hugging Face names; default none)
  --attn absorb|naive   attention path (default absorb)
  --json                print the result as one JSON object (otherwise a summary)
  --kernels auto|native|ref --threads N`;

/** A [batch][seq] array of non-negative integers. */
function readTokens(path: string): number[][] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DsError('BAD_INPUT', `${path}: ${(e as Error).message}`);
  }
  const ok =
    Array.isArray(data) &&
    data.length > 0 &&
    data.every((s) => Array.isArray(s) && s.every((t) => Number.isInteger(t) && t >= 0));
  if (!ok) throw new DsError('BAD_INPUT', `${path}: expected a non-empty [batch][seq] array of token ids`);
  return data as number[][];
}

/** Why a tensor name has no gradient, or null when it has one. */
function untrained(name: string, shapes: Map<string, number[]>, nLayers: number): string | null {
  if (!shapes.has(name)) return 'not a tensor of this model';
  if (name.endsWith('.e_score_correction_bias')) return 'the selection bias gets no gradient';
  const m = /^model\.layers\.(\d+)\.(embed_tokens|shared_head\.head)\.weight$/.exec(name);
  if (m && Number(m[1]) >= nLayers) {
    return 'the MTP embedding and head are model.embed_tokens and lm_head during training';
  }
  return null;
}

function rows(x: Float32Array, shape: number[]): number[] | number[][] {
  if (shape.length === 1) return Array.from(x);
  const w = shape[1];
  const out: number[][] = [];
  for (let i = 0; i < x.length; i += w) out.push(Array.from(x.subarray(i, i + w)));
  return out;
}

export function trainStepCommand(argv: string[]): number {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    tokens: { type: 'string' },
    'mtp-weight': { type: 'string' },
    'seq-aux': { type: 'string' },
    'balance-topk': { type: 'string' },
    grads: { type: 'string' },
    attn: { type: 'string' },
    json: { type: 'boolean' },
  }, false, {
    'mtp-weight': numCheck({ min: 0 }),
    'seq-aux': numCheck({ min: 0 }),
    'balance-topk': oneOfCheck(['routed', 'raw']),
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const dir = modelDir(values.model);
  if (!values.tokens) throw new UsageError('--tokens F.json is required');
  const topk = values['balance-topk'] ?? 'routed';
  if (topk !== 'routed' && topk !== 'raw') throw new UsageError(`--balance-topk must be routed or raw, got "${topk}"`);
  const tokens = readTokens(values.tokens);
  const model = loadModel(dir, { ...values, mtp: true });
  const shapes = new Map(tensorTable(model.cfg).map((s) => [s.name, s.shape]));
  const wanted = values.grads === 'all' ? null : (values.grads ?? '').split(',').filter((n) => n);
  for (const name of wanted ?? []) {
    const why = untrained(name, shapes, model.cfg.num_hidden_layers);
    if (why) throw new DsError('BAD_INPUT', `no gradient "${name}": ${why}`);
  }

  const r = trainStep(model, tokens, {
    mtpWeight: floatOption(values['mtp-weight'], 'mtp-weight', 0.3),
    seqAux: floatOption(values['seq-aux'], 'seq-aux', 0),
    attn: attnOption(values.attn),
    balanceTopk: topk,
  });

  const grads: Record<string, number[] | number[][]> = {};
  for (const name of wanted ?? r.grads.keys()) {
    const g = r.grads.get(name);
    if (!g) throw new DsError('BAD_INPUT', `no gradient "${name}"`);
    grads[name] = rows(g, shapes.get(name)!);
  }

  if (values.json) {
    process.stdout.write(JSON.stringify({ loss: r.loss, balance_loss: r.balance_loss, grads }) + '\n');
    return 0;
  }
  const l = r.loss;
  const mtp = l.mtp_ce?.toFixed(6) ?? '-';
  process.stdout.write(`main_ce ${l.main_ce.toFixed(6)}  mtp_ce ${mtp}  total ${l.total.toFixed(6)}\n`);
  for (const [layer, v] of Object.entries(r.balance_loss)) {
    process.stdout.write(`balance ${layer} ${v.toExponential(6)}\n`);
  }
  for (const [name, g] of Object.entries(grads)) {
    const max = (g as number[][]).flat().reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    process.stdout.write(`grad ${name} max|g| ${max.toExponential(4)}\n`);
  }
  return 0;
}
