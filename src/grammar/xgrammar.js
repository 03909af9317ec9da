// Loads xgrammar (github.com/mlc-ai/xgrammar) as published for JavaScript: @mlc-ai/web-xgrammar,
// the C++ engine compiled to WebAssembly (the build WebLLM uses), with the wasm inlined, so
// nothing is fetched at run time. Its package.json says "type": "module" but lib/index.js is a
// UMD bundle, which Node cannot import as ESM (it has no ESM exports and calls `require`), so
// it is evaluated here as the CommonJS module it is. Plain JavaScript: the grammar worker
// (worker.js) runs it without a TypeScript loader. Types: xgrammar.d.ts.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

let loaded = null;

/** The module's exports (evaluated once per thread). */
export function loadXgrammar() {
  if (loaded) return loaded;
  const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const source = readFileSync(file, 'utf8');
  const run = new Function('exports', 'require', 'module', '__filename', '__dirname', `${source}\n//# sourceURL=${file}`);
  const module = { exports: {} };
  run.call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
  loaded = module.exports;
  return loaded;
}

/** JSON Schema -> grammar options: compact one-line JSON, `{"a": 1, "b": [2, 3]}`. */
export const JSON_STYLE = { anyWhitespace: false, indent: -1, separators: [', ', ': '] };

/**
 * The EBNF xgrammar writes for a JSON Schema, on one line with fixed separators (a model
 * cannot pad it with whitespace forever) and, with `strict`, no properties or items the
 * schema does not declare. Two fixes: the rule it writes for a string with minLength/maxLength
 * admits raw control characters (`[^"\\\r\n]`), which JSON forbids inside strings, so they are
 * excluded, as xgrammar's own rule for plain strings does; and `rules` maps placeholder
 * literals (int-range.ts: bounded integers, which xgrammar gets wrong) to the EBNF they stand for.
 */
export async function schemaToEbnf(xg, schema, strict, rules = {}) {
  const { anyWhitespace, indent, separators } = JSON_STYLE;
  let ebnf = await xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), anyWhitespace, indent, separators, strict);
  ebnf = ebnf.split('[^"\\\\\\r\\n]').join('[^\\0-\\x1f"\\\\]');
  for (const [literal, expr] of Object.entries(rules)) {
    if (!ebnf.includes(literal)) throw new Error(`internal: ${literal} is not in the grammar`);
    ebnf = ebnf.split(literal).join(expr);
  }
  return ebnf;
}
