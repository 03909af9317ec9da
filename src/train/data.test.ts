// Corpus readers (real files in a temp folder, and the real npm corpora), the held-out split,
// packing and the resumable window sampler.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Doc, type DocEncoder, WindowSampler, brownSentence, brownToText, packDocs, readBrown,
  readCorpus, readJsonl, readNlpCorpus, readTextFiles, splitDocs,
} from './data.ts';
import { DsError } from '../errors.ts';
import { tokenizerConfig, trainBpe } from '../text/bpe-trainer.ts';
import { Tokenizer } from '../text/tokenizer.ts';

const isDsError = (code: string, re: RegExp) => (e: unknown) =>
  e instanceof DsError && e.code === code && re.test(e.message);

function withTmp(f: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'data-'));
  try {
    f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('readTextFiles: a file or a folder, split by file, paragraph or line', () => {
  withTmp((dir) => {
    const a = join(dir, 'a.txt');
    writeFileSync(a, 'First paragraph,\nstill first.\n\n  Second one.  \n \n\nThird 東京 👍\n');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'b.txt'), 'line one\nline two\r\n\nline three');
    writeFileSync(join(dir, 'skip.md'), 'not a txt file');
    writeFileSync(join(dir, 'empty.txt'), ' \n\n');

    assert.deepEqual(readTextFiles(a), [{ id: 'a.txt', text: readFileSync(a, 'utf8') }]);
    assert.deepEqual(readTextFiles(a, { split: 'paragraph' }).map((d) => d.text),
      ['First paragraph,\nstill first.', 'Second one.', 'Third 東京 👍']);
    const byFile = readTextFiles(dir);
    assert.deepEqual(byFile.map((d) => d.id), ['a.txt', 'sub/b.txt']);
    const byLine = readTextFiles(dir, { split: 'line' });
    assert.deepEqual(byLine.filter((d) => d.id.startsWith('sub/')).map((d) => d.text),
      ['line one', 'line two', 'line three']);
    assert.equal(new Set(byLine.map((d) => d.id)).size, byLine.length);

    assert.throws(() => readTextFiles(join(dir, 'nope.txt')), isDsError('MISSING_FILE', /nope\.txt/));
    assert.throws(() => readTextFiles(join(dir, 'empty.txt')), isDsError('BAD_INPUT', /empty\.txt.*empty corpus/));
    const none = join(dir, 'none');
    mkdirSync(none);
    assert.throws(() => readTextFiles(none), isDsError('BAD_INPUT', /none.*empty corpus/));
    assert.throws(() => readTextFiles(a, { split: 'words' as never }), isDsError('BAD_INPUT', /split/));
  });
});

test('readJsonl: a configurable text field; bad lines name the file and line', () => {
  withTmp((dir) => {
    const p = join(dir, 'c.jsonl');
    writeFileSync(p, '{"text":"one","body":"uno"}\n\n{"text":"two\\nlines","body":"dos"}\n{"text":"","body":"tres"}\n');
    assert.deepEqual(readJsonl(p), [{ id: 'c.jsonl:1', text: 'one' }, { id: 'c.jsonl:3', text: 'two\nlines' }]);
    assert.deepEqual(readJsonl(p, { field: 'body' }).map((d) => d.text), ['uno', 'dos', 'tres']);
    assert.throws(() => readJsonl(p, { field: 'title' }), isDsError('BAD_INPUT', /c\.jsonl:1.*"title"/));
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text":"ok"}\n{"text": oops}\n');
    assert.throws(() => readJsonl(bad), isDsError('BAD_INPUT', /bad\.jsonl:2: not valid JSON/));
    const arr = join(dir, 'arr.jsonl');
    writeFileSync(arr, '["text"]\n');
    assert.throws(() => readJsonl(arr), isDsError('BAD_INPUT', /arr\.jsonl:1/));
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '\n\n');
    assert.throws(() => readJsonl(empty), isDsError('BAD_INPUT', /empty\.jsonl.*empty corpus/));
    assert.throws(() => readJsonl(join(dir, 'missing.jsonl')), isDsError('MISSING_FILE', /missing\.jsonl/));
  });
});

test('brownSentence / brownToText: tags stripped, quotes and punctuation spaced sanely', () => {
  assert.equal(brownSentence(['``', 'Only', 'a', 'handful', "''", ',', 'the', 'jury', 'said', '.']),
    '"Only a handful", the jury said.');
  assert.equal(brownSentence(['He', 'left', '(', 'fast', ')', '--', 'then', 'wept', ';', 'why', '?']),
    'He left (fast)--then wept; why?');
  assert.equal(brownSentence(["'", 'Tis', "'", 'they', 'said']), "'Tis' they said");
  const tagged = [
    '', '', '\tThe/at Fulton/np-tl jury/nn said/vbd ./.', '',
    'Merger/nn-hl proposed/vbn-hl', '',
    '\tIt/pps is/bez ,/, I/ppss think/vb ,/, fine/jj ;/. ;/.',
    'Far/rb from/in it/ppo ?/. ?/.',
    'Ivan/np Allen/np Jr./np ./.', '',
  ].join('\n');
  assert.equal(brownToText(tagged),
    'The Fulton jury said.\n\nMerger proposed\n\nIt is, I think, fine; Far from it? Ivan Allen Jr.');
  // Slashes inside words survive; only the last one is the tag.
  assert.equal(brownToText('\t1/2/cd inch/nn and/or/cc more/ap ./.'), '1/2 inch and/or more.');
});

// A tag left behind: `word/nn`, `./.`, `,/,` (units like `B.t.u./sq.` and `/r/` are text).
const TAG = /\S\/(?:nn|nns|np|at|in|jj|vb|vbd|vbn|vbz|cc|rb|pps|ppss|cd|to|md|dt|be|bez|hv)(?:-[a-z]+)?(?=[\s]|$)|[.;?!:,]\/[.,:](?=\s|$)|``|(?<!\d)''/m;

test('readBrown: the 500 Brown Corpus samples as clean English text', () => {
  const docs = readBrown();
  assert.equal(docs.length, 500);
  assert.equal(docs[0]!.id, 'brown/ca01');
  assert.equal(docs.at(-1)!.id, 'brown/cr09');
  assert.ok(docs[0]!.text.startsWith('The Fulton County Grand Jury said Friday an investigation of ' +
    'Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.'));
  let bytes = 0;
  const words = new Map<string, number>();
  for (const d of docs) {
    assert.ok(!TAG.test(d.text), `${d.id}: ${TAG.exec(d.text)?.[0]}`);
    bytes += d.text.length;
    for (const w of d.text.toLowerCase().match(/[a-z]+/g) ?? []) words.set(w, (words.get(w) ?? 0) + 1);
  }
  assert.ok(bytes > 5e6 && bytes < 7e6, `${bytes} bytes`);
  const top = [...words].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([w]) => w);
  assert.deepEqual(top.slice(0, 3), ['the', 'of', 'and']);
  // Punctuation attaches to the word before it almost everywhere.
  const all = docs.map((d) => d.text).join('\n');
  const spaced = (all.match(/\w [,.;:?!]/g) ?? []).length;
  const attached = (all.match(/\w[,.;:?!]/g) ?? []).length;
  assert.ok(spaced < attached / 1000, `${spaced} spaced vs ${attached} attached`);
});

test('readNlpCorpus: 100,000 English sentences; grouping; missing folder', () => {
  const docs = readNlpCorpus();
  assert.equal(docs.length, 100000);
  assert.equal(docs[0]!.id, 'nlp-corpus/doc-0/0');
  assert.equal(new Set(docs.map((d) => d.id)).size, docs.length);
  let bytes = 0;
  let the = 0;
  for (const d of docs) {
    assert.ok(d.text.length > 0 && d.text === d.text.trim());
    bytes += Buffer.byteLength(d.text);
    if (/\bthe\b/i.test(d.text)) the++;
  }
  assert.ok(bytes > 8e6, `${bytes} bytes`);
  assert.ok(the > 30000, `${the} sentences with "the"`);
  const grouped = readNlpCorpus({ sentencesPerDoc: 10 });
  assert.equal(grouped.length, 10000);
  assert.equal(grouped[0]!.text, docs.slice(0, 10).map((d) => d.text).join(' '));
  withTmp((dir) => {
    assert.throws(() => readNlpCorpus({ dir: join(dir, 'x') }), isDsError('MISSING_FILE', /x/));
    assert.throws(() => readNlpCorpus({ dir }), isDsError('BAD_INPUT', /empty corpus/));
    writeFileSync(join(dir, 'doc-0.json'), '{"not": "an array"}');
    assert.throws(() => readNlpCorpus({ dir }), isDsError('BAD_INPUT', /doc-0\.json/));
  });
});

test('readCorpus: sources in order; no sources is an empty corpus', () => {
  withTmp((dir) => {
    writeFileSync(join(dir, 'a.txt'), 'hello');
    writeFileSync(join(dir, 'b.jsonl'), '{"t":"world"}\n');
    const docs = readCorpus([{ kind: 'text', path: join(dir, 'a.txt') }, { kind: 'jsonl', path: join(dir, 'b.jsonl'), field: 't' }]);
    assert.deepEqual(docs.map((d) => d.text), ['hello', 'world']);
    assert.throws(() => readCorpus([]), isDsError('BAD_INPUT', /empty corpus/));
    assert.throws(() => readCorpus([{ kind: 'text', path: join(dir, 'zz.txt') }]), isDsError('MISSING_FILE', /zz\.txt/));
  });
});

const docsN = (n: number): Doc[] => Array.from({ length: n }, (_, i) => ({ id: `d${i}`, text: `doc ${i}` }));

test('splitDocs: deterministic, disjoint, complete, order-independent, seeded', () => {
  const docs = docsN(1000);
  const a = splitDocs(docs, { seed: 1 });
  const b = splitDocs(docs, { seed: 1 });
  assert.deepEqual(a, b);
  assert.equal(a.val.length, 20);
  assert.equal(a.train.length, 980);
  const ids = new Set(a.val.map((d) => d.id));
  assert.ok(a.train.every((d) => !ids.has(d.id)));
  assert.deepEqual([...a.train, ...a.val].map((d) => d.id).sort(), docs.map((d) => d.id).sort());
  // Both halves keep input order.
  const pos = (d: Doc) => Number(d.id.slice(1));
  assert.ok(a.train.every((d, i) => i === 0 || pos(a.train[i - 1]!) < pos(d)));
  // Membership depends on ids, not on order.
  const r = splitDocs([...docs].reverse(), { seed: 1 });
  assert.deepEqual(new Set(r.val.map((d) => d.id)), ids);
  // Another seed, another split; adding documents keeps most of the old val set.
  const c = splitDocs(docs, { seed: 2 });
  assert.notDeepEqual(new Set(c.val.map((d) => d.id)), ids);
  const more = splitDocs(docsN(1050), { seed: 1 });
  const kept = more.val.filter((d) => ids.has(d.id)).length;
  assert.ok(kept >= 15, `${kept} of 20 kept`);
  // Small corpora: at least one val doc, at least one train doc.
  assert.equal(splitDocs(docsN(3)).val.length, 1);
  assert.equal(splitDocs(docsN(1)).val.length, 0);
  assert.equal(splitDocs(docsN(10), { valFraction: 0 }).val.length, 0);
  // Duplicate ids still split deterministically, each copy on its own.
  const dup = splitDocs([...docsN(50), ...docsN(50)], { valFraction: 0.1 });
  assert.equal(dup.val.length, 10);
  assert.throws(() => splitDocs([]), isDsError('BAD_INPUT', /empty corpus/));
  assert.throws(() => splitDocs(docs, { valFraction: 1 }), isDsError('BAD_INPUT', /valFraction/));
});

// A tokenizer stand-in: one id per UTF-16 unit, shifted past the specials.
const fakeTok: DocEncoder = {
  bosId: 0,
  eosId: 1,
  encode: (text: string) => Array.from(text, (c) => c.charCodeAt(0) + 10),
};

test('packDocs: every document token once, in order, with BOS/EOS separators', () => {
  const docs: Doc[] = [{ id: 'a', text: 'abc' }, { id: 'b', text: 'de' }, { id: 'c', text: '' }];
  const c = (s: string) => s.charCodeAt(0) + 10;
  assert.deepEqual([...packDocs(docs, fakeTok)], [0, c('a'), c('b'), c('c'), 1, 0, c('d'), c('e'), 1, 0, 1]);
  assert.deepEqual([...packDocs(docs, fakeTok, { separator: 'bos' })], [0, c('a'), c('b'), c('c'), 0, c('d'), c('e'), 0]);
  assert.deepEqual([...packDocs(docs, fakeTok, { separator: 'eos' })], [c('a'), c('b'), c('c'), 1, c('d'), c('e'), 1, 1]);
  // Large input: grows past the initial buffer, nothing lost.
  const big = docsN(20000);
  const toks = packDocs(big, fakeTok);
  const want = big.reduce((n, d) => n + d.text.length + 2, 0);
  assert.equal(toks.length, want);
  assert.throws(() => packDocs([], fakeTok), isDsError('BAD_INPUT', /empty corpus/));
});

test('packDocs with a trained Tokenizer: documents come back between BOS and EOS', () => {
  const docs = readBrown().slice(0, 3).map((d) => ({ id: d.id, text: d.text.slice(0, 3000) }));
  docs.push({ id: 'x', text: 'Émoji 👍, 東京, tabs\t\tand  spaces\n' });
  const tok = Tokenizer.fromFiles(trainBpe(docs.map((d) => d.text), { vocabSize: 600 }), tokenizerConfig());
  const stream = packDocs(docs, tok);
  const texts: string[] = [];
  let start = -1;
  stream.forEach((id, i) => {
    if (id === tok.bosId) start = i + 1;
    else if (id === tok.eosId) texts.push(tok.decode(stream.subarray(start, i)));
  });
  assert.deepEqual(texts, docs.map((d) => d.text));
});

test('WindowSampler: windows cover the stream once, targets shift by one, overlap by one', () => {
  const tokens = Int32Array.from({ length: 103 }, (_, i) => i);
  const s = new WindowSampler(tokens, 10, { seed: 3 });
  assert.equal(s.numWindows, 10);
  const seen = new Uint8Array(tokens.length);
  const order: number[] = [];
  for (let k = 0; k < 10; k++) {
    const w = s.next();
    assert.equal(w.epoch, 0);
    assert.equal(w.tokens.length, 11);
    assert.equal(w.tokens[0], w.window * 10);
    for (let i = 0; i < 10; i++) seen[w.tokens[i]!]!++;
    order.push(w.window);
  }
  // Every token of the first 100 is an input exactly once; the 3 left over are unused.
  assert.deepEqual([...seen.subarray(0, 100)], new Array(100).fill(1));
  assert.deepEqual([...seen.subarray(100)], [0, 0, 0]);
  assert.deepEqual([...order].sort((a, b) => a - b), [...Array(10).keys()]);
  assert.notDeepEqual(order, [...Array(10).keys()]);
  // Consecutive windows share one token: the last target of w is the first input of w + 1.
  for (let w = 0; w + 1 < 10; w++) assert.equal(s.window(w)[10], s.window(w + 1)[0]);
  // A new epoch, a new order; the same seed gives the same orders.
  const e1 = Array.from({ length: 10 }, () => s.next());
  assert.ok(e1.every((w) => w.epoch === 1));
  assert.notDeepEqual(e1.map((w) => w.window), order);
  const t = new WindowSampler(tokens, 10, { seed: 3 });
  assert.deepEqual(Array.from({ length: 20 }, () => t.next().window), [...order, ...e1.map((w) => w.window)]);
  // Unshuffled: stream order.
  const u = new WindowSampler(tokens, 10, { shuffle: false });
  assert.deepEqual(Array.from({ length: 12 }, () => u.next().window), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
  // Batches: targets are inputs shifted by one.
  const { inputs, targets } = new WindowSampler(tokens, 10, { seed: 9 }).nextBatch(4);
  assert.equal(inputs.length, 40);
  for (let i = 0; i < 40; i++) assert.equal(targets[i], inputs[i]! + 1);
});

test('WindowSampler: a saved state resumes the exact stream, across epochs', () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1009);
  const a = new WindowSampler(tokens, 16, { seed: 42 });
  for (let k = 0; k < 50; k++) a.next(); // numWindows = 62: stop inside epoch 0
  const saved = JSON.parse(JSON.stringify(a.state()));
  assert.deepEqual(saved, { seed: 42, shuffle: true, seqLen: 16, numWindows: 62, epoch: 0, index: 50 });
  const b = new WindowSampler(tokens, 16, { state: saved });
  for (let k = 0; k < 100; k++) {
    const x = a.next();
    const y = b.next();
    assert.deepEqual([y.window, y.epoch], [x.window, x.epoch]);
    assert.deepEqual(y.tokens, x.tokens);
  }
  assert.deepEqual(b.state(), a.state());
  // Resuming exactly at an epoch boundary.
  const c = new WindowSampler(tokens, 16, { seed: 1 });
  for (let k = 0; k < 62; k++) c.next();
  const d = new WindowSampler(tokens, 16, { state: c.state() });
  assert.deepEqual(d.next(), c.next());
  // A state for other data or another seqLen is refused.
  assert.throws(() => new WindowSampler(tokens.subarray(0, 500), 16, { state: saved }), isDsError('BAD_INPUT', /windows/));
  assert.throws(() => new WindowSampler(tokens, 8, { state: saved }), isDsError('BAD_INPUT', /seqLen/));
  assert.throws(() => new WindowSampler(tokens, 16, { state: { ...saved, index: 99 } }), isDsError('BAD_INPUT', /position/));
  assert.throws(() => new WindowSampler(tokens.subarray(0, 16), 16), isDsError('BAD_INPUT', /too small/));
  assert.throws(() => new WindowSampler(tokens, 0), isDsError('BAD_INPUT', /seqLen/));
});
