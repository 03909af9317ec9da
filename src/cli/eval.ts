// `dsv3 eval [--model DIR] --file F [--json]`: perplexity and bits per byte of a model on a
// text file. Used by checks outside the test suite: keep the JSON keys stable.
//   {"perplexity": …, "bits_per_byte": …, "tokens": …}

import { readFileSync, existsSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { evalWindows, evaluate } from '../train/eval.ts';
import { MODEL_OPTIONS, UsageError, intOption, loadModel, parse } from './args.ts';
import { loadTokenizer, modelDir, checkVocab } from './text.ts';

const HELP = `usage: dsv3 eval [--model DIR] --file F [--seq-len N] [--json]
  perplexity = exp(mean next-token cross-entropy); bits per byte = total nats / ln 2 / UTF-8 bytes`;

export function evalCommand(argv: string[]): number {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    file: { type: 'string' },
    'seq-len': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (!values.file) throw new UsageError('--file F is required');
  if (!existsSync(values.file)) throw new DsError('MISSING_FILE', `${values.file}: not found`);
  const text = readFileSync(values.file, 'utf8');
  if (text.trim() === '') throw new DsError('BAD_INPUT', `${values.file}: the file is empty`);
  const dir = modelDir(values.model);
  const tok = loadTokenizer(dir);
  const model = loadModel(dir, { ...values, mtp: false });
  checkVocab(model, tok);
  const seqLen = intOption(values['seq-len'], 'seq-len', Math.min(512, model.cfg.max_position_embeddings), 2);
  if (seqLen > model.cfg.max_position_embeddings) {
    throw new UsageError(`--seq-len ${seqLen} exceeds max_position_embeddings ${model.cfg.max_position_embeddings}`);
  }
  const ids = tok.encode(text, { addSpecialTokens: true });
  const r = evaluate(model, evalWindows(ids, seqLen));
  const bytes = Buffer.byteLength(text, 'utf8');
  const out = {
    perplexity: Math.exp(r.nll / r.tokens),
    bits_per_byte: r.nll / Math.LN2 / bytes,
    tokens: r.tokens,
  };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    process.stdout.write(
      `perplexity ${out.perplexity.toFixed(3)}, ${out.bits_per_byte.toFixed(4)} bits per byte over ${out.tokens} tokens\n`,
    );
  }
  return 0;
}
