// `dsv3 chat`: an interactive conversation in the terminal. History is kept and re-sent
// through the chat template each turn; /clear forgets it, /exit (or Ctrl-D) leaves, and
// Ctrl-C stops the answer being written without leaving.

import { createInterface } from 'node:readline';
import { Scheduler } from '../engine/scheduler.ts';
import { startCompletion, type Completion } from '../pipeline/completion.ts';
import type { ChatMessage } from '../text/chat-template.ts';
import { MODEL_OPTIONS, didYouMean, intOption, loadModel, parse } from './args.ts';
import { SAMPLING_OPTIONS, chatIds, loadTokenizer, modelDir, samplingParams, checkVocab } from './text.ts';
import { SPECULATIVE_OPTIONS, decodeStats, printStats, speculativeOption } from './speculative.ts';

const HELP = `usage: dsv3 chat [--model DIR] [--system TEXT] [sampling options as for generate]
  [--speculative mtp [--draft-tokens K] [--draft-vocab N] [--draft-policy adaptive|fixed]] [--stats]
  in the chat: /help lists the commands, /clear forgets the conversation, /exit leaves,
  Ctrl-C stops an answer; no line starting with / goes to the model (//text sends /text)`;

/** What the chat's own commands are; a line starting with / never goes to the model. */
const CHAT_HELP = `commands:
  /help     this list
  /clear    forget the conversation (the --system message stays)
  /exit     leave (also /quit, or Ctrl-D)
  Ctrl-C stops an answer; a message that starts with / is written with two: //etc → /etc`;
const CHAT_COMMANDS = ['/help', '/clear', '/exit', '/quit'];

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
  // The prefix cache keeps the conversation's latent rows: each turn prefills only its new part.
  const sched = new Scheduler(model, { maxBatch: 1, speculative, prefixCacheBytes: 2 ** 30 });
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
  process.stdout.write('dsv3 chat — /help for commands, /clear to start over, /exit to leave, Ctrl-C stops an answer\n');
  rl.prompt();
  for await (const line of rl) {
    let text = line.trim();
    if (text === '/exit' || text === '/quit') break;
    if (text === '/clear') {
      history = [...start];
      process.stdout.write('(conversation cleared)\n');
      rl.prompt();
      continue;
    }
    if (text.startsWith('//')) text = text.slice(1);
    else if (text.startsWith('/')) {
      const word = text.split(/\s/)[0];
      if (word === '/exit' || word === '/quit') break;
      if (word === '/help' || word === '/?') process.stdout.write(CHAT_HELP + '\n');
      else if (word === '/clear') {
        history = [...start];
        process.stdout.write('(conversation cleared)\n');
      } else {
        const guess = didYouMean(word, CHAT_COMMANDS);
        process.stdout.write(`(unknown command ${word}${guess ? ` (did you mean ${guess}?)` : ''}: /help lists the commands)\n`);
      }
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
