// Properties the model must have on checkpoints the golden files never showed it: other
// shapes, layer counts, group settings, V2-style routing, BF16/FP8 storage (FP8 with
// partial edge blocks), sharded files. Absorbed and naive attention agree; the KV cache
// reproduces teacher forcing; a batch of different-length sequences gives each sequence
// exactly what it gets alone.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DeepseekV3 } from './deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { DsError } from '../errors.ts';
import { Tape } from './tape.ts';
import { V2_STYLE, randomCheckpoint } from '../../test/helpers/fixtures.ts';
import { backends } from '../../test/helpers/backends.ts';
import { greedyDecode } from '../../test/helpers/greedy.ts';
import type { InitOptions } from './init.ts';

const VARIANTS: { name: string; cfg: Record<string, unknown>; opts: InitOptions }[] = [
  { name: 'V3, 2 groups, f32', cfg: {}, opts: { seed: 1 } },
  {
    name: 'V3, 4 groups keep 3, 3 layers, odd dims, bf16, sharded',
    cfg: {
      hidden_size: 72,
      num_hidden_layers: 3,
      first_k_dense_replace: 2,
      n_routed_experts: 12,
      n_group: 4,
      topk_group: 3,
      num_experts_per_tok: 3,
      n_shared_experts: 2,
      q_lora_rank: 40,
      kv_lora_rank: 24,
      qk_nope_head_dim: 12,
      qk_rope_head_dim: 6,
      v_head_dim: 20,
      num_attention_heads: 3,
    },
    opts: { dtype: 'BF16', seed: 2, maxShardBytes: 60_000 },
  },
  {
    name: 'V2-style: softmax, no bias, no q_lora, one group',
    cfg: { ...V2_STYLE },
    opts: { seed: 3 },
  },
  {
    name: 'FP8 with partial 128x128 blocks, no YaRN, no dense layer',
    cfg: {
      hidden_size: 200,
      intermediate_size: 136,
      moe_intermediate_size: 136,
      first_k_dense_replace: 0,
      q_lora_rank: 136,
      kv_lora_rank: 72,
      max_position_embeddings: 32,
    },
    opts: { dtype: 'FP8', seed: 4 },
  },
];

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function maxAbs(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

function tokens(n: number, vocab: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 37 + seed * 11 + 5) % vocab);
}

for (const v of VARIANTS) {
  describe(`model on a random checkpoint: ${v.name}`, () => {
    const dir = randomCheckpoint(v.cfg, v.opts);
    const model = DeepseekV3.load(dir, { kernels: refKernels });
    const V = model.cfg.vocab_size;
    const prompt = tokens(19, V, 1);

    it('absorbed and naive attention give the same logits', () => {
      const a = model.forward([{ ids: prompt, cache: model.newCache() }], { logits: 'all' });
      const b = model.forward([{ ids: prompt, cache: model.newCache() }], { logits: 'all', attn: 'naive' });
      assert.ok(maxDiff(a.logits, b.logits) <= 1e-4 * (1 + maxAbs(a.logits)));
    });

    it('incremental decoding through the latent cache reproduces teacher forcing', () => {
      const full = model.forward([{ ids: prompt, cache: model.newCache() }], { logits: 'all' });
      const cache = model.newCache();
      const chunks = [prompt.slice(0, 7), prompt.slice(7, 12), ...prompt.slice(12).map((t) => [t])];
      const rows: Float32Array[] = [];
      for (const ids of chunks) rows.push(model.forward([{ ids, cache }], { logits: 'all' }).logits);
      const inc = new Float32Array(full.logits.length);
      let o = 0;
      for (const r of rows) {
        inc.set(r, o);
        o += r.length;
      }
      assert.ok(maxDiff(inc, full.logits) <= 1e-4 * (1 + maxAbs(full.logits)));
      for (const l of cache.layers.slice(0, model.cfg.num_hidden_layers)) {
        assert.equal(l.length, prompt.length);
        assert.equal(l.bytesPerPosition, (model.cfg.kv_lora_rank + model.cfg.qk_rope_head_dim) * 4);
      }
    });

    it('a batch of sequences of different lengths gives each exactly its solo result, on every backend', () => {
      const seqs = [tokens(5, V, 2), tokens(13, V, 3), tokens(1, V, 4)];
      for (const K of backends()) {
        const m = new DeepseekV3(model.cfg, model.weights, K);
        const solo = seqs.map((ids) => m.forward([{ ids, cache: m.newCache() }], { logits: 'all' }).logits);
        const batch = m.forward(
          seqs.map((ids) => ({ ids, cache: m.newCache() })),
          { logits: 'all' },
        );
        let o = 0;
        for (const s of solo) {
          assert.deepEqual(batch.logits.subarray(o, o + s.length), s, K.name);
          o += s.length;
        }
        // Row counts per sequence (a verify pass): the last n[i] rows of each, in one matmul.
        const counts = [2, 0, 1];
        const some = m.forward(seqs.map((ids) => ({ ids, cache: m.newCache() })), { logits: counts });
        const want = solo.flatMap((s, i) => [...s.subarray(s.length - counts[i] * V)]);
        assert.deepEqual(some.logits, Float32Array.from(want), K.name);
      }
      // A count past a sequence's tokens is refused before any cache is written.
      const cache = model.newCache();
      assert.throws(
        () => model.forward([{ ids: seqs[0], cache }], { logits: [6] }),
        (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && /row count/.test(e.message),
      );
      assert.equal(cache.layers[0].length, 0);
    });

    it('batched generation equals one-by-one generation', async () => {
      const prompts = [tokens(4, V, 5), tokens(9, V, 6), tokens(2, V, 7)];
      const together = await greedyDecode(model, prompts, { maxNewTokens: 6 });
      for (const [i, p] of prompts.entries()) {
        assert.deepEqual((await greedyDecode(model, [p], { maxNewTokens: 6 }))[0], together[i]);
      }
    });

    if (model.hasMtp) {
      it('MTP rows fed one at a time match the whole-prompt MTP pass', () => {
        const D = model.cfg.hidden_size;
        const cache = model.newCache();
        const h = model.forward([{ ids: prompt, cache }], { logits: 'none' }).hidden;
        const L = prompt.length;
        const whole = model.mtp([{ ids: prompt.slice(1), hidden: h.subarray(0, (L - 1) * D), cache }]).logits;
        const c2 = model.newCache();
        model.forward([{ ids: prompt, cache: c2 }], { logits: 'none' });
        for (let i = 0; i < L - 1; i++) {
          const r = model.mtp([{ ids: [prompt[i + 1]], hidden: h.subarray(i * D, (i + 1) * D), cache: c2 }]);
          assert.ok(maxDiff(r.logits, whole.subarray(i * V, (i + 1) * V)) <= 1e-4 * (1 + maxAbs(whole)));
        }
      });
    }

    it('refuses sequences past max_position_embeddings and ids outside the vocabulary', () => {
      const long = tokens(model.cfg.max_position_embeddings + 1, V, 8);
      assert.throws(
        () => model.forward([{ ids: long, cache: model.newCache() }]),
        (e: unknown) => e instanceof DsError && e.code === 'CONTEXT_OVERFLOW',
      );
      assert.throws(
        () => model.forward([{ ids: [V], cache: model.newCache() }]),
        (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && /outside the vocabulary/.test(e.message),
      );
    });
  });
}

describe('DeepseekV3 at inference', () => {
  it("MTP with logits 'last' runs only the last rows: the same numbers and caches as every row", () => {
    for (const K of backends()) {
      const model = DeepseekV3.load(randomCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 9 }), { kernels: K });
      const D = model.cfg.hidden_size;
      const V = model.cfg.vocab_size;
      const L = model.cfg.num_hidden_layers;
      const prompts = [[5, 6, 7, 8, 9], [11], [3, 4, 5]];
      const run = (last: boolean) => {
        const caches = prompts.map(() => model.newCache());
        const r = model.forward(prompts.map((ids, i) => ({ ids, cache: caches[i] })), { logits: 'none' });
        const rows = (i: number) => r.hidden.subarray(r.seqs[i].row * D, (r.seqs[i].row + prompts[i].length) * D);
        // Two passes, so the second one's rows attend to cache entries the first appended.
        const split = prompts.map((p) => Math.ceil(p.length / 2));
        const a = model.mtp(prompts.map((p, i) => ({ ids: p.slice(0, split[i]), hidden: rows(i).subarray(0, split[i] * D), cache: caches[i] })),
          { logits: last ? 'last' : 'all' });
        const rest = prompts.map((p, i) => p.length - split[i]).map((n, i) => (n > 0 ? i : -1)).filter((i) => i >= 0);
        const b = model.mtp(rest.map((i) => ({ ids: prompts[i].slice(split[i]), hidden: rows(i).subarray(split[i] * D), cache: caches[i] })),
          { logits: last ? 'last' : 'all' });
        return { a, b, rest, split, caches };
      };
      const all = run(false);
      const last = run(true);
      const lastRows = (o: { logits: Float32Array; block: Float32Array }, lens: number[], W: number, key: 'logits' | 'block') => {
        const out: number[] = [];
        let row = 0;
        for (const n of lens) {
          row += n;
          out.push(...o[key].subarray((row - 1) * W, row * W));
        }
        return Float32Array.from(out);
      };
      const lensA = all.split;
      const lensB = all.rest.map((i) => prompts[i].length - all.split[i]);
      assert.deepEqual(last.a.logits, lastRows(all.a, lensA, V, 'logits'), `first pass logits (${K.name})`);
      assert.deepEqual(last.a.block, lastRows(all.a, lensA, D, 'block'), `first pass block (${K.name})`);
      assert.deepEqual(last.b.logits, lastRows(all.b, lensB, V, 'logits'), `second pass logits (${K.name})`);
      assert.deepEqual(last.b.block, lastRows(all.b, lensB, D, 'block'), `second pass block (${K.name})`);
      prompts.forEach((p, i) => {
        const [x, y] = [all.caches[i].layers[L], last.caches[i].layers[L]];
        assert.equal(y.length, p.length);
        assert.deepEqual(y.kv.subarray(0, p.length * x.C), x.kv.subarray(0, p.length * x.C), `MTP cache ${i} (${K.name})`);
        assert.deepEqual(y.pe.subarray(0, p.length * x.R), x.pe.subarray(0, p.length * x.R));
      });
    }
  });

  it('what a pass returns survives the next passes (temporaries come from a reused arena, outputs do not)', () => {
    for (const K of backends()) {
      const model = DeepseekV3.load(randomCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 7 }), { kernels: K });
      const cache = model.newCache();
      const r1 = model.forward([{ ids: [1, 2, 3, 4], cache }], { logits: 'all' });
      const m1 = model.mtp([{ ids: [2, 3, 4, 5], hidden: r1.hidden, cache }]);
      const keep = [r1.hidden, r1.logits, m1.logits, m1.block].map((a) => a.slice());
      // More passes of other sizes, which reuse the arena.
      model.forward([{ ids: [9, 8], cache }], { logits: 'last' });
      model.forward([{ ids: [5], cache: model.newCache() }, { ids: [6, 7, 8], cache: model.newCache() }]);
      model.mtp([{ ids: [3], hidden: r1.hidden.subarray(0, model.cfg.hidden_size), cache: model.newCache() }]);
      [r1.hidden, r1.logits, m1.logits, m1.block].forEach((a, i) => assert.deepEqual(a, keep[i], `output ${i} (${K.name})`));
      // A draft vocabulary: the same numbers as the first ids' columns of the whole head.
      const V = model.cfg.vocab_size;
      const N = 37;
      const rows = (vocab?: number) => {
        const c = model.newCache();
        const r = model.forward([{ ids: [1, 2, 3, 4], cache: c }], { logits: 'none' });
        return model.mtp([{ ids: [2, 3, 4, 5], hidden: r.hidden, cache: c }], { logits: 'last', vocab }).logits;
      };
      assert.deepEqual(rows(N), rows().slice(0, N), `draft vocabulary (${K.name})`);
      assert.equal(rows(V).length, V);
      for (const bad of [0, V + 1, 2.5]) {
        assert.throws(() => rows(bad), (e: unknown) => e instanceof DsError && /MTP vocab/.test(e.message), `vocab ${bad}`);
      }
      // And the same inputs give the same outputs: nothing stale leaks from the arena.
      const r2 = model.forward([{ ids: [1, 2, 3, 4], cache: model.newCache() }], { logits: 'all' });
      assert.deepEqual(r2.logits, keep[1]);
    }
  });

  it('with reuse, outputs are the same numbers, in memory the next pass with reuse takes over', () => {
    for (const K of backends()) {
      const model = DeepseekV3.load(randomCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 8 }), { kernels: K });
      const D = model.cfg.hidden_size;
      // The same passes twice, on fresh caches: outputs as fresh arrays, then reused.
      const run = (reuse: boolean) => {
        const [a, b] = [model.newCache(), model.newCache()];
        const f = model.forward([{ ids: [1, 2, 3, 4], cache: a }, { ids: [7, 8], cache: b }], { logits: [2, 1], reuse });
        const fOut = [f.hidden.slice(), f.logits.slice()];
        const m = model.mtp([{ ids: [2, 3, 4, 5], hidden: f.hidden.subarray(0, 4 * D), cache: a }], { logits: 'last', vocab: 40, reuse });
        const mOut = [m.logits.slice(), m.block.slice()];
        // Drafting chains the module on its own block: its output is the next pass's input.
        const m2 = model.mtp([{ ids: [9], hidden: m.block, cache: a }], { logits: 'last', reuse });
        const f2 = model.forward([{ ids: [3], cache: b }], { logits: 'last', reuse });
        return { f, m, outs: [...fOut, ...mOut, m2.logits, m2.block, f2.hidden, f2.logits] };
      };
      const fresh = run(false);
      const reused = run(true);
      reused.outs.forEach((x, i) => assert.deepEqual(x, fresh.outs[i], `output ${i} (${K.name})`));
      // The first pass's outputs were overwritten by the later ones (what reuse means), and
      // without reuse they were not.
      assert.equal(reused.f.logits.buffer, reused.outs[7].buffer);
      assert.notDeepEqual(reused.f.logits.slice(0, 10), fresh.f.logits.slice(0, 10));
      assert.deepEqual(fresh.f.logits, fresh.outs[1]);
      assert.throws(() => model.forward([{ ids: [1], cache: model.newCache() }], { reuse: true, tape: new Tape() }),
        (e: unknown) => e instanceof DsError && /reuse/.test(e.message));
    }
  });
});
