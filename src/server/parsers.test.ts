// The output parsers on text: reasoning spans, DeepSeek-V3 tool calls as the chat template writes
// them, and the streaming versions, which must add up to the whole-text result at every split.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  CALL_BEGIN,
  CALL_END,
  CALLS_BEGIN,
  CALLS_END,
  OutputParser,
  TOOL_SEP,
  collectEvents,
  parseOutput,
  parseReasoning,
  parseToolCalls,
  type OutputEvent,
  type OutputParserOptions,
} from './parsers.ts';
import { renderChat, type ToolCall } from '../text/chat-template.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { StreamingDetokenizer } from '../text/detokenizer.ts';
import { DEEPSEEK_TOKENIZER_DIR } from '../../test/helpers/golden.ts';

const tok = Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR);

const call = (name: string, args: string): string =>
  `${CALL_BEGIN}function${TOOL_SEP}${name}\n\`\`\`json\n${args}\n\`\`\`${CALL_END}`;

const WEATHER = '{"city": "Paris", "unit": "celsius"}';
const TIME = '{"tz": "Europe/Paris"}';

// Texts that exercise every state, including malformed and cut-short ones.
const SAMPLES: { name: string; text: string; opts: OutputParserOptions }[] = [
  { name: 'plain', text: 'Hello, world! <b>not a marker</b> <｜tool', opts: { tools: true } },
  { name: 'think', text: '<think>\nLet me see.\n</think>\n\nThe answer is 4.', opts: {} },
  { name: 'think cut short', text: '<think>Still thinking <', opts: {} },
  { name: 'one call', text: `${CALLS_BEGIN}${call('get_weather', WEATHER)}${CALLS_END}`, opts: { tools: true } },
  {
    name: 'two calls after text',
    text: `Checking.${CALLS_BEGIN}${call('get_weather', WEATHER)}\n${call('get_time', TIME)}${CALLS_END}`,
    opts: { tools: true },
  },
  {
    name: 'think then call',
    text: `<think>need weather</think>${CALLS_BEGIN}${call('get_weather', WEATHER)}${CALLS_END}`,
    opts: { tools: true },
  },
  { name: 'call cut in args', text: `${CALLS_BEGIN}${CALL_BEGIN}function${TOOL_SEP}f\n\`\`\`json\n{"a": [1, 2`, opts: { tools: true } },
  { name: 'call cut in fence', text: `${CALLS_BEGIN}${CALL_BEGIN}function${TOOL_SEP}f\n\`\`\`js`, opts: { tools: true } },
  { name: 'no fence', text: `${CALLS_BEGIN}${CALL_BEGIN}function${TOOL_SEP}f\n{"x": "\`y\`"}  ${CALL_END}`, opts: { tools: true } },
  { name: 'text after calls', text: `${CALLS_BEGIN}${call('f', '{}')}${CALLS_END} done`, opts: { tools: true } },
  { name: 'stray text between calls', text: `${CALLS_BEGIN}${call('f', '{}')} oops ${CALL_BEGIN}`, opts: { tools: true } },
  { name: 'tools off', text: `${CALLS_BEGIN}${call('f', '{}')}${CALLS_END}`, opts: {} },
];

function streamed(parts: string[], opts: OutputParserOptions): OutputEvent[] {
  const p = new OutputParser(opts);
  return [...parts.flatMap((s) => p.push(s)), ...p.flush()];
}

describe('output parsers', () => {
  it('splits reasoning from content', () => {
    assert.deepEqual(parseReasoning('<think>\nLet me see.\n</think>\n\nThe answer is 4.'), {
      reasoning: '\nLet me see.\n',
      content: '\n\nThe answer is 4.',
    });
    assert.deepEqual(parseReasoning('no thoughts'), { reasoning: null, content: 'no thoughts' });
    assert.deepEqual(parseReasoning('<think>cut'), { reasoning: 'cut', content: '' });
    assert.deepEqual(parseOutput('more</think>answer', { startInReasoning: true }), {
      reasoning: 'more',
      content: 'answer',
      toolCalls: [],
    });
  });

  it('reads back the tool calls the chat template writes', () => {
    const calls: ToolCall[] = [
      { type: 'function', function: { name: 'get_weather', arguments: WEATHER } },
      { type: 'function', function: { name: 'get_time', arguments: TIME } },
    ];
    const rendered = renderChat(tok.chatTemplate!, [
      { role: 'user', content: 'Weather and time in Paris?' },
      { role: 'assistant', content: null, tool_calls: calls },
    ], { bosToken: tok.bosToken, eosToken: tok.eosToken });
    const reply = rendered.slice(rendered.indexOf('<｜Assistant｜>') + '<｜Assistant｜>'.length)
      .replace(tok.eosToken, '');
    assert.ok(reply.startsWith(CALLS_BEGIN + CALL_BEGIN), reply);
    const r = parseToolCalls(reply);
    assert.equal(r.content, '');
    assert.deepEqual(r.toolCalls, [
      { id: 'call_0', name: 'get_weather', arguments: WEATHER },
      { id: 'call_1', name: 'get_time', arguments: TIME },
    ]);
  });

  it('keeps text around calls, tolerates a missing fence, keeps a call cut short', () => {
    const two = parseOutput(SAMPLES[4].text, { tools: true });
    assert.equal(two.content, 'Checking.');
    assert.deepEqual(two.toolCalls.map((c) => c.name), ['get_weather', 'get_time']);
    assert.deepEqual(parseOutput(SAMPLES[6].text, { tools: true }).toolCalls, [
      { id: 'call_0', name: 'f', arguments: '{"a": [1, 2' },
    ]);
    assert.deepEqual(parseOutput(SAMPLES[8].text, { tools: true }).toolCalls[0].arguments, '{"x": "`y`"}');
    assert.equal(parseOutput(SAMPLES[9].text, { tools: true }).content, ' done');
    assert.equal(parseOutput(SAMPLES[10].text, { tools: true }).content, 'oops ');
    const think = parseOutput(SAMPLES[5].text, { tools: true });
    assert.equal(think.reasoning, 'need weather');
    assert.equal(think.toolCalls[0].arguments, WEATHER);
  });

  it('leaves tool-call tokens as content when the request offered no tools', () => {
    const r = parseOutput(SAMPLES[11].text, {});
    assert.equal(r.content, SAMPLES[11].text);
    assert.deepEqual(r.toolCalls, []);
  });

  it('gives the same result at every split point, and character by character', () => {
    for (const { name, text, opts } of SAMPLES) {
      const whole = parseOutput(text, opts);
      for (let i = 0; i <= text.length; i++) {
        const got = collectEvents(streamed([text.slice(0, i), text.slice(i)], opts));
        assert.deepEqual(got, whole, `${name}: split at ${i}`);
      }
      for (let i = 0; i <= text.length; i += 3) {
        for (let j = i; j <= text.length; j += 5) {
          const parts = [text.slice(0, i), text.slice(i, j), text.slice(j)];
          assert.deepEqual(collectEvents(streamed(parts, opts)), whole, `${name}: split at ${i}, ${j}`);
        }
      }
      assert.deepEqual(collectEvents(streamed([...text], opts)), whole, `${name}: by character`);
    }
  });

  it('streams arguments as they come, never the closing fence', () => {
    const text = SAMPLES[3].text;
    const events = streamed([...text], { tools: true });
    const args = events.filter((e) => e.type === 'tool_args');
    assert.ok(args.length > 10, `${args.length} argument deltas`);
    for (const e of args) assert.ok(!e.text.includes('`'), JSON.stringify(e.text));
    assert.deepEqual(events[0], { type: 'tool_call', index: 0, id: 'call_0', name: 'get_weather' });
  });

  it('sees the tool-call tokens through the detokenizer, which skips only special tokens', () => {
    const text = `${CALLS_BEGIN}${call('get_weather', WEATHER)}${CALLS_END}`;
    const ids = [...tok.encode(text), tok.eosId];
    for (const t of [CALLS_BEGIN, CALL_BEGIN, TOOL_SEP, CALL_END, CALLS_END]) {
      assert.ok(ids.includes(tok.tokenToId(t)!), `${t} is one token`);
      assert.equal(tok.isSpecial(tok.tokenToId(t)!), false, `${t} is not special`);
    }
    const detok = new StreamingDetokenizer(tok, { skipSpecialTokens: true });
    const parser = new OutputParser({ tools: true });
    const events = ids.flatMap((id) => parser.push(detok.push(id)));
    events.push(...parser.push(detok.flush()), ...parser.flush());
    assert.deepEqual(collectEvents(events).toolCalls, [{ id: 'call_0', name: 'get_weather', arguments: WEATHER }]);
  });
});

describe('OutputParser with reasoning off (constrained output)', () => {
  it('keeps <think> as content, whatever the split, and still finds tool calls', () => {
    const json = '{"note": "<think>not a thought</think>"}';
    for (let cut = 0; cut <= json.length; cut++) {
      const p = new OutputParser({ reasoning: false });
      const out = collectEvents([...p.push(json.slice(0, cut)), ...p.push(json.slice(cut)), ...p.flush()]);
      assert.deepEqual(out, { content: json, reasoning: null, toolCalls: [] });
    }
    const args = '{"q": "<think>"}';
    const text = `${CALLS_BEGIN}${CALL_BEGIN}function${TOOL_SEP}search\n\`\`\`json\n${args}\n\`\`\`${CALL_END}${CALLS_END}`;
    const p = new OutputParser({ tools: true, reasoning: false });
    const out = collectEvents([...p.push(text), ...p.flush()]);
    assert.deepEqual(out.toolCalls, [{ id: 'call_0', name: 'search', arguments: args }]);
    assert.equal(out.reasoning, null);
  });
});
