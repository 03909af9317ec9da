// The UTF-8 guard agrees with a strict UTF-8 decoder, byte by byte and token by token.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { UTF8_START, Utf8Guard, tokenBytes, utf8Step } from './utf8.ts';
import { CHAR_TO_BYTE } from '../text/tokenizer.ts';
import { Rng } from '../tensor/random.ts';

const strict = new TextDecoder('utf-8', { fatal: true });

/** Whether the bytes are UTF-8 by the guard's step function: every step allowed, ending between characters. */
function valid(bytes: Uint8Array): boolean {
  let s = UTF8_START;
  for (const b of bytes) if ((s = utf8Step(s, b)) < 0) return false;
  return s === UTF8_START;
}

function decodes(bytes: Uint8Array): boolean {
  try {
    strict.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

describe('utf8Step', () => {
  it('accepts exactly what a strict decoder accepts', () => {
    const rng = new Rng(9);
    // Random bytes biased towards the interesting ones (leads, continuations, edges).
    const pool = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff];
    for (let k = 0; k < 20000; k++) {
      const n = 1 + Math.floor(rng.uniform() * 6);
      const bytes = Uint8Array.from({ length: n }, () => pool[Math.floor(rng.uniform() * pool.length)]!);
      assert.equal(valid(bytes), decodes(bytes), Buffer.from(bytes).toString('hex'));
    }
    for (const s of ['a', 'é', '中', '😀', '\u{10FFFF}', '\uE000']) assert.ok(valid(new TextEncoder().encode(s)), s);
  });
});

describe('Utf8Guard', () => {
  // A vocabulary of every single byte (as byte-level strings) and a few whole tokens.
  const byteChar = new Map<number, string>();
  for (let c = 0; c < CHAR_TO_BYTE.length; c++) if (CHAR_TO_BYTE[c]! >= 0) byteChar.set(CHAR_TO_BYTE[c]!, String.fromCharCode(c));
  const tokens = [...Array(256).keys()].map((b) => byteChar.get(b)!);
  tokens.push('<｜tool▁sep｜>', 'ä¸Ń'); // an added token (its text), and 中 as one byte-level token
  const guard = new Utf8Guard(tokens, 300);
  const allowed = (m: Int32Array, id: number) => ((m[id >> 5]! >>> (id & 31)) & 1) === 1;

  it('reads byte-level strings as their bytes, added tokens as their UTF-8', () => {
    assert.deepEqual([...tokenBytes('ä¸Ń')], [0xe4, 0xb8, 0xad]);
    assert.deepEqual([...tokenBytes('<｜tool▁sep｜>')], [...new TextEncoder().encode('<｜tool▁sep｜>')]);
  });

  it('allows only what continues the character in progress, or starts a valid one', () => {
    const start = guard.mask(UTF8_START);
    for (let b = 0; b < 256; b++) assert.equal(allowed(start, b), b < 0x80 || (b >= 0xc2 && b <= 0xf4), `start, ${b.toString(16)}`);
    assert.ok(allowed(start, 256) && allowed(start, 257) && allowed(start, 299));
    const afterE0 = guard.mask(guard.advance(UTF8_START, 0xe0));
    for (let b = 0; b < 256; b++) assert.equal(allowed(afterE0, b), b >= 0xa0 && b <= 0xbf, `after E0, ${b.toString(16)}`);
    assert.ok(!allowed(afterE0, 257), 'a whole character cannot come in the middle of one');
    const afterED = guard.mask(guard.advance(UTF8_START, 0xed));
    assert.ok(allowed(afterED, 0x9f) && !allowed(afterED, 0xa0), 'no surrogates');
    const afterF4 = guard.mask(guard.advance(UTF8_START, 0xf4));
    assert.ok(allowed(afterF4, 0x8f) && !allowed(afterF4, 0x90), 'nothing past U+10FFFF');
    let s = guard.advance(UTF8_START, 0xf0);
    s = guard.advance(s, 0x9f);
    s = guard.advance(s, 0x98);
    assert.ok(allowed(guard.mask(s), 0x80) && !allowed(guard.mask(s), 0x41));
    assert.equal(guard.advance(s, 0x80), UTF8_START);
  });
});
