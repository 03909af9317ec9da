// Sampler: chi-square goodness of fit against independently computed (truncated, renormalised)
// distributions, determinism, greedy, penalties; the PRNG against xoshiro128**'s reference.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, logprobs, type SamplingParams } from './sampler.ts';
import { DsError } from '../errors.ts';

const LOGITS = [1.0, 2.0, 0.5, -1.0, 1.5];
const DRAWS = 20000;
// Chi-square critical values at p = 0.001, by degrees of freedom.
const CHI2_001: Record<number, number> = { 1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467 };

function softmax(l: number[], t = 1): number[] {
  const m = l.reduce((a, b) => Math.max(a, b), -Infinity);
  const e = l.map((v) => Math.exp((v - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function renorm(p: number[], keep: (i: number) => boolean): number[] {
  const q = p.map((v, i) => (keep(i) ? v : 0));
  const s = q.reduce((a, b) => a + b, 0);
  return q.map((v) => v / s);
}

// Indices by descending probability.
const order = (p: number[]) => p.map((_, i) => i).sort((a, b) => p[b]! - p[a]!);

function expectTopK(p: number[], k: number): number[] {
  const kept = new Set(order(p).slice(0, k));
  return renorm(p, (i) => kept.has(i));
}

function expectTopP(p: number[], top: number): number[] {
  const kept = new Set<number>();
  let cum = 0;
  for (const i of order(p)) {
    kept.add(i);
    cum += p[i]!;
    if (cum >= top) break;
  }
  return renorm(p, (i) => kept.has(i));
}

function expectMinP(p: number[], min: number): number[] {
  const top = p.reduce((a, b) => Math.max(a, b), 0);
  return renorm(p, (i) => p[i]! >= min * top);
}

function draw(params: SamplingParams, logits = LOGITS, n = DRAWS): number[] {
  const s = new Sampler(params);
  const x = Float32Array.from(logits);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[s.sample(x, [])]!++;
  return counts;
}

function chiSquareFits(counts: number[], expected: number[], what: string): void {
  const n = counts.reduce((a, b) => a + b, 0);
  let chi2 = 0;
  let cats = 0;
  for (let i = 0; i < counts.length; i++) {
    if (expected[i] === 0) {
      assert.equal(counts[i], 0, `${what}: token ${i} is filtered out yet was drawn`);
      continue;
    }
    const e = expected[i]! * n;
    chi2 += (counts[i]! - e) ** 2 / e;
    cats++;
  }
  const df = cats - 1;
  assert.ok(df >= 1, `${what}: needs at least two tokens left`);
  assert.ok(chi2 < CHI2_001[df]!,
    `${what}: chi2 = ${chi2.toFixed(2)} >= ${CHI2_001[df]} (df ${df}), counts ${counts}`);
}

test('temperature 1 and 0.7: chi-square fit to softmax(logits / T)', () => {
  chiSquareFits(draw({ seed: 1 }), softmax(LOGITS), 'T=1');
  chiSquareFits(draw({ seed: 2, temperature: 0.7 }), softmax(LOGITS, 0.7), 'T=0.7');
  chiSquareFits(draw({ seed: 3, temperature: 2.5 }), softmax(LOGITS, 2.5), 'T=2.5');
});

test('top-k, top-p, min-p: chi-square fit to the truncated, renormalised distribution', () => {
  const p = softmax(LOGITS);
  chiSquareFits(draw({ seed: 4, topK: 3 }), expectTopK(p, 3), 'topK=3');
  chiSquareFits(draw({ seed: 5, topK: 2 }), expectTopK(p, 2), 'topK=2');
  chiSquareFits(draw({ seed: 6, topP: 0.8 }), expectTopP(p, 0.8), 'topP=0.8');
  chiSquareFits(draw({ seed: 7, topP: 0.95 }), expectTopP(p, 0.95), 'topP=0.95');
  chiSquareFits(draw({ seed: 8, minP: 0.3 }), expectMinP(p, 0.3), 'minP=0.3');
  const pt = softmax(LOGITS, 0.8);
  chiSquareFits(draw({ seed: 9, temperature: 0.8, topK: 4, topP: 0.9 }),
    expectTopP(expectTopK(pt, 4), 0.9), 'T=0.8 topK=4 topP=0.9');
  assert.deepEqual(draw({ seed: 10, topK: 1 }, LOGITS, 200), [0, 200, 0, 0, 0]);
  assert.deepEqual(draw({ seed: 11, topP: 0.01 }, LOGITS, 200), [0, 200, 0, 0, 0]);
});

// The ids a sampler can draw: the support of its distribution().
function support(params: SamplingParams, logits: number[]): Set<number> {
  const d = new Sampler(params).distribution(Float32Array.from(logits), []);
  return new Set([...d].flatMap((v, i) => (v > 0 ? [i] : [])));
}

test('distribution() is the truncated, renormalised softmax', () => {
  const p = softmax(LOGITS, 0.8);
  const want = expectTopP(expectTopK(p, 4), 0.9);
  const got = new Sampler({ temperature: 0.8, topK: 4, topP: 0.9 })
    .distribution(Float32Array.from(LOGITS));
  for (let i = 0; i < LOGITS.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-12);
  assert.deepEqual([...new Sampler({ temperature: 0 }).distribution(Float32Array.from(LOGITS))],
    [0, 1, 0, 0, 0]);
});

test('many tokens: top-k, top-p and min-p keep exactly the expected set', () => {
  // 129280 distinct-ish logits in scrambled order; the large-k and top-p paths bucket them.
  const logits = Array.from({ length: 129280 }, (_, i) => ((i * 7919) % 129280) / 10000);
  const byRank = order(logits);
  for (const k of [1, 5, 256, 257, 400, 60000]) {
    assert.deepEqual(support({ topK: k, temperature: 0.7 }, logits), new Set(byRank.slice(0, k)),
      `topK=${k}`);
  }
  const p = softmax(logits, 0.7);
  const ids = (q: number[]) => new Set(q.flatMap((v, i) => (v > 0 ? [i] : [])));
  for (const top of [0.001, 0.3, 0.77, 0.999]) {
    assert.deepEqual(support({ topP: top, temperature: 0.7 }, logits), ids(expectTopP(p, top)),
      `topP=${top}`);
  }
  for (const m of [0.01, 0.5]) {
    assert.deepEqual(support({ minP: m, temperature: 0.7 }, logits), ids(expectMinP(p, m)),
      `minP=${m}`);
  }
  // Ties at the k-th value are all kept (as transformers); at the top-p cut, lower ids first.
  assert.deepEqual(support({ topK: 2 }, [3, 2, 2, 2, 1]), new Set([0, 1, 2, 3]));
  assert.deepEqual(support({ topP: 0.5 }, [0, 0, 0, 0]), new Set([0, 1]));
  assert.deepEqual(support({ topP: 0.5 }, [-1, 0, 0, 0, 0]), new Set([1, 2, 3])); // 0.46 < 0.5
});

test('same seed, same sequence; different seeds differ', () => {
  const logits = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
  const seq = (seed: number) => {
    const s = new Sampler({ seed, temperature: 1.2, topP: 0.95 });
    return Array.from({ length: 200 }, () => s.sample(logits, []));
  };
  assert.deepEqual(seq(42), seq(42));
  assert.notDeepEqual(seq(42), seq(43));
  assert.notDeepEqual(seq(0), seq(2 ** 32)); // both halves of the seed count
  const unseeded = () => {
    const s = new Sampler({ temperature: 1.2 });
    return Array.from({ length: 200 }, () => s.sample(logits, []));
  };
  assert.notDeepEqual(unseeded(), unseeded());
});

test('greedy: argmax, lowest id on ties, NaN ignored; logits not modified', () => {
  const s = new Sampler({ temperature: 0 });
  assert.equal(s.greedy, true);
  assert.equal(s.sample(Float32Array.from(LOGITS), []), 1);
  assert.equal(s.sample(Float32Array.from([0, 5, 1, 5, 5]), []), 1);
  assert.equal(s.sample(Float32Array.from([NaN, -Infinity, -3]), []), 2);
  const x = Float32Array.from([1, 2, 3]);
  new Sampler({ seed: 1, repetitionPenalty: 2, frequencyPenalty: 1 }).sample(x, [2, 2]);
  assert.deepEqual([...x], [1, 2, 3]);
  assert.throws(() => s.sample(Float32Array.from([NaN, -Infinity]), []),
    (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT');
});

test('penalties change the argmax as expected', () => {
  const g = (p: SamplingParams, logits: number[], history: ArrayLike<number>) =>
    new Sampler({ temperature: 0, ...p }).sample(Float32Array.from(logits), history);
  // Repetition: positive logits divided, negative multiplied.
  assert.equal(g({ repetitionPenalty: 1.5 }, [2.0, 1.9], [0]), 1); // 2/1.5 < 1.9
  assert.equal(g({ repetitionPenalty: 1.01 }, [2.0, 1.9], [0]), 0);
  assert.equal(g({ repetitionPenalty: 2 }, [-1.0, -1.2], [0]), 1); // -2 < -1.2
  assert.equal(g({ repetitionPenalty: 2 }, [-1.0, -1.2], [0, 0, 0]), 1); // applied once
  assert.equal(g({ repetitionPenalty: 0.5 }, [1.0, 1.9], [0]), 0); // < 1 favours repeats
  // Frequency scales with the count; presence does not.
  assert.equal(g({ frequencyPenalty: 0.2 }, [3, 2.5], [0, 0, 0]), 1); // 3 - 0.6
  assert.equal(g({ frequencyPenalty: 0.2 }, [3, 2.5], [0, 0]), 0); // 3 - 0.4
  assert.equal(g({ presencePenalty: 0.6 }, [3, 2.5], [0]), 1);
  assert.equal(g({ presencePenalty: 0.4 }, [3, 2.5], [0, 0, 0, 0]), 0);
  assert.equal(g({ frequencyPenalty: -1 }, [2, 2.5], [0]), 0); // negative encourages
  assert.equal(g({ presencePenalty: 0.6 }, [3, 2.5], new Uint32Array([1])), 0);
  assert.throws(() => g({ presencePenalty: 1 }, [3, 2.5], [2]),
    (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && /history\[0\]/.test(e.message));
});

test('a full-size vocabulary samples quickly and within the nucleus', () => {
  const n = 129280;
  const logits = Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 1000) / 100);
  const s = new Sampler({ seed: 5, topP: 0.9, temperature: 0.6 });
  const lp = logprobs(logits);
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) {
    const id = s.sample(logits, [1, 2, 3]);
    assert.ok(lp[id]! > -20);
  }
  assert.ok(performance.now() - t0 < 2000);
});

test('logprobs is log-softmax', () => {
  const lp = logprobs(Float32Array.from(LOGITS));
  const p = softmax(LOGITS);
  for (let i = 0; i < p.length; i++) assert.ok(Math.abs(lp[i]! - Math.log(p[i]!)) < 1e-6);
  const inf = logprobs(Float32Array.from([0, -Infinity]));
  assert.equal(inf[0], 0);
  assert.equal(inf[1], -Infinity);
});

test('bad parameters are BAD_INPUT naming the field', () => {
  const cases: [SamplingParams, string][] = [
    [{ temperature: -1 }, 'temperature'], [{ temperature: NaN }, 'temperature'],
    [{ topK: 1.5 }, 'topK'], [{ topK: -1 }, 'topK'], [{ topP: 0 }, 'topP'],
    [{ topP: 1.1 }, 'topP'], [{ minP: 2 }, 'minP'], [{ repetitionPenalty: 0 }, 'repetitionPenalty'],
    [{ frequencyPenalty: Infinity }, 'frequencyPenalty'], [{ seed: 1.5 }, 'seed'],
  ];
  for (const [p, field] of cases) {
    assert.throws(() => new Sampler(p), (e: unknown) =>
      e instanceof DsError && e.code === 'BAD_INPUT' && e.message.startsWith(field));
  }
});

test('limitVocab: ids past the tokenizer are never picked, greedy or sampled, and get no probability', () => {
  // The padding rows (ids 3 and 4) hold the largest logits.
  const logits = Float32Array.from([0.5, 1.0, 0.2, 9.0, 8.0]);
  for (const params of [{ temperature: 0 }, { temperature: 0, repetitionPenalty: 1.2 }, { temperature: 1, seed: 3 }, { temperature: 2, topP: 0.9, seed: 4 }] as SamplingParams[]) {
    const s = new Sampler(params);
    s.limitVocab(3);
    for (let i = 0; i < 200; i++) assert.ok(s.sample(logits, [0]) < 3, JSON.stringify(params));
    const p = s.distribution(logits, [0]);
    assert.equal(p[3], 0);
    assert.equal(p[4], 0);
    assert.ok(Math.abs(p[0]! + p[1]! + p[2]! - 1) < 1e-12);
  }
  const greedy = new Sampler({ temperature: 0 });
  greedy.limitVocab(3);
  assert.equal(greedy.sample(logits), 1);
  assert.throws(() => greedy.limitVocab(0), (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT');
});
