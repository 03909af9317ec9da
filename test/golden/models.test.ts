// The model against the official reference implementation, for every checkpoint under
// ../shared/golden/models: teacher-forced logits, greedy decoding through the latent KV
// cache, MTP logits, per-layer activations and expert choices, in both attention paths
// and on every kernel backend. Tolerances are the golden README's.
// Each checkpoint runs twice: as released (safetensors) and as the GGUF file `dsv3 convert
// --to gguf` makes of it (llama.cpp's deepseek2 layout: config from metadata, stacked experts,
// split attn_k_b / attn_v_b), exported without loss (F32 and BF16 as stored, FP8 dequantised
// to F32 exactly). GGUF carries no MTP module, so the MTP checks run on safetensors only.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { convertToGguf } from '../../src/io/convert-gguf.ts';
import { tempDir } from '../helpers/fixtures.ts';
import { greedyDecode } from '../helpers/greedy.ts';
import type { Routing } from '../../src/model/moe.ts';
import { backends } from '../helpers/backends.ts';
import {
  GOLDEN_MISSING,
  goldenModelDir,
  goldenModels,
  logitTolerance,
  maxAbs,
  maxAbsDiff,
  readJson,
} from '../helpers/golden.ts';

interface GoldenCase {
  prompt: number[];
  logits_all: number[][];
  greedy: number[];
  greedy_logits: number[][];
  mtp_logits?: number[][];
  debug?: { layer_outputs: number[][][]; final_hidden: number[][]; mtp_block_output?: number[][] };
  topk_experts?: { layer: number; indices: number[][]; weights: number[][] };
}

interface Golden {
  weights_storage: string;
  softmax_scale: number;
  rope_freqs: number[];
  cases: GoldenCase[];
}

describe('golden models', { skip: GOLDEN_MISSING }, () => {
  for (const name of goldenModels()) {
    const dir = goldenModelDir(name);
    const g = readJson<Golden>(`${dir}/golden.json`);
    const tol = logitTolerance(
      g.weights_storage,
      Math.max(...g.cases.map((c) => Math.max(maxAbs(c.logits_all), maxAbs(c.greedy_logits)))),
    );

    let gguf = '';
    for (const source of ['safetensors', 'gguf'] as const)
    for (const K of backends()) {
      describe(`${name} [${source}, ${K.name}]`, () => {
        let model: DeepseekV3;
        before(() => {
          if (source === 'gguf' && !gguf) {
            gguf = join(tempDir(), `${name}.gguf`);
            convertToGguf(dir, gguf, { type: g.weights_storage === 'FP8' ? 'f32' : 'auto' });
          }
          model = DeepseekV3.load(source === 'gguf' ? gguf : dir, { kernels: K });
          if (source === 'gguf') assert.equal(model.weights.layers[0].self_attn.kv_b_proj, null, 'kv_b_proj split');
        });

        it('derives the reference softmax scale and YaRN frequencies', () => {
          assert.ok(Math.abs(model.dims.scale - g.softmax_scale) < 1e-7 * g.softmax_scale);
          g.rope_freqs.forEach((f, i) => {
            assert.ok(Math.abs(model.dims.freqs[i] - f) <= 1e-6 * f, `freq ${i}: ${model.dims.freqs[i]} vs ${f}`);
          });
        });

        for (const attn of ['absorb', 'naive'] as const) {
          it(`teacher-forced logits match for every prompt (${attn})`, () => {
            for (const c of g.cases) {
              const cache = model.newCache();
              const r = model.forward([{ ids: c.prompt, cache }], { logits: 'all', attn });
              const d = maxAbsDiff(r.logits, c.logits_all);
              assert.ok(d <= tol, `prompt of ${c.prompt.length}: max |Δ| ${d} > ${tol}`);
              if (c.mtp_logits && model.hasMtp) {
                const L = c.prompt.length;
                const D = model.cfg.hidden_size;
                const o = model.mtp(
                  [{ ids: c.prompt.slice(1), hidden: r.hidden.subarray(0, (L - 1) * D), cache }],
                  { attn },
                );
                const dm = maxAbsDiff(o.logits, c.mtp_logits);
                assert.ok(dm <= tol, `MTP, prompt of ${L}: max |Δ| ${dm} > ${tol}`);
              }
            }
          });

          it(`greedy decoding through the KV cache matches tokens and per-step logits (${attn})`, async () => {
            const steps: Float32Array[][] = g.cases.map(() => []);
            const ids = await greedyDecode(
              model,
              g.cases.map((c) => c.prompt),
              {
                maxNewTokens: g.cases[0].greedy.length,
                attn,
                onToken: (seq, _id, logits) => void steps[seq].push(logits.slice()),
              },
            );
            g.cases.forEach((c, i) => {
              assert.deepEqual(ids[i], c.greedy, `greedy tokens of prompt ${i}`);
              const flat = new Float32Array(steps[i].length * steps[i][0].length);
              steps[i].forEach((row, k) => flat.set(row, k * row.length));
              const d = maxAbsDiff(flat, c.greedy_logits);
              assert.ok(d <= tol, `greedy logits of prompt ${i}: max |Δ| ${d} > ${tol}`);
            });
          });
        }

        it('matches per-layer activations, final hidden state and expert choices', () => {
          const c = g.cases[0];
          const D = model.cfg.hidden_size;
          const layers: Float32Array[] = [];
          const routes = new Map<number, Routing>();
          const cache = model.newCache();
          const r = model.forward([{ ids: c.prompt, cache }], {
            logits: 'none',
            onLayer: (_l, x) => void layers.push(x.slice()),
            onRoute: (l, rt) => void routes.set(l, rt),
          });
          if (c.debug) {
            c.debug.layer_outputs.forEach((rows, l) => {
              const scale = 1 + maxAbs(rows);
              const d = maxAbsDiff(layers[l], rows);
              assert.ok(d <= 1e-4 * scale * 2, `layer ${l} output: max |Δ| ${d}`);
            });
            const d = maxAbsDiff(r.hidden, c.debug.final_hidden);
            assert.ok(d <= 2e-4 * (1 + maxAbs(c.debug.final_hidden)), `final hidden: max |Δ| ${d}`);
            if (c.debug.mtp_block_output && model.hasMtp) {
              const L = c.prompt.length;
              const o = model.mtp([{ ids: c.prompt.slice(1), hidden: r.hidden.subarray(0, (L - 1) * D), cache }]);
              const dm = maxAbsDiff(o.block, c.debug.mtp_block_output);
              assert.ok(dm <= 2e-4 * (1 + maxAbs(c.debug.mtp_block_output)), `MTP block: max |Δ| ${dm}`);
            }
          }
          if (c.topk_experts) {
            const rt = routes.get(c.topk_experts.layer);
            assert.ok(rt, `layer ${c.topk_experts.layer} routed`);
            const k = model.cfg.num_experts_per_tok;
            c.topk_experts.indices.forEach((want, t) => {
              const got = Array.from(rt.idx.subarray(t * k, (t + 1) * k));
              assert.deepEqual([...got].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `token ${t}`);
              want.forEach((e, j) => {
                const w = rt.weights[t * k + got.indexOf(e)];
                assert.ok(Math.abs(w - c.topk_experts!.weights[t][j]) < 1e-5, `token ${t} expert ${e} weight`);
              });
            });
          }
        });
      });
    }
  }
});
