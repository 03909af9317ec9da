// `dsv3 chat`: an interactive conversation in the terminal. History is kept and re-sent
// through the chat template each turn; /clear forgets it, /exit (or Ctrl-D) leaves, and
// Ctrl-C stops the answer being written without leaving.

import { createInterface } from 'node:readline';
import { Scheduler } from '../engine/scheduler.ts';
import { startCompletion, type Completion } from '../pipeline/completion.ts';
import type { ChatMessage } from '../text/chat-template.ts';
import { MODEL_OPTIONS, intOption, loadModel, parse } from './args.ts';
import { SAMPLING_OPTIONS, chatIds, loadTokenizer, modelDir, samplingParams, checkVocab } from './text.ts';
import { SPECULATIVE_OPTIONS, decodeStats, printStats, speculativeOption } from './speculative.ts';

const HELP = `usage: dsv3 chat [--model DIR] [--system TEXT] [sampling options as for generate]
  [--speculative mtp [--draft-tokens K] [--draft-vocab N]] [--stats]
  in the chat: /clear forgets the conversation, /exit leaves, Ctrl-C stops an answer`;

export async function chatCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    ...SAMPLING_OPTIONS,
    ...SPECULATIVE_OPTIONS,
    system: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const dir = modelDir(values.model);
  const tok = loadTokenizer(dir);
  const speculative = speculativeOption(values);
  const model = loadModel(dir, { ...values, mtp: speculative !== undefined });
  checkVocab(model, tok);
  const sched = new Scheduler(model, { maxBatch: 1, speculative });
  const sampling = samplingParams(values);
  const maxTokens = intOption(values['max-new-tokens'], 'max-new-tokens', 512);
  const start: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
  let history: ChatMessage[] = [...start];

  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: '> ' });
  let current: Completion | null = null;
  rl.on('SIGINT', () => {
    if (current) current.cancel();
    else {
      rl.write('', { ctrl: true, name: 'u' });
      process.stdout.write('\n(/exit to leave)\n');
      rl.prompt();
    }
  });
  process.stdout.write('dsv3 chat — /clear to start over, /exit to leave, Ctrl-C stops an answer\n');
  rl.prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '/exit' || text === '/quit') break;
    if (text === '/clear') {
      history = [...start];
      process.stdout.write('(conversation cleared)\n');
      rl.prompt();
      continue;
    }
    if (text === '') {
      rl.prompt();
      continue;
    }
    history.push({ role: 'user', content: text });
    const ids = chatIds(tok, history, true);
    if (ids.length >= model.cfg.max_position_embeddings) {
      process.stdout.write(`(the conversation is too long for this model's ${model.cfg.max_position_embeddings}-token context; /clear to start over)\n`);
      history.pop();
      rl.prompt();
      continue;
    }
    current = startCompletion(sched, tok, ids, {
      maxTokens,
      sampling,
      stop: values.stop,
      onDelta: (d) => void process.stdout.write(d.text),
    });
    const r = await current.done;
    current = null;
    if (r.error) throw r.error;
    process.stdout.write(r.finish === 'cancelled' ? ' [stopped]\n' : '\n');
    if (values.stats) printStats(decodeStats(r));
    history.push({ role: 'assistant', content: r.text });
    rl.prompt();
  }
  rl.close();
  return 0;
}
