// StreamingDetokenizer on the golden texts (CJK, emoji ZWJ sequences, long texts) and on
// byte-by-byte token streams built from the byte-level alphabet, including invalid UTF-8.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StreamingDetokenizer } from './detokenizer.ts';
import { Tokenizer } from './tokenizer.ts';
import {
  DEEPSEEK_TOKENIZER_DIR,
  DEEPSEEK_TOKENIZER_MISSING,
  GOLDEN_TOKENIZER_DIR,
  TOKENIZER_GOLDEN_MISSING,
} from '../../test/helpers/golden.ts';


let tokCache: Tokenizer | undefined;
const tok = (): Tokenizer => (tokCache ??= Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR));

function stream(ids: number[], skipSpecialTokens = false): string[] {
  const d = new StreamingDetokenizer(tok(), { skipSpecialTokens });
  const chunks = ids.map((id) => d.push(id));
  chunks.push(d.flush());
  return chunks;
}

function check(ids: number[], what: string, skipSpecialTokens = false): void {
  const full = tok().decode(ids, { skipSpecialTokens });
  const chunks = stream(ids, skipSpecialTokens);
  assert.equal(chunks.join(''), full, `${what}: concatenation equals decode`);
  const fullHasFffd = full.includes('\uFFFD');
  for (const [i, c] of chunks.entries()) {
    if (!fullHasFffd) assert.ok(!c.includes('\uFFFD'), `${what}: chunk ${i} has U+FFFD`);
    assert.ok(!/[\uD800-\uDBFF]$|^[\uDC00-\uDFFF]/.test(c), `${what}: chunk ${i} splits a pair`);
  }
}

// GPT-2's bytes_to_unicode: the vocabulary character standing for each byte.
function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  }
  return out;
}

// One token per byte: the worst case for streaming.
function byteIds(bytes: Uint8Array): number[] {
  const chars = byteChars();
  return [...bytes].map((b) => {
    const id = tok().tokenToId(chars[b]!);
    assert.ok(id !== undefined, `byte ${b} has a token`);
    return id;
  });
}

test('golden texts: chunks join to decode(ids), no spurious U+FFFD', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const cases: { name: string; ids: number[]; ids_with_special: number[] }[] =
    JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, 'encode.json'), 'utf8')).cases;
  for (const c of cases) {
    check(c.ids, c.name);
    check(c.ids_with_special, `${c.name} with BOS`);
    check(c.ids_with_special, `${c.name} skipping specials`, true);
  }
});

test('byte-per-token streams of CJK and emoji ZWJ text', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const text = '你好，世界！👩‍👩‍👧‍👦 🇯🇵 👍🏽 é 漢字かなカナ한국어 ' + '🧑‍🚀深度求索'.repeat(40);
  const ids = byteIds(new TextEncoder().encode(text));
  check(ids, 'bytes');
  assert.equal(stream(ids).join(''), text);
  // Every chunk is whole characters: the first one out is exactly '你'.
  const chunks = stream(ids).filter((c) => c !== '');
  assert.equal(chunks[0], '你');
});

test('invalid UTF-8 and specials between the bytes of a character', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const t = tok();
  const enc = (s: string) => byteIds(new TextEncoder().encode(s));
  const garbage = byteIds(new Uint8Array(200).fill(0x80)); // lone continuation bytes
  check(garbage, 'continuation bytes');
  check([...enc('a'), ...byteIds(new Uint8Array([0xe4, 0xbd])), ...enc('b')], 'truncated char');
  const [x, y, z] = enc('你');
  const split = [x!, t.bosId, y!, z!, t.tokenToId('<｜User｜>')!, ...enc('好')];
  check(split, 'special inside a character');
  check(split, 'special inside a character, skipped', true);
  // Ends mid-character: flush gives the lossy rest.
  const d = new StreamingDetokenizer(t);
  assert.equal(d.push(x!), '');
  assert.equal(d.push(y!), '');
  assert.equal(d.flush(), '\uFFFD');
  assert.equal(d.flush(), '');
});

test('the decode window stays short on long runs', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const ids = [
    ...byteIds(new Uint8Array(3000).fill(0x80)),
    ...byteIds(new TextEncoder().encode('深度求索'.repeat(500))),
  ];
  const d = new StreamingDetokenizer(tok());
  let maxPending = 0;
  let out = '';
  for (const id of ids) {
    out += d.push(id);
    maxPending = Math.max(maxPending, (d as unknown as { pending: number[] }).pending.length);
  }
  out += d.flush();
  assert.equal(out, tok().decode(ids));
  assert.ok(maxPending <= 17, `window grew to ${maxPending} ids`);
});
