// A GGUF file's tokenizer (tokenizer.ggml.* metadata, as convert_hf_to_gguf and `dsv3 convert
// --to gguf` write it) against the golden encodings of the real DeepSeek-V3 tokenizer.json:
// the same ids, with and without special tokens, the same decoded text and chat rendering.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from './tokenizer.ts';
import { renderChat, type ChatMessage } from './chat-template.ts';
import { DsError } from '../errors.ts';
import { tokenizerMetadata } from '../io/convert-gguf.ts';
import { kv, readGgufHeader, writeGguf } from '../io/gguf.ts';
import { tempDir } from '../../test/helpers/fixtures.ts';
import { DEEPSEEK_TOKENIZER_DIR, GOLDEN_TOKENIZER_DIR, TOKENIZER_GOLDEN_MISSING } from '../../test/helpers/golden.ts';

interface EncodeCase { name: string; text: string; ids: number[]; ids_with_special: number[]; decoded: string; decoded_skip_special: string }
interface ChatCase { name: string; messages: ChatMessage[]; add_generation_prompt: boolean; rendered: string; ids: number[] }

function ggufTokenizer(): { tok: Tokenizer; meta: Map<string, unknown> } {
  const file = join(tempDir(), 'vocab.gguf');
  const vocab = 129280; // DeepSeek-V3's embedding rows: ids past the tokenizer's 128815 are padding
  writeGguf(file, [kv.str('general.architecture', 'deepseek2'), ...tokenizerMetadata(DEEPSEEK_TOKENIZER_DIR, vocab)], [], () => new Uint8Array(0));
  const meta = readGgufHeader(file).metadata;
  return { tok: Tokenizer.fromGguf(meta, file), meta };
}

test('GGUF tokenizer: golden encodings, decodings and chat renderings', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const { tok } = ggufTokenizer();
  const ref = Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR);
  assert.equal(tok.bosId, ref.bosId);
  assert.equal(tok.eosId, ref.eosId);
  assert.equal(tok.vocabSize, ref.vocabSize, 'padding ids are not tokens');
  assert.equal(tok.chatTemplate, ref.chatTemplate);
  const enc: EncodeCase[] = JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, 'encode.json'), 'utf8')).cases;
  assert.ok(enc.length > 10);
  for (const c of enc) {
    assert.deepEqual(tok.encode(c.text), c.ids, `${c.name}: ids`);
    assert.deepEqual(tok.encode(c.text, { addSpecialTokens: true }), c.ids_with_special, `${c.name}: ids with special tokens`);
    assert.deepEqual(tok.encodeParts([{ text: c.text }], { addSpecialTokens: true, sliceChars: 7 }), c.ids_with_special,
      `${c.name}: encodeParts`);
    assert.equal(tok.decode(c.ids), c.decoded, `${c.name}: decoded`);
    // GGUF marks every added "<｜…｜>" token as a control token (convert_hf_to_gguf's
    // does_token_look_special), also the few tokenizer.json leaves non-special (<｜User｜>,
    // <｜Assistant｜>): skipping special tokens then drops those too.
    const looksSpecial = (id: number) => /^<｜.*｜>$/.test(ref.idToToken(id) ?? '') && ref.tokenToId(ref.idToToken(id)!) === id;
    const kept = c.ids.filter((id) => !looksSpecial(id));
    const skipped = kept.length === c.ids.length ? c.decoded_skip_special : ref.decode(kept, { skipSpecialTokens: true });
    assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), skipped, `${c.name}: decoded, specials skipped`);
  }
  const chat: { cases: ChatCase[] } = JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, 'chat.json'), 'utf8'));
  for (const c of chat.cases) {
    const rendered = renderChat(tok.chatTemplate!, c.messages, { addGenerationPrompt: c.add_generation_prompt, bosToken: tok.bosToken, eosToken: tok.eosToken });
    assert.equal(rendered, c.rendered, `${c.name}: rendered`);
    assert.deepEqual(tok.encode(rendered), c.ids, `${c.name}: ids`);
  }
});

test('GGUF tokenizer: metadata it cannot read is a BAD_CONFIG error naming the key', () => {
  const base = new Map<string, unknown>([
    ['tokenizer.ggml.model', 'gpt2'], ['tokenizer.ggml.pre', 'deepseek-v3'],
    ['tokenizer.ggml.tokens', ['a', 'b']], ['tokenizer.ggml.merges', []],
    ['tokenizer.ggml.bos_token_id', 0], ['tokenizer.ggml.eos_token_id', 1],
  ]);
  const fails = (patch: [string, unknown][], re: RegExp) =>
    assert.throws(() => Tokenizer.fromGguf(new Map([...base, ...patch]), 'x.gguf'), (e: unknown) => e instanceof DsError && e.code === 'BAD_CONFIG' && re.test(e.message));
  fails([['tokenizer.ggml.model', 'llama']], /tokenizer\.ggml\.model is "llama"/);
  fails([['tokenizer.ggml.pre', 'qwen2']], /tokenizer\.ggml\.pre "qwen2"/);
  fails([['tokenizer.ggml.tokens', [1, 2]]], /tokenizer\.ggml\.tokens/);
  fails([['tokenizer.ggml.eos_token_id', 7]], /eos_token_id/);
  fails([['tokenizer.ggml.token_type', [1]]], /token_type/);
  assert.equal(Tokenizer.fromGguf(base).encode('ab').length, 2);
});
