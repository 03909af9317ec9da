// Kernels.sampleBatch: the native sampler against the reference (ref/sample.ts, the numbers of
// engine/sampler.ts's Sampler): the same ids, the same use of the draw and the same logprob bits,
// for many draws over a grid of temperatures, top-k / top-p / min-p, penalties, grammar masks,
// vocabulary limits and logprob requests, on peaked, flat and tied logits, at every instruction
// level; plus V8's Math.exp / log / log2 ported bit for bit, batch invariance, a Sampler's stream
// through batchRow / settle, and the edge cases (all masked but one, nothing allowed, NaN and
// infinite logits, ties).

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Kernels, SampleResult, SampleRow } from './kernels.ts';
import { refKernels } from './ref/index.ts';
import { loadNative, nativeAddon, nativeInfo, nativeLoadError, nativeMathMatches, setNativeLevel, setThreads } from './native.ts';
import { Sampler } from '../engine/sampler.ts';
import { Rng } from '../tensor/random.ts';
import { DsError } from '../errors.ts';

const native = loadNative();
const addon = nativeAddon();
const info = nativeInfo();
// The native sampler runs when the addon has it and reproduces this Node's Math functions
// (otherwise native.ts samples with the reference, which the comparisons would not test).
const why = !native || !addon ? `native kernels unavailable (${nativeLoadError()})`
  : typeof addon.sampleBatch !== 'function' ? 'the built addon predates sampleBatch (rebuild: npm run build:native)'
  : !nativeMathMatches(addon) ? "this Node's Math.exp/log/log2 are not fdlibm's: native.ts samples with the reference"
  : null;

after(() => {
  if (info) {
    setNativeLevel(info.level);
    setThreads(info.threads);
  }
});

const BASE: Omit<SampleRow, 'row' | 'u'> = {
  temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0,
  vocab: Infinity, history: null, mask: null, logprobs: -1,
};

/** Logits rows of a kind: LLM-like (a few large values over a long tail), flat, or tied. */
function logitsRows(kind: 'peaked' | 'flat' | 'tied' | 'special', V: number, rows: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(V * rows);
  for (let i = 0; i < x.length; i++) {
    const n = rng.normal();
    if (kind === 'peaked') x[i] = 2 * n + (rng.uniform() < 0.002 ? 6 + 8 * rng.uniform() : 0);
    else if (kind === 'flat') x[i] = 0.5 * n;
    else if (kind === 'tied') x[i] = Math.round(n * 2) / 2; // a handful of distinct values
    else x[i] = rng.uniform() < 0.01 ? -Infinity : rng.uniform() < 0.005 ? Number.NaN : 3 * n;
  }
  return x;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)]!;

/** A mask of a kind over V ids. */
function maskOf(kind: string, V: number, rng: Rng): Int32Array | Uint32Array | null {
  const words = Math.ceil(V / 32);
  const m = new Int32Array(words);
  const allow = (id: number) => { m[id >> 5]! |= 1 << (id & 31); };
  switch (kind) {
    case 'half': for (let i = 0; i < V; i++) if (rng.uniform() < 0.5) allow(i); return m;
    case 'sparse': for (let j = 0; j < 10; j++) allow(Math.floor(rng.uniform() * V)); return m;
    case 'one': allow(Math.floor(rng.uniform() * V)); return m;
    case 'none': return m;
    case 'all-but-one': { m.fill(-1); const id = Math.floor(rng.uniform() * V); m[id >> 5]! &= ~(1 << (id & 31)); return m; }
    case 'short': { // fewer words than the vocabulary: ids past it are not allowed
      const s = new Uint32Array(Math.max(1, words >> 1));
      for (let i = 0; i < s.length * 32; i++) if (rng.uniform() < 0.7) s[i >> 5]! |= 1 << (i & 31);
      return s;
    }
    default: return null;
  }
}

/** Random rows over the parameter grid. */
function gridRows(n: number, V: number, seed: number, opts: { masks?: boolean } = {}): SampleRow[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, row) => {
    const pen = pick(rng, [[1, 0, 0], [1.3, 0, 0], [1, 0.5, 0.3], [0.8, -0.2, 0.1], [1, 0, 0]] as const);
    const history = Array.from({ length: Math.floor(rng.uniform() * 40) }, () =>
      rng.uniform() < 0.5 ? Math.floor(rng.uniform() * 20) : Math.floor(rng.uniform() * V));
    return {
      ...BASE,
      row,
      temperature: pick(rng, [0, 0.7, 0.7, 1.5]),
      topK: pick(rng, [0, 0, 1, 5, 40, 300, 1000, V - 1]),
      topP: pick(rng, [1, 1, 0.95, 0.9, 0.5, 0.001, 0.999]),
      minP: pick(rng, [0, 0, 0.05, 0.5]),
      repetitionPenalty: pen[0],
      frequencyPenalty: pen[1],
      presencePenalty: pen[2],
      vocab: pick(rng, [Infinity, Infinity, V - 7]),
      u: rng.uniform(),
      history,
      mask: opts.masks ? maskOf(pick(rng, ['none-given', 'half', 'sparse', 'one', 'all-but-one', 'short', 'none']), V, rng) : null,
      logprobs: pick(rng, [-1, -1, 0, 3, 20]),
    };
  });
}

function same(K: Kernels, logits: Float32Array, V: number, rows: SampleRow[], what: string): SampleResult[] {
  const want = refKernels.sampleBatch(logits, V, rows);
  const got = K.sampleBatch(logits, V, rows);
  for (let i = 0; i < rows.length; i++) {
    const { history: _h, mask: _m, ...p } = rows[i]!;
    assert.deepStrictEqual(got[i], want[i], `${what}, row ${i}: ${JSON.stringify(p)}`);
  }
  return got;
}

describe('sampleBatch', () => {
  it('native sampler', { skip: why ?? false }, () => {});

  it("the native ports of Math.exp, Math.log and Math.log2 give this Node's bits", { skip: why ?? false }, () => {
    const n = 1 << 18;
    const rng = new Rng(1);
    const neg = new Float64Array(n);
    const pos = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      neg[i] = -rng.uniform() * [750, 40, 5, 0.7, 1e-6][i % 5]!;
      pos[i] = i % 3 === 0 ? Math.exp(neg[i]!) : rng.uniform() * 2 ** Math.floor(rng.uniform() * 80 - 60);
    }
    const out = new Float64Array(n);
    const check = (fn: number, x: Float64Array, f: (v: number) => number, name: string) => {
      addon!.jsMath(fn, x, out);
      let bad = 0;
      for (let i = 0; i < n; i++) if (!Object.is(out[i], f(x[i]!))) bad++;
      assert.equal(bad, 0, `${name}: ${bad} of ${n} values differ`);
    };
    check(0, neg, Math.exp, 'exp');
    check(1, pos, Math.log, 'log');
    check(2, pos, Math.log2, 'log2');
    for (const level of info!.levels) {
      setNativeLevel(level);
      check(3, neg, Math.exp, `exp_sum (${level})`);
    }
    setNativeLevel(info!.level);
  });

  it('the same ids, draws and logprobs as the reference over the parameter grid (V = 1000)', { skip: why ?? false }, () => {
    const V = 1000;
    for (const kind of ['peaked', 'flat', 'tied', 'special'] as const) {
      for (let b = 0; b < 6; b++) {
        const rows = gridRows(64, V, 100 * b + kind.length, { masks: b % 2 === 1 });
        same(native!, logitsRows(kind, V, rows.length, b), V, rows, `${kind} batch ${b}`);
      }
    }
  });

  it("the same at DeepSeek-V3's vocabulary (V = 129280), every instruction level", { skip: why ?? false }, () => {
    const V = 129280;
    for (const [li, level] of info!.levels.entries()) {
      setNativeLevel(level);
      for (const kind of ['peaked', 'flat'] as const) {
        const rows = gridRows(12, V, 7 + li, { masks: li === 0 });
        same(native!, logitsRows(kind, V, rows.length, 3 + li), V, rows, `${level} ${kind}`);
      }
    }
    setNativeLevel(info!.level);
  });

  it('temperatures 0 / 0.7 / 1.5 with top-k, top-p and min-p: many draws agree', { skip: why ?? false }, () => {
    const V = 4096;
    const logits = logitsRows('peaked', V, 4, 9);
    const rng = new Rng(5);
    for (const temperature of [0, 0.7, 1.5]) {
      for (const [topK, topP, minP] of [[0, 1, 0], [40, 1, 0], [0, 0.95, 0], [0, 1, 0.05], [50, 0.9, 0.02]] as const) {
        const rows = Array.from({ length: 64 }, (_, i) => ({ ...BASE, row: i % 4, temperature, topK, topP, minP, u: rng.uniform() }));
        const got = same(native!, logits, V, rows, `T=${temperature} k=${topK} p=${topP} min=${minP}`);
        if (temperature > 0) assert.ok(new Set(got.map((r) => r.id)).size > 1, 'draws pick more than one id');
      }
    }
  });

  it('a row is picked the same alone or in any batch, with any number of threads', { skip: why ?? false }, () => {
    const V = 3000;
    const rows = gridRows(16, V, 77, { masks: true });
    const logits = logitsRows('peaked', V, rows.length, 4);
    const together = native!.sampleBatch(logits, V, rows);
    for (const threads of [1, 2, 3]) {
      setThreads(threads);
      assert.deepStrictEqual(native!.sampleBatch(logits, V, rows), together, `${threads} threads`);
      for (const [i, r] of rows.entries()) assert.deepStrictEqual(native!.sampleBatch(logits, V, [r])[0], together[i]);
    }
    setThreads(info!.threads);
  });

  it('edge cases: all masked but one, nothing allowed, NaN and infinite logits, ties', () => {
    const V = 300;
    const backends = why ? [refKernels] : [refKernels, native!];
    const one = maskOf('one', V, new Rng(3))!;
    const allowed = [...Array(V).keys()].find((i) => ((one[i >> 5]! >>> (i & 31)) & 1) === 1)!;
    const logits = logitsRows('peaked', V, 1, 2);
    for (const K of backends) {
      for (const p of [{ temperature: 0 }, { temperature: 0.7, topP: 0.5 }, { temperature: 1.5, topK: 3, minP: 0.5, repetitionPenalty: 1.5 }]) {
        const [r] = K.sampleBatch(logits, V, [{ ...BASE, ...p, row: 0, u: 0.99, mask: one, history: [allowed], logprobs: 2 }]);
        assert.equal(r!.id, allowed, `${K.name} ${JSON.stringify(p)}`);
        assert.ok(Number.isFinite(r!.logprob), 'a logprob for finite logits');
      }
      const [none] = K.sampleBatch(logits, V, [{ ...BASE, row: 0, u: 0.5, mask: new Int32Array(10) }]);
      assert.deepStrictEqual(none, { id: -1, drew: false });
      // NaN never picked; +Infinity picked without a draw; ties: the lowest id.
      const x = new Float32Array(V).fill(-Infinity);
      x[5] = Number.NaN;
      x[7] = 1;
      assert.equal(K.sampleBatch(x, V, [{ ...BASE, row: 0, u: 0.3 }])[0]!.id, 7);
      x[9] = Infinity;
      assert.deepStrictEqual(K.sampleBatch(x, V, [{ ...BASE, row: 0, u: 0.3 }])[0], { id: 9, drew: false });
      const tie = new Float32Array(V).fill(2);
      assert.equal(K.sampleBatch(tie, V, [{ ...BASE, row: 0, u: 0.5, temperature: 0 }])[0]!.id, 0);
      assert.equal(K.sampleBatch(tie, V, [{ ...BASE, row: 0, u: 0.5, topP: 0.001 }])[0]!.id, 0); // the cut keeps the lowest id
      const [t] = K.sampleBatch(tie, V, [{ ...BASE, row: 0, u: 0.999, topK: 2, logprobs: 3 }]);
      assert.equal(t!.id, V - 1); // ties with the k-th are all kept
      assert.deepStrictEqual(t!.top!.map((a) => a.id), [0, 1, 2]);
      // Logprobs are NaN-free for finite logits, NaN (as the reference's log-softmax) when one is NaN.
      const [f] = K.sampleBatch(logits, V, [{ ...BASE, row: 0, u: 0.1, logprobs: 20 }]);
      assert.ok([f!.logprob!, ...f!.top!.map((a) => a.logprob)].every(Number.isFinite));
      const [n] = K.sampleBatch(x, V, [{ ...BASE, row: 0, u: 0.1, logprobs: 2 }]);
      assert.ok(Number.isNaN(n!.logprob) && n!.top!.every((a) => Number.isNaN(a.logprob)));
    }
  });

  it('bad input: a history id out of range is BAD_INPUT, a row out of range a RangeError', () => {
    const V = 50;
    const logits = new Float32Array(2 * V);
    for (const K of why ? [refKernels] : [refKernels, native!]) {
      assert.throws(() => K.sampleBatch(logits, V, [{ ...BASE, row: 0, u: 0, presencePenalty: 1, history: [3, V] }]),
        (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && /history\[1\] = 50/.test(e.message));
      assert.throws(() => K.sampleBatch(logits, V, [{ ...BASE, row: 2, u: 0 }]), RangeError);
    }
  });

  it("a Sampler's stream is the same through batchRow / sampleBatch / settle as through sample()", () => {
    const V = 2000;
    for (const K of why ? [refKernels] : [refKernels, native!]) {
      for (const params of [{ seed: 1, temperature: 0.8, topP: 0.9 }, { seed: 2, topK: 20, frequencyPenalty: 0.4 }, { seed: 3, temperature: 0 }, { seed: 4, minP: 0.1, repetitionPenalty: 1.2 }]) {
        const a = new Sampler(params);
        const b = new Sampler(params);
        a.limitVocab(V - 3);
        b.limitVocab(V - 3);
        const history: number[] = [1, 2, 3];
        for (let step = 0; step < 40; step++) {
          const logits = logitsRows('peaked', V, 1, step);
          if (step % 7 === 3) logits[11] = Infinity; // an argmax: the draw is given back
          const id = a.sample(logits, history);
          const [r] = K.sampleBatch(logits, V, [{ ...b.batchRow(history, 2), row: 0 }]);
          assert.equal(b.settle(r!), id, `${K.name} ${JSON.stringify(params)} step ${step}`);
          history.push(id);
        }
        assert.equal(a.uniform(), b.uniform(), 'the two streams are in step');
      }
    }
  });
});
