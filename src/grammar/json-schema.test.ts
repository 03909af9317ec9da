// Which JSON Schemas are enforced exactly, and how the others are named in the 400.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { patternProblem, schemaProblems } from './json-schema.ts';

describe('schemaProblems', () => {
  it('accepts what the grammar enforces, annotations included', () => {
    const ok = [
      true,
      {},
      { type: 'object', title: 'T', description: 'd', $schema: 'https://json-schema.org/draft/2020-12/schema', additionalProperties: false },
      { type: ['string', 'null'], maxLength: 3 },
      { type: 'integer', minimum: -5, exclusiveMaximum: 10 },
      { type: 'number', description: 'unbounded' },
      { type: 'string', enum: ['a', 'b'] },
      { const: 3, type: 'integer' },
      { anyOf: [{ type: 'string' }, { type: 'null' }], description: 'nullable' },
      { allOf: [{ type: 'boolean' }] },
      { type: 'array', items: { type: 'string', format: 'date-time' }, minItems: 1, maxItems: 2 },
      { type: 'array', prefixItems: [{ type: 'integer' }], items: false },
      { $defs: { a: { type: 'string', pattern: '^[a-z]+(-[0-9]{2})?$' } }, type: 'object', properties: { x: { $ref: '#/$defs/a' } }, required: ['x'] },
      { definitions: { n: { type: 'object', properties: { k: { $ref: '#' } } } }, $ref: '#/definitions/n' },
      { oneOf: [{ type: 'string' }, { type: 'integer' }] },
      { oneOf: [
        { type: 'object', properties: { kind: { const: 'a' } }, required: ['kind'] },
        { type: 'object', properties: { kind: { enum: ['b', 'c'] } }, required: ['kind'] },
      ] },
      { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'integer' } },
    ];
    for (const s of ok) assert.deepEqual(schemaProblems(s), [], JSON.stringify(s));
  });

  it('names each feature it cannot enforce, with where it is', () => {
    const cases: [unknown, RegExp][] = [
      [{ type: 'object', properties: { a: { not: { type: 'string' } } } }, /#\/properties\/a: keyword "not" is not supported/],
      [{ type: 'string', if: {}, then: {} }, /keyword "if" is not supported/],
      [{ type: 'array', uniqueItems: true }, /keyword "uniqueItems" is not supported/],
      [{ type: 'integer', multipleOf: 2 }, /keyword "multipleOf" is not supported/],
      [{ type: 'object', patternProperties: {} }, /keyword "patternProperties" is not supported/],
      [{ type: 'number', minimum: 0 }, /"minimum" on a number is not supported/],
      [{ type: 'string', format: 'uri' }, /format "uri" is not supported/],
      [{ type: 'string', pattern: 'a.b' }, /pattern "a\.b": "\." can match a quote/],
      [{ type: 'string', pattern: '^[a-z]+$', maxLength: 3 }, /"pattern" together with "maxLength"/],
      [{ $ref: '#/$defs/x', description: 'ok', type: 'string' }, /"\$ref" together with "type"/],
      [{ $ref: 'http://x/y' }, /only references into this schema/],
      [{ $ref: '#/$defs/missing' }, /does not point into the schema/],
      [{ allOf: [{ type: 'string' }, { maxLength: 2 }] }, /"allOf" with more than one schema/],
      [{ oneOf: [{ type: 'string' }, { type: 'string', maxLength: 2 }] }, /"oneOf" branches 0 and 1 may both match/],
      [{ enum: [] }, /"enum" must be a non-empty array/],
      [{ type: 'string', enum: ['a', 1] }, /enum value 1 is not of type string/],
      [{ type: 'date' }, /"type" "date" is not a type name/],
      [{ maxLength: 3 }, /"maxLength" needs "type": "string"/],
      [{ type: 'string', minLength: 4, maxLength: 2 }, /minLength is above maxLength/],
      [{ type: 'integer', minimum: 5, maximum: 1 }, /the bounds leave no number/],
      [{ type: 'integer', minimum: 0.5 }, /whole number/],
      [{ type: 'object', properties: {}, required: ['a'] }, /required property "a" is not in "properties"/],
      [false, /the schema false accepts nothing/],
      [[1], /must be an object or a boolean/],
    ];
    for (const [s, re] of cases) {
      const p = schemaProblems(s);
      assert.ok(p.some((x) => re.test(x)), `${JSON.stringify(s)}: ${JSON.stringify(p)}`);
    }
  });

  it('reports every problem, not just the first', () => {
    const p = schemaProblems({ type: 'object', properties: { a: { not: {} }, b: { type: 'string', format: 'uri' } }, dependentRequired: {} });
    assert.equal(p.length, 3, JSON.stringify(p));
  });
});

describe('patternProblem', () => {
  it('accepts regexes that cannot break out of a JSON string', () => {
    for (const p of ['^[A-Z]{2}-\\d{2,4}$', 'abc|d(ef)+', '(?:x|y)*z?', '[a-z0-9_.-]+', '\\w+@\\w+\\.com', '\\u00e9t\\u00e9', 'é+']) {
      assert.equal(patternProblem(p), null, p);
    }
  });

  it('refuses what could match a quote, a backslash or a control character, and what xgrammar lacks', () => {
    const bad = ['.*', '[^a]', '\\s', '\\S', '\\D', '\\W', '"', '\\\\', '[ -~]', '[!-#]', '\\n', '\\u0022', '(?=a)', '(?<n>a)', '(a)\\1', '\\p{L}', '[a-z'];
    for (const p of bad) assert.notEqual(patternProblem(p), null, p);
  });
});
