// TrainKernels conformance: every backward op against central differences of its forward,
// the reference Kernels op, in float64. The reference kernels are plain loops over their
// arguments, so fed Float64Array buffers they compute in float64; that makes the finite
// differences accurate to ~1e-9 and the check tight. The same suite runs for every
// TrainKernels implementation.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { refKernels as K } from './ref/index.ts';
import { refTrainKernels } from './ref/train.ts';
import type { RouteParams } from './kernels.ts';
import type { TrainKernels } from './train.ts';
import { Rng } from '../tensor/random.ts';

const IMPLS: TrainKernels[] = [refTrainKernels];

/** A float64 buffer passed where the kernels expect float32 (see the file comment). */
const as32 = (x: Float64Array) => x as unknown as Float32Array;

function randn(n: number, rng: Rng, scale = 1): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal() * scale);
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Check grad (the backward's answer) against central differences of loss() in every entry
 * of x: |fd − grad| ≤ tol · (1 + max|grad|).
 */
function checkGrad(name: string, x: Float64Array, grad: ArrayLike<number>, loss: () => number, h = 1e-6, tol = 1e-6) {
  let scale = 1;
  for (let i = 0; i < grad.length; i++) scale = Math.max(scale, Math.abs(grad[i]));
  for (let i = 0; i < x.length; i++) {
    const old = x[i];
    x[i] = old + h;
    const lp = loss();
    x[i] = old - h;
    const lm = loss();
    x[i] = old;
    const fd = (lp - lm) / (2 * h);
    assert.ok(Math.abs(fd - grad[i]) <= tol * scale, `${name}[${i}]: backward ${grad[i]}, differences ${fd}`);
  }
}

for (const TK of IMPLS) {
  describe(`TrainKernels [${TK.name}] against float64 finite differences`, () => {
    const rng = new Rng(7);

    it('rmsNormBackward', () => {
      const M = 3;
      const D = 8;
      const x = randn(M * D, rng);
      const w = randn(D, rng);
      const dy = randn(M * D, rng);
      const loss = () => {
        const y = new Float64Array(M * D);
        K.rmsNorm(as32(y), as32(x), as32(w), M, 1e-6);
        return dot(y, dy);
      };
      const dx = new Float64Array(M * D);
      const dw = new Float64Array(D).fill(0.5); // accumulated onto
      TK.rmsNormBackward(as32(dx), as32(dw), as32(dy), as32(x), as32(w), M, 1e-6);
      checkGrad('dx', x, dx, loss);
      checkGrad('dw', w, dw.map((v) => v - 0.5), loss);
    });

    it('ropeBackward (rotation by the opposite angle)', () => {
      const T = 3;
      const H = 2;
      const stride = 10;
      const offset = 4;
      const pos = Int32Array.from([0, 5, 17]);
      const freqs = Float32Array.from([1, 0.3, 0.01]);
      const x = randn(T * H * stride, rng);
      const dy = randn(T * H * stride, rng);
      const loss = () => {
        const y = x.slice();
        K.rope(as32(y), T, H, stride, offset, pos, freqs);
        return dot(y, dy);
      };
      const dx = dy.slice();
      TK.ropeBackward(as32(dx), T, H, stride, offset, pos, freqs);
      checkGrad('dx', x, dx, loss);
    });

    it('siluMulBackward', () => {
      const n = 12;
      const g = randn(n, rng, 3);
      const u = randn(n, rng);
      const dy = randn(n, rng);
      const loss = () => {
        const y = new Float64Array(n);
        K.siluMul(as32(y), as32(g), as32(u), n);
        return dot(y, dy);
      };
      const dg = new Float64Array(n);
      const du = new Float64Array(n);
      TK.siluMulBackward(as32(dg), as32(du), as32(dy), as32(g), as32(u), n);
      checkGrad('dgate', g, dg, loss);
      checkGrad('dup', u, du, loss);
    });

    it('attentionBackward, with earlier cached positions (p0 > 0)', () => {
      const [T, H, Dk, Dv, p0, scale] = [3, 2, 5, 4, 2, 0.7];
      const S = p0 + T;
      const q = randn(T * H * Dk, rng);
      const k = randn(S * H * Dk, rng);
      const v = randn(S * H * Dv, rng);
      const dy = randn(T * H * Dv, rng);
      const loss = () => {
        const y = new Float64Array(T * H * Dv);
        K.attention(as32(y), as32(q), as32(k), as32(v), T, H, Dk, Dv, p0, scale);
        return dot(y, dy);
      };
      const dq = new Float64Array(q.length);
      const dk = new Float64Array(k.length);
      const dv = new Float64Array(v.length);
      TK.attentionBackward(as32(dq), as32(dk), as32(dv), as32(dy), as32(q), as32(k), as32(v), T, H, Dk, Dv, p0, scale);
      checkGrad('dq', q, dq, loss);
      checkGrad('dk', k, dk, loss);
      checkGrad('dv', v, dv, loss);
    });

    it('attnLatentBackward (the latent is key and value)', () => {
      const [T, H, C, R, p0, scale] = [3, 2, 6, 4, 1, 0.6];
      const S = p0 + T;
      const qLat = randn(T * H * C, rng);
      const qPe = randn(T * H * R, rng);
      const kv = randn(S * C, rng);
      const pe = randn(S * R, rng);
      const dy = randn(T * H * C, rng);
      const loss = () => {
        const y = new Float64Array(T * H * C);
        K.attnLatent(as32(y), as32(qLat), as32(qPe), as32(kv), as32(pe), T, H, C, R, p0, scale);
        return dot(y, dy);
      };
      const g = [qLat, qPe, kv, pe].map((a) => new Float64Array(a.length));
      TK.attnLatentBackward(
        as32(g[0]), as32(g[1]), as32(g[2]), as32(g[3]), as32(dy),
        as32(qLat), as32(qPe), as32(kv), as32(pe), T, H, C, R, p0, scale,
      );
      checkGrad('dqLat', qLat, g[0], loss);
      checkGrad('dqPe', qPe, g[1], loss);
      checkGrad('dkv', kv, g[2], loss);
      checkGrad('dpe', pe, g[3], loss);
    });

    // moeRoute rounds the scores and weights to float32, so these differences carry ~5e-5
    // of noise: a larger step and tolerance. The logits are spread apart so that no choice
    // flips under the step.
    const route = (topk: number, scoring: 'sigmoid' | 'softmax', normalize: boolean, scale: number) =>
      ({ topk, nGroup: 1, topkGroup: 1, scoring, bias: null, normalize, scale }) as RouteParams;
    const bias = Float32Array.from([0.1, -0.1, 0, 0.05, 0, 0.2, -0.2, 0]);
    const routes: [string, RouteParams][] = [
      ['sigmoid, bias, groups, renormalised (V3)', { ...route(3, 'sigmoid', true, 2.5), nGroup: 2, bias }],
      ['softmax, not renormalised (V2)', route(3, 'softmax', false, 1)],
      ['softmax, renormalised', route(2, 'softmax', true, 1.5)],
    ];
    for (const [label, p] of routes) {
      it(`moeRouteBackward: ${label}`, () => {
        const [T, E] = [4, 8];
        const logits = Float64Array.from({ length: T * E }, (_, i) => ((i * 5) % E) * 0.4 - 1.3 + (i % 3) * 0.01);
        const dw = randn(T * p.topk, rng);
        const idx0 = new Int32Array(T * p.topk);
        const run = () => {
          const idx = new Int32Array(T * p.topk);
          const w = new Float32Array(T * p.topk);
          K.moeRoute(idx, w, as32(logits), T, E, p);
          return { idx, w };
        };
        idx0.set(run().idx);
        const loss = () => {
          const r = run();
          assert.deepEqual(r.idx, idx0, 'the expert choice flipped');
          return dot(r.w, dw);
        };
        const dl = new Float64Array(T * E);
        TK.moeRouteBackward(as32(dl), as32(dw), as32(logits), idx0, T, E, p);
        checkGrad('dlogits', logits, dl, loss, 1e-3, 2e-4);
      });
    }

    it('scatterAddRowsBackward', () => {
      const [n, D, rowsOut] = [5, 3, 4];
      const rows = Int32Array.from([2, 0, 2, 3, 1]);
      const src = randn(n * D, rng);
      const w = randn(n, rng);
      const dy = randn(rowsOut * D, rng);
      const loss = () => {
        const y = new Float64Array(rowsOut * D);
        K.scatterAddRows(as32(y), as32(src), rows, as32(w), D);
        return dot(y, dy);
      };
      const dsrc = new Float64Array(n * D);
      const dwts = new Float64Array(n);
      TK.scatterAddRowsBackward(as32(dsrc), as32(dwts), as32(dy), as32(src), rows, as32(w), D);
      checkGrad('dsrc', src, dsrc, loss);
      checkGrad('dweights', w, dwts, loss);
    });

    it('crossEntropy: loss, gradient, skipped rows', () => {
      const [M, V] = [3, 7];
      const logits = randn(M * V, rng, 2);
      const targets = Int32Array.from([4, -1, 0]);
      const loss = () => {
        let s = 0;
        for (let m = 0; m < M; m++) {
          if (targets[m] < 0) continue;
          const row = logits.subarray(m * V, (m + 1) * V);
          s += Math.log(row.reduce((a, v) => a + Math.exp(v), 0)) - row[targets[m]];
        }
        return s;
      };
      const dl = new Float64Array(M * V).fill(9);
      const total = TK.crossEntropy(as32(dl), as32(logits), targets, M, V, 1);
      assert.ok(Math.abs(total - loss()) < 1e-12);
      assert.deepEqual([...dl.subarray(V, 2 * V)], new Array(V).fill(0));
      checkGrad('dlogits', logits, dl, loss);
      const half = new Float64Array(M * V);
      TK.crossEntropy(as32(half), as32(logits), targets, M, V, 0.5);
      half.forEach((v, i) => assert.ok(Math.abs(v - 0.5 * dl[i]) < 1e-15));
    });
  });
}
