// The grammar engine on DeepSeek-V3's real vocabulary (128,815 tokens, 129,280 logits as the
// model has): random walks through each grammar, one random allowed token at a time (leaning
// towards closing tokens so that walks end), must decode to JSON that ajv validates, and EOS
// must be allowed exactly when the text so far is a finished value. Tool-call grammars must give
// text that the server's parser turns into calls with valid arguments.

import { after, describe, it } from 'node:test';
import { isIPv6 } from 'node:net';
import assert from 'node:assert/strict';
import { GrammarEngine, grammarVocab, type GrammarMatcher, type GrammarSpec } from './engine.ts';
import { schemaProblems } from './json-schema.ts';
import { tokenBytes } from './utf8.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { parseToolCalls } from '../server/parsers.ts';
import { grammarSpec } from '../server/structured.ts';
import { DEEPSEEK_TOKENIZER_DIR } from '../../test/helpers/golden.ts';
import { schemaErrors } from '../../test/helpers/ajv.ts';

const LOGITS = 129_280;
const tok = Tokenizer.fromDir(DEEPSEEK_TOKENIZER_DIR);
const vocab = grammarVocab(tok, LOGITS);
const engine = GrammarEngine.start(vocab);
after(() => engine.close());

const closing = vocab.tokens.map((t) => /["}\]]/.test(t));
const quoting = vocab.tokens.map((t) => t.includes('"'));
const allowed = (mask: Int32Array, id: number) => ((mask[id >> 5]! >>> (id & 31)) & 1) === 1;

function rng(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

/**
 * Walks `m` to its end (or `limit` tokens): returns the text, whether it ended with EOS, and
 * the texts at which EOS was allowed.
 */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The text of `ids`, which must be valid UTF-8 (the guard's doing), special tokens left out. */
function text(ids: number[]): string {
  const bytes = ids.filter((id) => !tok.isSpecial(id)).flatMap((id) => [...tokenBytes(vocab.tokens[id]!)]);
  return utf8.decode(Uint8Array.from(bytes));
}

function walk(m: GrammarMatcher, seed: number, closers_ = closing, limit = 600): { text: string; ended: boolean; eosAt: string[] } {
  const rnd = rng(seed);
  const ids: number[] = [];
  const eosAt: string[] = [];
  for (let step = 0; step < limit; step++) {
    const mask = m.mask();
    const ok: number[] = [];
    const closers: number[] = [];
    for (let i = 0; i < LOGITS; i++) {
      if (!allowed(mask, i)) continue;
      ok.push(i);
      if (closers_[i]) closers.push(i);
    }
    assert.ok(ok.length > 0, 'the mask allows something');
    for (const i of ok) assert.ok(i < tok.vocabSize && (i === tok.eosId || !tok.isSpecial(i)), `id ${i} is a real, non-special token`);
    if (allowed(mask, tok.eosId)) {
      eosAt.push(text(ids));
      if (rnd() < 0.8) {
        m.accept(tok.eosId);
        return { text: text(ids), ended: true, eosAt };
      }
    }
    // Later on, lean towards ending: a closing token when there is one, else the shortest
    // tokens other than digits (a format's next part), else anything.
    let pool = ok.filter((i) => i !== tok.eosId);
    if (step > 10 && rnd() < 0.85) {
      const short = (xs: number[]) => {
        const min = Math.min(...xs.map((i) => vocab.tokens[i]!.length));
        return xs.filter((i) => vocab.tokens[i]!.length === min);
      };
      const nonDigits = pool.filter((i) => !/^[0-9]+$/.test(vocab.tokens[i]!));
      pool = closers.length ? closers.filter((i) => i !== tok.eosId) : nonDigits.length ? short(nonDigits) : pool;
    }
    if (pool.length === 0) {
      m.accept(tok.eosId);
      return { text: text(ids), ended: true, eosAt };
    }
    const id = pool[Math.floor(rnd() * pool.length)]!;
    m.accept(id);
    ids.push(id);
  }
  // Cut short: the bytes so far may end inside a character; only whole ones are text.
  const bytes = ids.filter((id) => !tok.isSpecial(id)).flatMap((id) => [...tokenBytes(vocab.tokens[id]!)]);
  return { text: new TextDecoder().decode(Uint8Array.from(bytes)), ended: false, eosAt };
}

async function checkSchema(
  schema: Record<string, unknown> | boolean,
  strict: boolean,
  walks: number,
  check?: (v: any) => void,
  closers = closing,
) {
  assert.deepEqual(schemaProblems(schema), [], 'the schema is supported');
  const spec: GrammarSpec = { kind: 'json_schema', schema, strict };
  let ended = 0;
  for (let w = 0; w < walks; w++) {
    const m = await engine.matcher(spec);
    const r = walk(m, 1000 + w, closers);
    m.release();
    for (const t of r.eosAt) {
      // EOS only where the text is a whole, valid value.
      const v = JSON.parse(t);
      assert.equal(schemaErrors(schema, v), null, t);
    }
    if (!r.ended) continue;
    ended++;
    const v = JSON.parse(r.text);
    assert.equal(schemaErrors(schema, v), null, r.text);
    check?.(v);
  }
  assert.ok(ended >= Math.ceil(walks / 2), `${ended} of ${walks} walks ended (${JSON.stringify(schema).slice(0, 80)})`);
}

describe('grammar engine (xgrammar) on the DeepSeek-V3 vocabulary', () => {
  it('reads the vocabulary as byte-level BPE, special tokens never allowed, EOS the stop token', () => {
    assert.equal(vocab.type, 'byte_level');
    assert.equal(vocab.tokens.length, tok.vocabSize);
    assert.equal(vocab.size, LOGITS);
    assert.deepEqual(vocab.stopIds, [tok.eosId]);
    assert.equal(vocab.tokens[tok.bosId], '');
    assert.equal(vocab.tokens[tok.tokenToId('<｜tool▁calls▁begin｜>')!], '<｜tool▁calls▁begin｜>'); // not special: text
  });

  it('keeps to a schema of every supported kind', async () => {
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 6 },
        code: { type: 'string', minLength: 2, maxLength: 3 },
        age: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 120 },
        score: { anyOf: [{ type: 'number' }, { type: 'string', maxLength: 2 }] },
        ok: { type: 'boolean' },
        role: { enum: ['admin', 'user', 7, null] },
        fixed: { const: { a: [1, 'x'] } },
        maybe: { anyOf: [{ type: 'integer', minimum: 1, maximum: 9 }, { type: 'null' }] },
        list: { type: 'array', items: { type: 'boolean' }, minItems: 1, maxItems: 3 },
        pair: { type: 'array', prefixItems: [{ type: 'integer', minimum: 0, maximum: 9 }, { enum: ['a', 'b'] }], items: false },
        nested: { type: 'object', properties: { x: { type: ['integer', 'null'], minimum: -5, maximum: 5 } }, required: ['x'] },
        opt: { type: 'boolean' },
      },
      required: ['name', 'code', 'age', 'score', 'ok', 'role', 'fixed', 'maybe', 'list', 'pair', 'nested'],
      additionalProperties: false,
    };
    await checkSchema(schema, true, 6, (v) => {
      assert.ok([...v.name].length <= 6);
      assert.ok([...v.code].length >= 2);
    });
  });

  it('follows $ref into $defs, recursively, and discriminated oneOf', async () => {
    const schema = {
      $defs: {
        node: {
          type: 'object',
          properties: { v: { type: 'integer', minimum: 0, maximum: 99 }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
          required: ['v', 'kids'],
        },
      },
      type: 'object',
      properties: {
        tree: { $ref: '#/$defs/node' },
        shape: {
          oneOf: [
            { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind', 'r'] },
            { type: 'object', properties: { kind: { const: 'square' }, side: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind', 'side'] },
          ],
        },
      },
      required: ['tree', 'shape'],
    };
    await checkSchema(schema, true, 5);
  });

  it('keeps strings to a pattern and a format, and still writes valid JSON', async () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const schema = {
      type: 'object',
      properties: { code: { type: 'string', pattern: '^[A-Z]{2}-\\d{2,4}$' }, id: { type: 'string', format: 'uuid' } },
      required: ['code', 'id'],
    };
    await checkSchema(schema, true, 4, (v) => {
      assert.match(v.code, /^[A-Z]{2}-\d{2,4}$/);
      assert.match(v.id, uuid);
    });
  });

  it('writes each supported string format in its standard shape', async () => {
    const shapes: Record<string, (s: string) => boolean> = {
      date: (s) => /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/.test(s),
      time: (s) => /^([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/.test(s),
      'date-time': (s) => !Number.isNaN(Date.parse(s.replace(/:60/, ':59'))) && /T/.test(s),
      duration: (s) => /^P(?!$)/.test(s),
      email: (s) => /^[^@\s]+@[A-Za-z0-9.-]+$/.test(s),
      hostname: (s) => /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(s),
      ipv6: (s) => isIPv6(s),
      uuid: (s) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s),
    };
    for (const [format, ok] of Object.entries(shapes)) {
      // Only a quote ends a string (an email's local part may hold braces).
      await checkSchema({ type: 'string', format }, true, 2, (v) => assert.ok(ok(v), `${format}: ${v}`), quoting);
    }
  });

  it('writes any JSON object for json_object, and nothing but JSON (control characters stay escaped)', async () => {
    await checkSchema({ type: 'object' }, false, 6, (v) => assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v)));
  });

  it('writes tool calls in DeepSeek-V3 tokens that parse back into calls with valid arguments', async () => {
    const weather = { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } }, required: ['city', 'unit'] };
    const search = { type: 'object', properties: { q: { type: 'string', maxLength: 5 }, n: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['q'] };
    const tools = [
      { type: 'function' as const, function: { name: 'get_weather', parameters: weather } },
      { type: 'function' as const, function: { name: 'search', parameters: search } },
    ];
    const schemas: Record<string, unknown> = { get_weather: weather, search };
    for (const single of [false, true]) {
      const spec = grammarSpec({ type: 'tool_calls', tools, single, param: 'tool_choice' });
      for (let w = 0; w < 4; w++) {
        const m = await engine.matcher(spec);
        const r = walk(m, 77 + w);
        m.release();
        assert.ok(r.ended, r.text);
        const { content, toolCalls } = parseToolCalls(r.text);
        assert.equal(content, '', r.text);
        assert.ok(toolCalls.length >= 1);
        if (single) assert.equal(toolCalls.length, 1);
        for (const c of toolCalls) {
          assert.ok(c.name in schemas, c.name);
          assert.equal(schemaErrors(schemas[c.name], JSON.parse(c.arguments)), null, c.arguments);
        }
      }
    }
  });

  it('compiles each grammar once, and refuses with BAD_INPUT what the engine cannot compile', async () => {
    const spec: GrammarSpec = { kind: 'json_schema', schema: { type: 'object', properties: { a: { type: 'boolean' } } }, strict: true };
    const a = await engine.matcher(spec);
    const t0 = performance.now();
    const b = await engine.matcher(spec);
    assert.ok(performance.now() - t0 < 1000);
    a.release();
    b.release();
    await assert.rejects(
      engine.matcher({ kind: 'json_schema', schema: { type: 'string', pattern: '(a' }, strict: true }),
      (e: any) => e.code === 'BAD_INPUT' && /cannot compile this: .*parenthesis is not closed/.test(e.message),
    );
    // The engine still works after refusing.
    const c = await engine.matcher(spec);
    assert.ok(allowed(c.mask(), vocab.tokens.indexOf('{')));
    c.release();
  });

  it('gives each matcher its own state', async () => {
    const spec: GrammarSpec = { kind: 'json_schema', schema: { enum: ['yes', 'no'] }, strict: true };
    const a = await engine.matcher(spec);
    const b = await engine.matcher(spec);
    const q = tok.tokenToId('"')!;
    a.accept(q);
    const y = tok.encode('yes')[0]!;
    assert.ok(allowed(a.mask(), y));
    assert.ok(!allowed(b.mask(), y), 'b has not seen the quote');
    assert.ok(allowed(b.mask(), q));
    a.release();
    b.release();
  });
});
