// `dsv3 tokenize`: text on stdin → {"ids": […]}; or a conversation through the chat template
// → {"text": "…", "ids": […]}. Used by checks outside the test suite: keep the output exact.
//   dsv3 tokenize --model DIR [--add-special-tokens] < text
//   dsv3 tokenize --model DIR --chat MESSAGES.json [--add-generation-prompt]

import { readFileSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { parse } from './args.ts';
import { chatPrompt, loadTokenizer, modelDir } from './text.ts';

const HELP = `usage: dsv3 tokenize [--model DIR] [--add-special-tokens] < text
       dsv3 tokenize [--model DIR] --chat MESSAGES.json [--add-generation-prompt]`;

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';
  }
}

export function tokenizeCommand(argv: string[]): number {
  const { values } = parse(argv, {
    model: { type: 'string' },
    'add-special-tokens': { type: 'boolean' },
    chat: { type: 'string' },
    'add-generation-prompt': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const tok = loadTokenizer(modelDir(values.model));
  if (values.chat !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(values.chat, 'utf8'));
    } catch (e) {
      throw new DsError('BAD_INPUT', `${values.chat}: cannot read messages (${(e as Error).message})`);
    }
    const messages = Array.isArray(raw) ? raw : (raw as { messages?: unknown })?.messages;
    if (!Array.isArray(messages)) {
      throw new DsError('BAD_INPUT', `${values.chat}: expected an array of messages (or {"messages": [...]})`);
    }
    // The template writes BOS itself, so the rendered text is encoded without special tokens.
    const text = chatPrompt(tok, messages, values['add-generation-prompt'] ?? false);
    process.stdout.write(JSON.stringify({ text, ids: tok.encode(text) }) + '\n');
    return 0;
  }
  const text = readStdin();
  const ids = tok.encode(text, { addSpecialTokens: values['add-special-tokens'] ?? false });
  process.stdout.write(JSON.stringify({ ids }) + '\n');
  return 0;
}
