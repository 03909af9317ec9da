// Structured output: a request's OutputConstraint as a grammar for the engine (grammar/), in
// the text the model writes. JSON is written on one line (`{"a": 1, "b": [2]}`); tool calls in
// DeepSeek-V3's own tokens, exactly as its chat template renders an assistant's calls, which
// is what parsers.ts reads back into OpenAI tool_calls:
//
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//   \n<｜tool▁call▁begin｜>…<｜tool▁call▁end｜><｜tool▁calls▁end｜>

import type { GrammarSpec } from '../grammar/engine.ts';
import { CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, TOOL_SEP } from './parsers.ts';
import type { OutputConstraint } from './request.ts';

/** The grammar that enforces `c`. */
export function grammarSpec(c: OutputConstraint): GrammarSpec {
  if (c.type === 'json') return { kind: 'json_schema', schema: c.schema, strict: c.declaredOnly };
  return {
    kind: 'tool_calls',
    begin: CALLS_BEGIN,
    end: CALLS_END,
    separator: '\n',
    single: c.single,
    calls: c.tools.map((t) => ({
      begin: `${CALL_BEGIN}function${TOOL_SEP}${t.function.name}\n\`\`\`json\n`,
      schema: t.function.parameters ?? { type: 'object', properties: {} },
      end: `\n\`\`\`${CALL_END}`,
    })),
  };
}
