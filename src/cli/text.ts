// Text-side helpers shared by the CLI commands: the default model's location, loading a
// tokenizer with the model, sampling flags, and turning a conversation into a chat prompt.

import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DsError } from '../errors.ts';
import type { SamplingParams } from '../engine/sampler.ts';
import { renderChat, renderChatParts, validateMessages, type ChatMessage } from '../text/chat-template.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { isGgufPath, readGgufHeader } from '../io/gguf.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import { floatOption, intOption, UsageError } from './args.ts';

/** The small model that ships with dsv3, used when --model is not given. */
export const DEFAULT_MODEL_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../models/default');

/** --model, or the shipped default model. */
export function modelDir(v: string | undefined): string {
  if (v) return v;
  if (!existsSync(resolve(DEFAULT_MODEL_DIR, 'config.json'))) {
    throw new UsageError(`no --model given and the default model is not installed at ${DEFAULT_MODEL_DIR}`);
  }
  return DEFAULT_MODEL_DIR;
}

/** The tokenizer of a checkpoint folder (tokenizer.json) or of a GGUF file (its metadata). */
export function loadTokenizer(dir: string): Tokenizer {
  if (isGgufPath(dir)) return Tokenizer.fromGguf(readGgufHeader(dir).metadata, dir);
  if (!existsSync(resolve(dir, 'tokenizer.json'))) {
    throw new DsError('MISSING_FILE', `${resolve(dir, 'tokenizer.json')}: not found (the model folder has no tokenizer)`);
  }
  return Tokenizer.fromDir(dir);
}

/**
 * The model's vocabulary against its tokenizer's: a tokenizer id the embedding lacks is an
 * error; embedding rows past the tokenizer (padding: DeepSeek-V3 has 129,280 rows for 128,815
 * tokens) are reported once and never sampled (the pipeline limits its samplers).
 */
export function checkVocab(model: DeepseekV3, tok: Tokenizer): void {
  const rows = model.cfg.vocab_size;
  if (tok.vocabSize > rows) {
    throw new DsError('BAD_CONFIG', `the tokenizer has ${tok.vocabSize} tokens but the model's embedding only ${rows} rows`);
  }
  if (tok.vocabSize < rows) {
    process.stderr.write(`dsv3: the model has ${rows} token rows, the tokenizer ${tok.vocabSize} tokens: ids from ${tok.vocabSize} on are padding and are never sampled\n`);
  }
}

/** Flags every sampling command accepts. */
export const SAMPLING_OPTIONS = {
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'max-new-tokens': { type: 'string' },
} as const;

type SamplingFlags = { [K in keyof typeof SAMPLING_OPTIONS]?: K extends 'stop' ? string[] : string };

/** Sampling parameters from flags; the defaults suit a chat model (T 0.6, top-p 0.95). */
export function samplingParams(v: SamplingFlags): SamplingParams {
  const p: SamplingParams = {
    temperature: floatOption(v.temperature, 'temperature', 0.6),
    topP: floatOption(v['top-p'], 'top-p', 0.95),
    topK: intOption(v['top-k'], 'top-k', 0),
    minP: floatOption(v['min-p'], 'min-p', 0),
    repetitionPenalty: floatOption(v['repetition-penalty'], 'repetition-penalty', 1),
    frequencyPenalty: floatOption(v['frequency-penalty'], 'frequency-penalty', 0),
    presencePenalty: floatOption(v['presence-penalty'], 'presence-penalty', 0),
  };
  if (v.seed !== undefined) p.seed = intOption(v.seed, 'seed', 0);
  return p;
}

/** Render a conversation with the model's chat template. */
export function chatPrompt(tok: Tokenizer, messages: unknown, addGenerationPrompt: boolean): string {
  validateMessages(messages);
  if (!tok.chatTemplate) throw new DsError('BAD_CONFIG', 'the tokenizer has no chat_template');
  return renderChat(tok.chatTemplate, messages as ChatMessage[], {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
  });
}

/**
 * A conversation's prompt ids: the chat template's own tokens, and the messages as plain text
 * (special-token text a user types is not a control token).
 */
export function chatIds(tok: Tokenizer, messages: unknown, addGenerationPrompt: boolean): number[] {
  validateMessages(messages);
  if (!tok.chatTemplate) throw new DsError('BAD_CONFIG', 'the tokenizer has no chat_template');
  return tok.encodeParts(renderChatParts(tok.chatTemplate, messages, {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
  }, tok));
}
