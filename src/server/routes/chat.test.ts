// Parsed model output in OpenAI's chat shapes: the whole message and the stream's deltas,
// including tool calls (a random test model never writes them, so they are checked here).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assistantMessage, eventDelta } from './chat.ts';
import { CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, OutputParser, TOOL_SEP, parseOutput } from '../parsers.ts';

const output = `<think>The user wants weather.</think>${CALLS_BEGIN}${CALL_BEGIN}function${TOOL_SEP}get_weather\n` +
  '```json\n{"city": "Paris"}\n```' + `${CALL_END}${CALLS_END}`;

describe('chat response shapes', () => {
  it('builds the assistant message with reasoning_content and tool_calls', () => {
    const m = assistantMessage(parseOutput(output, { tools: true }));
    assert.deepEqual(m, {
      role: 'assistant',
      content: null,
      reasoning_content: 'The user wants weather.',
      tool_calls: [{ id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }],
    });
    assert.deepEqual(assistantMessage(parseOutput('Hi!')), { role: 'assistant', content: 'Hi!' });
  });

  it('streams deltas that an OpenAI client folds back into the same message', () => {
    const p = new OutputParser({ tools: true });
    const deltas = [...output].flatMap((ch) => p.push(ch)).concat(p.flush()).map(eventDelta);
    // Fold the deltas as OpenAI's SDK accumulates a streamed message.
    const calls: { id?: string; type?: string; function: { name: string; arguments: string } }[] = [];
    let reasoning = '';
    let content = '';
    for (const d of deltas as any[]) {
      reasoning += d.reasoning_content ?? '';
      content += d.content ?? '';
      for (const tc of d.tool_calls ?? []) {
        const c = (calls[tc.index] ??= { function: { name: '', arguments: '' } });
        if (tc.id) c.id = tc.id;
        if (tc.type) c.type = tc.type;
        c.function.name += tc.function.name ?? '';
        c.function.arguments += tc.function.arguments ?? '';
      }
    }
    const whole = assistantMessage(parseOutput(output, { tools: true }));
    assert.equal(reasoning, whole.reasoning_content);
    assert.equal(content, '');
    assert.deepEqual(calls, whole.tool_calls);
  });
});
