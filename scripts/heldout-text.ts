// Writes the held-out documents of `dsv3 train`'s split (same sources, fraction and seed)
// as one text file, for `dsv3 eval --file`.
//   node --import tsx scripts/heldout-text.ts OUT.txt [--val 0.02] [--seed 0]

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { readCorpus, splitDocs } from '../src/train/data.ts';

const { values, positionals } = parseArgs({
  options: { val: { type: 'string', default: '0.02' }, seed: { type: 'string', default: '0' } },
  allowPositionals: true,
});
const out = positionals[0];
if (!out) throw new Error('usage: heldout-text.ts OUT.txt');
const docs = readCorpus([{ kind: 'brown' }, { kind: 'nlp-corpus' }]);
const { val } = splitDocs(docs, { valFraction: Number(values.val), seed: Number(values.seed) });
writeFileSync(out, val.map((d) => d.text).join('\n\n') + '\n');
console.log(`${out}: ${val.length} held-out documents, ${val.reduce((n, d) => n + d.text.length, 0)} characters`);
