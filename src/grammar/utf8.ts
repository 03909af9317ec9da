// Valid UTF-8 across tokens. A byte-level vocabulary has tokens that are pieces of a character
// (DeepSeek-V3's splits most CJK characters over two or three tokens), and xgrammar's character
// classes accept byte sequences that are not UTF-8 (overlong forms, surrogates, lead bytes past
// U+10FFFF; measured on 0.1.27). The detokenizer turns such bytes into U+FFFD, one per byte, so a
// string the grammar counted as 4 characters could come out as 7 and break its maxLength. This
// guard tracks the character a sequence is in the middle of and allows only the tokens that
// continue it, or start afresh, as UTF-8 does: its mask is ANDed with the grammar's.

import { CHAR_TO_BYTE } from '../text/tokenizer.ts';

/**
 * Where a sequence stands in UTF-8, packed in one number: the continuation bytes still needed
 * (need << 16) and the range of the next one (lo << 8 | hi). 0: between characters.
 */
export type Utf8State = number;

export const UTF8_START: Utf8State = 0;

const state = (need: number, lo = 0x80, hi = 0xbf) => (need << 16) | (lo << 8) | hi;

/** The state after byte `b` from state `s`, or -1 when `b` cannot come there. */
export function utf8Step(s: Utf8State, b: number): Utf8State {
  const need = s >> 16;
  if (need > 0) {
    if (b < ((s >> 8) & 0xff) || b > (s & 0xff)) return -1;
    return need === 1 ? 0 : state(need - 1);
  }
  if (b < 0x80) return 0;
  if (b >= 0xc2 && b <= 0xdf) return state(1);
  if (b === 0xe0) return state(2, 0xa0); // no overlong forms
  if (b === 0xed) return state(2, 0x80, 0x9f); // no surrogates
  if (b >= 0xe1 && b <= 0xef) return state(2);
  if (b === 0xf0) return state(3, 0x90);
  if (b === 0xf4) return state(3, 0x80, 0x8f); // nothing past U+10FFFF
  if (b >= 0xf1 && b <= 0xf3) return state(3);
  return -1; // a stray continuation byte, C0, C1, F5-FF
}

/** The bytes a byte-level vocabulary string stands for (added tokens: their UTF-8 text). */
export function tokenBytes(t: string): Uint8Array {
  const out = new Uint8Array(t.length);
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c]! : -1;
    if (b < 0) return new TextEncoder().encode(t);
    out[i] = b;
  }
  return out;
}

/** The masks of one vocabulary (built once per state, on demand). */
export class Utf8Guard {
  private readonly bytes: Uint8Array[];
  private readonly masks = new Map<Utf8State, Int32Array>();

  constructor(tokens: readonly string[], private readonly size: number) {
    this.bytes = tokens.map(tokenBytes);
  }

  /** Every state a sequence can be in (so that mask() never has to build one mid-decode). */
  static readonly STATES: readonly Utf8State[] = [
    0, state(1), state(2), state(2, 0xa0), state(2, 0x80, 0x9f), state(3), state(3, 0x90), state(3, 0x80, 0x8f),
  ];

  /** Builds the mask of every state now. */
  prepare(): void {
    for (const s of Utf8Guard.STATES) this.mask(s);
  }

  /** The state after token `id` (a token the mask did not allow starts afresh). */
  advance(s: Utf8State, id: number): Utf8State {
    let cur = s;
    for (const b of this.bytes[id] ?? []) if ((cur = utf8Step(cur, b)) < 0) return UTF8_START;
    return cur;
  }

  /** Tokens that may come in state `s` (bit id & 31 of word id >> 5); ids past the tokens: allowed. */
  mask(s: Utf8State): Int32Array {
    let m = this.masks.get(s);
    if (m) return m;
    m = new Int32Array(Math.ceil(this.size / 32)).fill(-1);
    for (let id = 0; id < this.bytes.length; id++) {
      let cur = s;
      for (const b of this.bytes[id]!) if ((cur = utf8Step(cur, b)) < 0) break;
      if (cur < 0) m[id >> 5]! &= ~(1 << (id & 31));
    }
    this.masks.set(s, m);
    return m;
  }
}
