// Integer ranges as grammar: checked with xgrammar's own matcher, value by value around every
// edge, against the range itself.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { intRangeEbnf, withIntRanges } from './int-range.ts';
import { loadXgrammar } from './xgrammar.js';
import { Rng } from '../tensor/random.ts';

const xg = loadXgrammar();

async function accepts(expr: string, values: string[]): Promise<boolean[]> {
  const g = await xg.Grammar.fromEBNF(`root ::= ${expr}`);
  const out: boolean[] = [];
  for (const v of values) out.push(await xg.Testings.isGrammarAcceptString(g, v));
  g.dispose();
  return out;
}

describe('intRangeEbnf', () => {
  it('admits exactly the integers of the range, in JSON form', async () => {
    const rng = new Rng(11);
    const ranges: [number | null, number | null][] = [
      [0, 120], [7, null], [null, -3], [-5, 5], [1, 99], [0, 1000], [-120, -7], [42, 42], [0, 0], [-1, 0],
      [null, null], [100, 99999], [-9999, 12], [19, 301], [null, 250], [-250, null],
    ];
    for (let k = 0; k < 12; k++) {
      const a = Math.floor(rng.uniform() * 4000) - 2000;
      ranges.push([a, a + Math.floor(rng.uniform() * 3000)]);
    }
    for (const [lo, hi] of ranges) {
      const expr = intRangeEbnf(lo === null ? null : BigInt(lo), hi === null ? null : BigInt(hi));
      const probe = new Set<number>();
      for (const edge of [lo ?? -150, hi ?? 150, 0, -1, 1, 9, 10, 99, 100, -10, -100]) {
        for (let d = -12; d <= 12; d++) probe.add(edge + d);
      }
      for (let k = 0; k < 40; k++) probe.add(Math.floor(rng.uniform() * 20000) - 10000);
      const values = [...probe];
      const got = await accepts(expr, values.map(String));
      values.forEach((v, i) => {
        const want = (lo === null || v >= lo) && (hi === null || v <= hi);
        assert.equal(got[i], want, `[${lo}, ${hi}] ${v}: ${expr}`);
      });
      // Never a non-JSON form.
      const odd = await accepts(expr, ['007', '-0', '+1', '1.0', '1e2', '']);
      assert.deepEqual(odd, [false, false, false, false, false, false], `[${lo}, ${hi}]`);
    }
  });
});

describe('withIntRanges', () => {
  it('swaps bounded integers for placeholders, inside arrays, type lists and $defs, and nothing else', () => {
    const schema = {
      $defs: { n: { type: 'integer', exclusiveMinimum: 0, maximum: 9 } },
      type: 'object',
      properties: {
        a: { type: 'integer' },
        b: { type: ['integer', 'null'], minimum: -2 },
        c: { type: 'array', items: { $ref: '#/$defs/n' } },
        d: { enum: [1, 2] },
        minimum: { type: 'string' },
      },
    };
    const { schema: s, rules } = withIntRanges(schema) as { schema: any; rules: Record<string, string> };
    assert.deepEqual(s.properties.a, { type: 'integer' });
    assert.deepEqual(s.properties.d, { enum: [1, 2] });
    assert.deepEqual(s.properties.minimum, { type: 'string' });
    assert.equal(s.$defs.n.const, '__dsv3_int_0__');
    assert.deepEqual(s.properties.b, { anyOf: [{ const: '__dsv3_int_1__' }, { type: ['null'] }] });
    assert.deepEqual(Object.keys(rules), ['"\\"__dsv3_int_0__\\""', '"\\"__dsv3_int_1__\\""']);
    assert.equal(rules['"\\"__dsv3_int_0__\\""'], `(${intRangeEbnf(1n, 9n)})`);
    const plain = { type: 'string' };
    assert.equal(withIntRanges(plain).schema, plain);
    // A schema that happens to hold the prefix gets another one.
    const clash = withIntRanges({ enum: ['__dsv3_int'], type: 'integer', minimum: 1 } as any);
    assert.deepEqual(clash.schema, { enum: ['__dsv3_int'], type: 'integer', minimum: 1 }, 'enum wins: nothing to swap');
    const clash2 = withIntRanges({ anyOf: [{ const: '__dsv3_int' }, { type: 'integer', minimum: 1 }] }) as { schema: any };
    assert.equal(clash2.schema.anyOf[1].const, '__dsv3_int__0__');
  });
});
