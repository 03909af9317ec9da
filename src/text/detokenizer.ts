// Streaming detokenization: token ids in one at a time, text out as soon as it is complete.
// A byte-level BPE token may carry part of a UTF-8 character; this holds such a tail back
// until the character is finished, so no chunk shows a spurious U+FFFD. It decodes only the
// ids since the last character boundary, not the whole history. It knows nothing of stop
// strings (stop.ts) or of sampling.

import type { Tokenizer } from './tokenizer.ts';

/** Options for {@link StreamingDetokenizer}. */
export interface StreamingDetokenizerOptions {
  /** Drop special tokens, as `Tokenizer.decode(ids, {skipSpecialTokens: true})`. Default false. */
  skipSpecialTokens?: boolean;
}

const REPLACEMENT = 0xfffd;
// Past this many pending ids, look for an id boundary inside the window to shrink it.
const SHRINK_AT = 16;
// How far back from the end of the window that search goes.
const SHRINK_SEARCH = 6;

/**
 * Turns a stream of token ids into text chunks whose concatenation (plus `flush()`) equals
 * `tokenizer.decode(allIds)`. Assumes a byte-level decoder (as DeepSeek-V3's), where
 * decoding splits cleanly at any id boundary that ends a complete character.
 */
export class StreamingDetokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly skipSpecial: boolean;
  // Ids since the last boundary: decode(all ids) = (text before) + decode(pending).
  private pending: number[] = [];
  // How many UTF-16 units of decode(pending) were already returned.
  private emitted = 0;

  constructor(tokenizer: Tokenizer, opts: StreamingDetokenizerOptions = {}) {
    this.tokenizer = tokenizer;
    this.skipSpecial = opts.skipSpecialTokens ?? false;
  }

  /** Adds one token id; returns the text it completed (often '', never a partial character). */
  push(id: number): string {
    this.pending.push(id);
    const text = this.decode(this.pending);
    if (text.length === 0 || text.charCodeAt(text.length - 1) !== REPLACEMENT) {
      // The window ends on a complete character: everything is final.
      const out = text.slice(this.emitted);
      this.pending = [];
      this.emitted = 0;
      return out;
    }
    // The last U+FFFD may be an incomplete sequence that later bytes complete. An incomplete
    // tail decodes to exactly one U+FFFD and leaves the text before it final, so all but the
    // last unit can go out now.
    const safe = text.length - 1;
    const out = safe > this.emitted ? text.slice(this.emitted, safe) : '';
    if (safe > this.emitted) this.emitted = safe;
    if (this.pending.length > SHRINK_AT) this.shrink(text);
    return out;
  }

  /** Returns whatever is held back (an unfinished character comes out as U+FFFD) and resets. */
  flush(): string {
    const out = this.pending.length ? this.decode(this.pending).slice(this.emitted) : '';
    this.pending = [];
    this.emitted = 0;
    return out;
  }

  // A long run of tokens that each end mid-character, or genuine invalid bytes at the end:
  // find an id boundary near the end and drop what precedes it, so each push stays cheap.
  // Splitting at k is safe for any later ids iff the head leaves no partial UTF-8 sequence,
  // i.e. iff decode(head) + decode(tail) === decode(window) with a tail that has bytes
  // (a pending partial sequence plus more bytes always decodes differently when split).
  private shrink(text: string): void {
    const n = this.pending.length;
    for (let k = n - 1; k >= Math.max(1, n - SHRINK_SEARCH); k--) {
      const tail = this.decode(this.pending.slice(k));
      if (tail.length === 0 || !text.endsWith(tail)) continue;
      const head = this.decode(this.pending.slice(0, k));
      if (head.length + tail.length !== text.length || !text.startsWith(head)) continue;
      if (head.length > this.emitted) return; // cannot happen: head is final text
      this.pending = this.pending.slice(k);
      this.emitted -= head.length;
      return;
    }
  }

  private decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecial });
  }
}
