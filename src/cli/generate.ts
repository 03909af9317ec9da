// `dsv3 generate`: continue prompts.
//   dsv3 generate [--model DIR] "prompt"            stream the completion as text
//   dsv3 generate ... --chat "question"              wrap the prompt in the chat template
//   dsv3 generate ... --input-file F                 one prompt per line, run as one batch
//   dsv3 generate ... --json                         {"text": "…", "ids": […]} per prompt
//   dsv3 generate --model DIR --ids 1,2,3 --max-new-tokens 16 --temperature 0 --json
//                                                    → {"ids": [generated ids only]}
// The --ids form is used by checks outside the test suite: keep its output stable.

import { readFileSync } from 'node:fs';
import { Scheduler } from '../engine/scheduler.ts';
import { startCompletion, type CompletionResult } from '../pipeline/completion.ts';
import { DsError } from '../errors.ts';
import { MODEL_OPTIONS, UsageError, attnOption, idsOption, intOption, loadModel, parse } from './args.ts';
import { SAMPLING_OPTIONS, chatIds, loadTokenizer, modelDir, samplingParams, checkVocab } from './text.ts';
import { Sampler } from '../engine/sampler.ts';
import type { SeqResult } from '../engine/scheduler.ts';
import { SPECULATIVE_OPTIONS, decodeStats, printStats, speculativeOption } from './speculative.ts';

const HELP = `usage: dsv3 generate [--model DIR] "prompt" [options]
       dsv3 generate [--model DIR] --input-file F [options]     (one prompt per line, one batch)
       dsv3 generate --model DIR --ids 1,2,3 [options]          (token ids in and out)
options:
  --chat                    apply the chat template to the prompt (a single user message)
  --max-new-tokens N        default 128 (16 with --ids)
  --temperature T           default 0.6; 0 is greedy
  --top-k K --top-p P --min-p P --seed S
  --repetition-penalty R --frequency-penalty F --presence-penalty P
  --stop TEXT               stop string (repeatable)
  --json                    print {"text", "ids"} (or {"ids"} with --ids) instead of streaming
  --speculative mtp         draft tokens with the model's MTP module, verify them in one pass
  --draft-tokens K          most drafts per step (default 1)
  --draft-vocab N           draft from the first N token ids (default max(1024, vocab/8))
  --draft-policy P          adaptive (default): each step drafts 0 … K tokens, whichever is
                            measured to decode fastest; fixed: K every step
  --stats                   print acceptance and decode speed (with --json: a "stats" field)
  --kernels auto|native|ref --threads N --attn absorb|naive`;

/** --input-file's text; a file that is missing or unreadable is named (a FIFO is fine: <(…)). */
function readInputFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : `cannot be read (${code ?? (e as Error).message})`;
    throw new DsError(code === 'ENOENT' ? 'MISSING_FILE' : 'BAD_INPUT', `--input-file ${path}: ${why}`);
  }
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      ...MODEL_OPTIONS,
      ...SAMPLING_OPTIONS,
      ids: { type: 'string' },
      attn: { type: 'string' },
      json: { type: 'boolean' },
      chat: { type: 'boolean' },
      'input-file': { type: 'string' },
      ...SPECULATIVE_OPTIONS,
    },
    true,
  );
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const dir = modelDir(values.model);
  const sampling = samplingParams(values);

  const spec = speculativeOption(values);
  const wantStats = values.stats || spec !== undefined;

  if (values.ids !== undefined) {
    if (positionals.length || values['input-file']) throw new UsageError('--ids takes no text prompt');
    const ids = idsOption(values.ids);
    const model = loadModel(dir, { ...values, mtp: spec !== undefined });
    const sched = new Scheduler(model, { maxBatch: 1, speculative: spec });
    const out: number[] = [];
    const r = await new Promise<SeqResult>((resolve, reject) => {
      try {
        sched.submit({
          prompt: ids,
          maxNewTokens: intOption(values['max-new-tokens'], 'max-new-tokens', 16),
          sampler: new Sampler(sampling),
          onToken: (id) => void out.push(id),
          onDone: resolve,
        });
      } catch (e) {
        reject(e);
      }
    });
    if (r.error) throw r.error;
    const stats = decodeStats(r);
    if (values.json) {
      process.stdout.write(JSON.stringify(wantStats ? { ids: out, stats } : { ids: out }) + '\n');
    } else process.stdout.write(out.join(',') + '\n');
    if (values.stats) printStats(stats);
    return 0;
  }

  let prompts: string[];
  if (values['input-file']) {
    if (positionals.length) throw new UsageError('give either a prompt or --input-file, not both');
    prompts = readInputFile(values['input-file']).split(/\r?\n/).filter((l) => l.trim() !== '');
    if (prompts.length === 0) throw new DsError('BAD_INPUT', `${values['input-file']}: no prompts in the file`);
  } else {
    if (positionals.length !== 1) throw new UsageError('give one prompt (quote it), or --input-file F');
    prompts = [positionals[0]];
  }

  const tok = loadTokenizer(dir);
  const promptIds = prompts.map((p) =>
    values.chat
      ? chatIds(tok, [{ role: 'user', content: p }], true)
      : tok.encode(p, { addSpecialTokens: true }),
  );
  const model = loadModel(dir, { ...values, mtp: spec !== undefined });
  checkVocab(model, tok);
  const max = model.cfg.max_position_embeddings;
  promptIds.forEach((ids, i) => {
    if (ids.length >= max) {
      throw new DsError('CONTEXT_OVERFLOW', `prompt ${i + 1} has ${ids.length} tokens; the model's context is ${max}`);
    }
  });

  // All prompts go into one scheduler batch: one forward pass per step for all of them.
  const sched = new Scheduler(model, { maxBatch: promptIds.length, maxQueue: promptIds.length, speculative: spec });
  const maxTokens = intOption(values['max-new-tokens'], 'max-new-tokens', 128);
  const stream = !values.json && prompts.length === 1;
  const runs = promptIds.map((ids, i) =>
    startCompletion(sched, tok, ids, {
      maxTokens,
      sampling: sampling.seed === undefined ? sampling : { ...sampling, seed: sampling.seed + i },
      stop: values.stop,
      onDelta: stream ? (d) => void process.stdout.write(d.text) : undefined,
    }),
  );
  const onSigint = () => runs.forEach((r) => r.cancel());
  process.once('SIGINT', onSigint);
  let results: CompletionResult[];
  try {
    results = await Promise.all(runs.map((r) => r.done));
  } finally {
    process.off('SIGINT', onSigint);
  }
  for (const [i, r] of results.entries()) {
    if (r.error) throw r.error;
    if (values.json) {
      const obj = wantStats ? { text: r.text, ids: r.ids, stats: decodeStats(r) } : { text: r.text, ids: r.ids };
      process.stdout.write(JSON.stringify(obj) + '\n');
    }
    else if (stream) process.stdout.write('\n');
    else process.stdout.write(`${i > 0 ? '\n' : ''}### ${prompts[i]}\n${r.text}\n`);
  }
  if (values.stats) results.forEach((r) => printStats(decodeStats(r)));
  const tokens = results.reduce((n, r) => n + r.completionTokens, 0);
  const secs = Math.max(...results.map((r) => r.totalMs)) / 1e3;
  process.stderr.write(`dsv3: ${tokens} tokens in ${secs.toFixed(2)} s (${(tokens / secs).toFixed(1)} tok/s)\n`);
  return 0;
}
