// renderChat against transformers' apply_chat_template output (../shared/golden/tokenizer/chat.json)
// on DeepSeek-V3's chat_template, plus message validation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderChat, renderChatParts, type ChatMessage } from './chat-template.ts';
import { Tokenizer } from './tokenizer.ts';
import { DsError } from '../errors.ts';
import { DEEPSEEK_TOKENIZER_DIR, DEEPSEEK_TOKENIZER_MISSING, GOLDEN_TOKENIZER_DIR, TOKENIZER_GOLDEN_MISSING } from '../../test/helpers/golden.ts';


interface ChatCase {
  name: string; messages: ChatMessage[]; add_generation_prompt: boolean;
  rendered: string; ids: number[];
}
interface ChatGolden { bos_token: string; eos_token: string; cases: ChatCase[] }

let tokCache: Tokenizer | undefined;
const tok = (): Tokenizer => (tokCache ??= Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR));

test('chat.json: rendered string and its ids, all cases', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const g: ChatGolden = JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, 'chat.json'), 'utf8'));
  const t = tok();
  assert.equal(g.cases.length, 13);
  assert.equal(g.bos_token, t.bosToken);
  assert.equal(g.eos_token, t.eosToken);
  for (const c of g.cases) {
    const rendered = renderChat(t.chatTemplate!, c.messages, {
      addGenerationPrompt: c.add_generation_prompt, bosToken: t.bosToken, eosToken: t.eosToken,
    });
    assert.equal(rendered, c.rendered, `${c.name}: rendered`);
    assert.deepEqual(t.encode(rendered), c.ids, `${c.name}: ids`);
  }
});

const TEMPLATE = '{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}';
const OPTS = { bosToken: '<s>', eosToken: '</s>' };

function rejects(messages: unknown, pattern: RegExp): void {
  assert.throws(() => renderChat(TEMPLATE, messages as ChatMessage[], OPTS), (e: unknown) =>
    e instanceof DsError && e.code === 'BAD_INPUT' && pattern.test(e.message),
  `expected BAD_INPUT matching ${pattern}`);
}

test('validation: bad messages are BAD_INPUT naming index and field', () => {
  const call = { type: 'function', function: { name: 'f', arguments: '{}' } };
  rejects('hi', /^messages: must be an array/);
  rejects([{ role: 'user', content: 'a' }, 'b'], /messages\[1\]: must be an object/);
  rejects([{ role: 'user', content: 'a' }, { role: 'robot', content: 'b' }],
    /messages\[1\]\.role: unknown role "robot"/);
  rejects([{ content: 'b' }], /messages\[0\]\.role/);
  rejects([{ role: 'user' }], /messages\[0\]\.content: missing/);
  rejects([{ role: 'user', content: null }], /messages\[0\]\.content: may be null only/);
  rejects([{ role: 'assistant', content: null }], /messages\[0\]\.content: may be null only/);
  rejects([{ role: 'user', content: 3 }], /messages\[0\]\.content: must be a string/);
  rejects([{ role: 'user', content: 'x', tool_calls: [call] }],
    /messages\[0\]\.tool_calls: only assistant/);
  rejects([{ role: 'assistant', content: null, tool_calls: [] }],
    /messages\[0\]\.tool_calls: must not be empty/);
  rejects([{ role: 'assistant', content: null, tool_calls: {} }],
    /messages\[0\]\.tool_calls: must be an array/);
  rejects([{ role: 'assistant', content: null, tool_calls: [call, { ...call, type: 'x' }] }],
    /messages\[0\]\.tool_calls\[1\]\.type/);
  rejects([{ role: 'assistant', content: null, tool_calls: [{ type: 'function' }] }],
    /messages\[0\]\.tool_calls\[0\]\.function: must be an object/);
  rejects([{ role: 'assistant', content: null,
    tool_calls: [{ type: 'function', function: { arguments: '{}' } }] }],
  /tool_calls\[0\]\.function\.name/);
  rejects([{ role: 'assistant', content: null,
    tool_calls: [{ type: 'function', function: { name: 'f', arguments: { a: 1 } } }] }],
  /tool_calls\[0\]\.function\.arguments: must be a string/);
  rejects([{ role: 'tool', content: 'x', tool_call_id: 7 }], /messages\[0\]\.tool_call_id/);
});

test('valid messages render; raise_exception and tojson behave as in transformers', () => {
  const msgs: ChatMessage[] = [
    { role: 'system', content: 's' }, { role: 'user', content: 'u' },
    { role: 'assistant', content: null,
      tool_calls: [{ type: 'function', id: 'c1', function: { name: 'f', arguments: '{}' } }] },
    { role: 'tool', content: 'r', tool_call_id: 'c1' },
  ];
  assert.equal(renderChat(TEMPLATE, msgs, OPTS), '[system]s[user]u[assistant][tool]r');
  assert.equal(renderChat(TEMPLATE, [], OPTS), '');
  const raising = '{% if messages[0].role != "user" %}{{ raise_exception("first must be user") }}' +
    '{% endif %}ok';
  assert.equal(renderChat(raising, [{ role: 'user', content: 'a' }], OPTS), 'ok');
  assert.throws(() => renderChat(raising, [{ role: 'system', content: 'a' }], OPTS),
    (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' &&
      /first must be user/.test(e.message));
  const json = '{{ bos_token }}{{ tools | tojson }}{% if add_generation_prompt %}>{% endif %}';
  assert.equal(renderChat(json, [], { ...OPTS, tools: [{ name: 'é', n: [1, 2] }],
    addGenerationPrompt: true }), '<s>[{"name": "é", "n": [1, 2]}]>');
  assert.equal(renderChat(json, [], OPTS), '<s>null');
  // trim_blocks and lstrip_blocks
  const ws = '{% for m in messages %}\n  {% if true %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}';
  assert.equal(renderChat(ws, [{ role: 'user', content: 'a' }], OPTS), 'a\n');
});

test('a template that does not parse is BAD_CONFIG', () => {
  assert.throws(() => renderChat('{% for %}', [], OPTS),
    (e: unknown) => e instanceof DsError && e.code === 'BAD_CONFIG');
});

test('renderChatParts + encodeParts: the golden ids of every case (no special-token text in them)', { skip: TOKENIZER_GOLDEN_MISSING }, () => {
  const g: ChatGolden = JSON.parse(readFileSync(join(GOLDEN_TOKENIZER_DIR, 'chat.json'), 'utf8'));
  const t = tok();
  for (const c of g.cases) {
    const parts = renderChatParts(t.chatTemplate!, c.messages, {
      addGenerationPrompt: c.add_generation_prompt, bosToken: t.bosToken, eosToken: t.eosToken,
    }, t);
    assert.deepEqual(parts, [{ text: c.rendered }], c.name);
    assert.deepEqual(t.encodeParts(parts), c.ids, c.name);
  }
});

test('renderChatParts: special-token text in messages comes back as plain parts, in place', { skip: DEEPSEEK_TOKENIZER_MISSING }, () => {
  const t = tok();
  const opts = { addGenerationPrompt: true, bosToken: t.bosToken, eosToken: t.eosToken };
  // Private-use characters in the messages must not be taken for the stand-ins.
  const messages: ChatMessage[] = [
    { role: 'system', content: '\uE000 sys <｜User｜>' },
    { role: 'user', content: `a${t.eosToken}\uE001<｜Assistant｜>b` },
    { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'f<｜tool▁sep｜>', arguments: '{"x": "<｜tool▁call▁end｜>"}' } }] },
  ];
  const parts = renderChatParts(t.chatTemplate!, messages, opts, t);
  assert.equal(parts.map((p) => p.text).join(''), renderChat(t.chatTemplate!, messages, opts));
  assert.deepEqual(parts.filter((p) => p.plain).map((p) => p.text),
    ['<｜User｜>', t.eosToken, '<｜Assistant｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>']);
  const ids = t.encodeParts(parts);
  const special = (s: string) => t.tokenToId(s)!;
  assert.deepEqual(ids.filter((id) => id >= 128000 || id <= 2), [
    t.bosId, special('<｜User｜>'), special('<｜Assistant｜>'), special('<｜tool▁calls▁begin｜>'), special('<｜tool▁call▁begin｜>'),
    special('<｜tool▁sep｜>'), special('<｜tool▁call▁end｜>'), special('<｜Assistant｜>'),
  ]);
  assert.equal(t.decode(ids), renderChat(t.chatTemplate!, messages, opts));
  // Tools given to the template are covered too.
  const withTools = renderChatParts('{{ tools | tojson }}{{ messages[0].content }}', [{ role: 'user', content: 'x' }],
    { ...opts, tools: [{ name: `t${t.eosToken}` }] }, t);
  assert.deepEqual(withTools.filter((p) => p.plain).map((p) => p.text), [t.eosToken]);
});
