// Trains a byte-level BPE tokenizer (DeepSeek-V3 layout) on the two corpora that ship as npm
// devDependencies (the Brown Corpus and nlp-corpus) and writes tokenizer.json and
// tokenizer_config.json into --out. The held-out 2% of documents (the same split training
// uses) is not trained on; the script reports bytes/token there and the corpus size in tokens.
//
//   node --import tsx scripts/train-tokenizer.ts --out DIR [--vocab 8192] [--min-frequency 2]
//     [--max-length 131072] [--seed 0] [--val 0.02] [--no-count]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BpeTrainStats, tokenizerConfig, trainBpe } from '../src/text/bpe-trainer.ts';
import { Tokenizer } from '../src/text/tokenizer.ts';
import { type Doc, packDocs, readBrown, readNlpCorpus, splitDocs } from '../src/train/data.ts';
import { DsError } from '../src/errors.ts';

const { values: a } = parseArgs({
  options: {
    out: { type: 'string' },
    vocab: { type: 'string', default: '8192' },
    'min-frequency': { type: 'string', default: '2' },
    'max-length': { type: 'string', default: '131072' },
    seed: { type: 'string', default: '0' },
    val: { type: 'string', default: '0.02' },
    'no-count': { type: 'boolean', default: false },
  },
  strict: true,
});

function num(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) {
    console.error(`train-tokenizer: --${name} must be a number, got "${v}"`);
    process.exit(2);
  }
  return n;
}

function main(): void {
  if (!a.out) {
    console.error('usage: node --import tsx scripts/train-tokenizer.ts --out DIR [--vocab 8192]');
    process.exit(2);
  }
  const mb = (docs: Doc[]) => docs.reduce((s, d) => s + Buffer.byteLength(d.text), 0) / 1e6;
  let t = performance.now();
  const brown = readBrown();
  const nlp = readNlpCorpus();
  console.error(`read Brown Corpus: ${brown.length} docs, ${mb(brown).toFixed(2)} MB; ` +
    `nlp-corpus: ${nlp.length} docs, ${mb(nlp).toFixed(2)} MB ` +
    `(${((performance.now() - t) / 1000).toFixed(1)} s)`);
  const all = [...brown, ...nlp];
  const { train, val } = splitDocs(all, { valFraction: num('val', a.val!), seed: num('seed', a.seed!) });
  console.error(`split: ${train.length} train docs (${mb(train).toFixed(2)} MB), ` +
    `${val.length} held-out docs (${mb(val).toFixed(2)} MB)`);

  t = performance.now();
  let st: BpeTrainStats | undefined;
  const json = trainBpe(train.map((d) => d.text), {
    vocabSize: num('vocab', a.vocab!), minFrequency: num('min-frequency', a['min-frequency']!),
    onStats: (s) => { st = s; },
  });
  const trainS = (performance.now() - t) / 1000;
  if (!st) throw new Error('trainBpe reported no stats');
  console.error(`trained ${st.merges} merges in ${trainS.toFixed(1)} s ` +
    `(pre-tokenize ${(st.preTokenizeMs / 1000).toFixed(1)} s: ${st.words} words, ` +
    `${st.uniqueWords} unique; merges ${(st.mergeMs / 1000).toFixed(1)} s)`);

  mkdirSync(a.out, { recursive: true });
  writeFileSync(join(a.out, 'tokenizer.json'), JSON.stringify(json, null, 2) + '\n');
  const cfg = tokenizerConfig({ modelMaxLength: num('max-length', a['max-length']!) });
  writeFileSync(join(a.out, 'tokenizer_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  const tok = Tokenizer.fromDir(a.out);
  console.error(`wrote ${a.out}/tokenizer.json, tokenizer_config.json (vocab ${tok.vocabSize})`);

  t = performance.now();
  const valText = val.map((d) => d.text);
  let valBytes = 0;
  let valTokens = 0;
  for (const s of valText) {
    valBytes += Buffer.byteLength(s);
    valTokens += tok.encode(s).length;
  }
  console.error(`held-out: ${(valBytes / valTokens).toFixed(3)} bytes/token ` +
    `(${valTokens} tokens, ${((performance.now() - t) / 1000).toFixed(1)} s)`);

  if (!a['no-count']) {
    t = performance.now();
    const nb = packDocs(brown, tok).length;
    const nn = packDocs(nlp, tok).length;
    console.error(`packed with BOS+EOS per doc: Brown ${nb} tokens, nlp-corpus ${nn} tokens, ` +
      `total ${nb + nn} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  }
}

try {
  main();
} catch (e) {
  if (e instanceof DsError) {
    console.error(`train-tokenizer: ${e.code}: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
