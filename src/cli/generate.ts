// `dsv3 generate`: continue a prompt. The --ids form takes and prints token ids:
//   dsv3 generate --model DIR --ids 1,2,3 --max-new-tokens 16 --temperature 0 --json
//   → {"ids": [generated ids only]}
// Used by checks outside the test suite: keep that output format stable.

import { generate } from '../engine/generate.ts';
import {
  MODEL_OPTIONS,
  UsageError,
  attnOption,
  floatOption,
  idsOption,
  intOption,
  loadModel,
  parse,
  requireModel,
} from './args.ts';

const HELP = `usage: dsv3 generate --model DIR --ids 1,2,3 [--max-new-tokens N] [--temperature 0] [--json]
  [--attn absorb|naive] [--kernels auto|native|ref] [--threads N]`;

export function generateCommand(argv: string[]): number {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    ids: { type: 'string' },
    'max-new-tokens': { type: 'string' },
    temperature: { type: 'string' },
    attn: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const dir = requireModel(values.model);
  if (values.ids === undefined) throw new UsageError('--ids is required (text prompts come with the tokenizer)');
  const ids = idsOption(values.ids);
  const maxNew = intOption(values['max-new-tokens'], 'max-new-tokens', 16);
  const temperature = floatOption(values.temperature, 'temperature', 0);
  if (temperature !== 0) throw new UsageError('only --temperature 0 (greedy) is available for now');
  const model = loadModel(dir, { ...values, mtp: false });
  const res = generate(model, [ids], { maxNewTokens: maxNew, attn: attnOption(values.attn) });
  if (values.json) process.stdout.write(JSON.stringify({ ids: res.ids[0] }) + '\n');
  else process.stdout.write(res.ids[0].join(',') + '\n');
  return 0;
}
