// Types of xgrammar.js (plain JavaScript, so that the grammar worker needs no TypeScript loader).

type Xgrammar = typeof import('@mlc-ai/web-xgrammar');

/** The xgrammar module (evaluated once per thread). */
export function loadXgrammar(): Xgrammar;

/** JSON Schema -> grammar options: compact one-line JSON. */
export const JSON_STYLE: { anyWhitespace: boolean; indent: number; separators: [string, string] };

/**
 * xgrammar's EBNF for a JSON Schema, in JSON_STYLE, control characters kept out of strings,
 * each literal of `rules` replaced by its EBNF.
 */
export function schemaToEbnf(xg: Xgrammar, schema: unknown, strict: boolean, rules?: Record<string, string>): Promise<string>;
