// `dsv3 logits [--model DIR] --ids 1,2,3 [--mtp] [--attn naive|absorb]`: one JSON object on
// stdout with the logits of every position (teacher forcing, one pass), and with --mtp the
// MTP logits, row i predicting token i+2 from the hidden state at i and token i+1.
// Used by checks outside the test suite: keep the output format stable.

import { DsError } from '../errors.ts';
import { MODEL_OPTIONS, UsageError, attnOption, idsOption, loadModel, parse } from './args.ts';
import { modelDir } from './text.ts';

const HELP = `usage: dsv3 logits [--model DIR] --ids 1,2,3 [--mtp] [--attn absorb|naive]
  [--kernels auto|native|ref] [--threads N]
  --model defaults to the shipped model`;

function rows(x: Float32Array, width: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < x.length; i += width) out.push(Array.from(x.subarray(i, i + width)));
  return out;
}

export function logitsCommand(argv: string[]): number {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    ids: { type: 'string' },
    mtp: { type: 'boolean' },
    attn: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (values.ids === undefined) throw new UsageError('--ids 1,2,3 is required');
  const ids = idsOption(values.ids);
  const dir = modelDir(values.model);
  const attn = attnOption(values.attn);
  const model = loadModel(dir, { ...values, mtp: values.mtp ?? false });
  const V = model.cfg.vocab_size;
  const D = model.cfg.hidden_size;
  const cache = model.newCache();
  const r = model.forward([{ ids, cache }], { logits: 'all', attn });
  const result: { logits: number[][]; mtp_logits?: number[][] } = { logits: rows(r.logits, V) };
  if (values.mtp) {
    if (!model.hasMtp) throw new DsError('BAD_INPUT', `${dir}: the checkpoint has no MTP module`);
    const L = ids.length;
    result.mtp_logits =
      L < 2
        ? []
        : rows(model.mtp([{ ids: ids.slice(1), hidden: r.hidden.subarray(0, (L - 1) * D), cache }], { attn }).logits, V);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  return 0;
}
