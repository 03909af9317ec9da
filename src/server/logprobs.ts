// Token logprobs from the pipeline in OpenAI's two formats: chat's list of
// {token, logprob, bytes, top_logprobs} and the legacy completions' parallel arrays.

import type { TokenLogprob } from '../pipeline/completion.ts';
import { CHAR_TO_BYTE, type Tokenizer } from '../text/tokenizer.ts';

/**
 * The UTF-8 bytes a token stands for. A byte-level BPE token may hold part of a character,
 * which its decoded text cannot show (it reads U+FFFD), so clients rebuild text from these.
 */
export function tokenBytes(tok: Tokenizer, id: number): number[] {
  const s = tok.idToToken(id) ?? '';
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c]! : -1;
    if (b < 0) return [...Buffer.from(s, 'utf8')]; // an added token stands for its own text
    out.push(b);
  }
  return out;
}

export interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export function chatLogprobs(tok: Tokenizer, lps: TokenLogprob[]): ChatLogprob[] {
  return lps.map((lp) => ({
    token: lp.token,
    logprob: lp.logprob,
    bytes: tokenBytes(tok, lp.id),
    top_logprobs: lp.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: tokenBytes(tok, t.id) })),
  }));
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** `offset`: where the first token's text starts in the choice's text. */
export function completionLogprobs(lps: TokenLogprob[], offset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const lp of lps) {
    out.tokens.push(lp.token);
    out.token_logprobs.push(lp.logprob);
    out.top_logprobs.push(Object.fromEntries(lp.top.map((t) => [t.token, t.logprob])));
    out.text_offset.push(offset);
    offset += lp.token.length;
  }
  return out;
}
