// Text-side helpers shared by the CLI commands: the default model's location, loading a
// tokenizer with the model, sampling flags, and turning a conversation into a chat prompt.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { DsError } from '../errors.ts';
import type { SamplingParams } from '../engine/sampler.ts';
import { renderChat, validateMessages, type ChatMessage } from '../text/chat-template.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import {
  DEFAULT_MODEL,
  DEFAULT_SAMPLING,
  chatParts,
  checkVocab as vocabNote,
  loadTokenizer,
} from '../pipeline/model.ts';
import { floatOption, intOption, UsageError } from './args.ts';
import { modelPathKind } from '../io/config.ts';

/** The small model that ships with dsv3, used when --model is not given. */
export const DEFAULT_MODEL_DIR = DEFAULT_MODEL;

/**
 * --model, or the shipped default model. A path that is neither a folder nor a GGUF file
 * (nothing there, another file, a FIFO) is an error saying so, before anything is read.
 */
export function modelDir(v: string | undefined): string {
  if (v !== undefined) {
    if (v === '') throw new UsageError('--model is empty: give a checkpoint folder or a .gguf file');
    modelPathKind(v);
    return v;
  }
  if (!existsSync(resolve(DEFAULT_MODEL_DIR, 'config.json'))) {
    throw new UsageError(`no --model given and the default model is not installed at ${DEFAULT_MODEL_DIR}`);
  }
  return DEFAULT_MODEL_DIR;
}

/** The tokenizer of a checkpoint folder (tokenizer.json) or of a GGUF file (its metadata). */
export { loadTokenizer };

/**
 * The model's vocabulary against its tokenizer's (pipeline/model.ts): a tokenizer id the
 * embedding lacks is an error; padding rows past the tokenizer are reported once on stderr.
 */
export function checkVocab(model: DeepseekV3, tok: Tokenizer): void {
  const note = vocabNote(model, tok);
  if (note) process.stderr.write(`dsv3: ${note}\n`);
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
    temperature: floatOption(v.temperature, 'temperature', DEFAULT_SAMPLING.temperature),
    topP: floatOption(v['top-p'], 'top-p', DEFAULT_SAMPLING.topP),
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
  return tok.encodeParts(chatParts(tok, messages, addGenerationPrompt));
}
