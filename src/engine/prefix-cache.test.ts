// Prefix caching: a scheduler that starts prompts from cached latent rows gives exactly what one
// without the cache gives (ids and the logits they were picked from, bitwise; with MTP
// speculation also the same drafts accepted), greedy and seeded, on the golden models and the
// shipped one, for an exact repeat, a strict prefix, a diverging suffix and a continuation; it
// shares a running request's prompt; it stays within its budget, evicting least recently used
// entries and never the ones a running sequence started from.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type SchedulerOptions, type SeqResult } from './scheduler.ts';
import { PrefixCache } from './prefix-cache.ts';
import { Sampler, type SamplingParams } from './sampler.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { SequenceCache } from '../model/cache.ts';
import type { Kernels } from '../kernels/kernels.ts';
import { backends } from '../../test/helpers/backends.ts';
import { GOLDEN_MISSING, goldenModelDir } from '../../test/helpers/golden.ts';
import { DEFAULT_MODEL_DIR } from '../../test/helpers/fixtures.ts';

interface Out {
  ids: number[];
  logits: Float32Array[];
  r: SeqResult;
}

function submit(s: Scheduler, prompt: number[], maxNewTokens: number, sampling: SamplingParams): Promise<Out> {
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  return new Promise((resolve, reject) => {
    s.submit({
      prompt,
      maxNewTokens,
      sampler: new Sampler(sampling),
      onToken: (id, l) => {
        ids.push(id);
        logits.push(l.slice());
      },
      onDone: (r) => (r.error ? reject(r.error) : resolve({ ids, logits, r })),
    });
  });
}

/** Same ids, same logits bit for bit, same speculation counts. */
function assertSame(got: Out, want: Out, what: string): void {
  assert.deepEqual(got.ids, want.ids, `${what}: ids`);
  assert.equal(got.logits.length, want.logits.length);
  got.logits.forEach((l, i) => assert.ok(
    Buffer.from(l.buffer, l.byteOffset, l.byteLength).equals(Buffer.from(want.logits[i].buffer, want.logits[i].byteOffset, want.logits[i].byteLength)),
    `${what}: logits of token ${i} differ`,
  ));
  assert.equal(got.r.finish, want.r.finish, `${what}: finish`);
  if (want.r.spec) {
    assert.deepEqual(got.r.spec!.proposed, want.r.spec.proposed, `${what}: drafts proposed`);
    assert.deepEqual(got.r.spec!.accepted, want.r.spec.accepted, `${what}: drafts accepted (the MTP head saw the same rows)`);
  }
}

const prompt = (n: number, seed: number, V: number) => Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + 3) % V);

/**
 * Make a scheduler's adaptive draft policy choose the draft lengths `pattern` in turn (0:
 * plain decoding, whose MTP rows the sequences then owe and keep), from the start of each
 * request after the returned reset: the same drafts in two schedulers, whatever the timings.
 */
function forceDrafts(s: Scheduler, pattern: readonly number[] | undefined): () => void {
  let i = 0;
  if (pattern) {
    s.draftPolicy!.choose = (_b, n) => (n === 0 ? 0 : pattern[i++ % pattern.length]);
    s.draftPolicy!.keepsMtp = () => true; // (drafts are to come)
  }
  return () => void (i = 0);
}

/**
 * Requests one after another through a scheduler with the cache, each against the same
 * request in a scheduler without it: A, A again, a strict prefix of A, A's start with another
 * ending, and A + its answer + more (the next turn of a conversation). Returns each request's
 * cached token count. With `drafts`, both schedulers draft by that pattern (forceDrafts).
 */
async function scenario(
  model: DeepseekV3,
  opts: SchedulerOptions,
  sampling: (i: number) => SamplingParams,
  drafts?: readonly number[],
): Promise<number[]> {
  const V = model.cfg.vocab_size;
  const cached = new Scheduler(model, { ...opts, prefixCacheBytes: 64 << 20 });
  const plain = new Scheduler(model, opts);
  const resetCached = forceDrafts(cached, drafts);
  const resetPlain = forceDrafts(plain, drafts);
  const A = prompt(40, 1, V);
  const n = 12;
  resetPlain();
  const first = await submit(plain, A, n, sampling(0));
  const requests = [
    A,
    A,
    A.slice(0, 25),
    [...A.slice(0, 30), ...prompt(10, 2, V)],
    [...A, ...first.ids, ...prompt(6, 3, V)],
  ];
  const counts: number[] = [];
  for (const [i, p] of requests.entries()) {
    resetPlain();
    const want = await submit(plain, p, n, sampling(i));
    resetCached();
    const got = await submit(cached, p, n, sampling(i));
    assertSame(got, want, `request ${i}`);
    assert.equal(want.r.cachedTokens, 0);
    counts.push(got.r.cachedTokens!);
  }
  const st = cached.prefixCache!.stats;
  assert.ok(st.bytes <= st.budget && st.tokens > 0);
  return counts;
}

// Every backend for the golden models; the shipped model's longer runs on the fastest one
// built (native when it is, what `dsv3 serve` runs).
const KERNELS = backends();
const FAST = KERNELS[KERNELS.length - 1];
const kname = (K: Kernels) => (K === KERNELS[0] ? 'ref' : 'native');

const GREEDY = () => ({ temperature: 0 });
const SEEDED = (i: number) => ({ temperature: 0.9, topP: 0.95, seed: 1000 + i });

describe('prefix cache', () => {
  const models: [string, Kernels][] = [['models/default', FAST]];
  if (!GOLDEN_MISSING) {
    for (const name of ['v3-tiny', 'v3-tiny-bf16', 'v2-lite-tiny', 'v3-fp8']) for (const K of KERNELS) models.push([name, K]);
  }

  for (const [name, K] of models) {
    it(`gives the same output as without it on ${name} (${kname(K)}): repeat, prefix, divergence, continuation; greedy and seeded`, async () => {
      const model = DeepseekV3.load(name === 'models/default' ? DEFAULT_MODEL_DIR : goldenModelDir(name), { kernels: K });
      for (const sampling of [GREEDY, SEEDED]) {
        const counts = await scenario(model, {}, sampling);
        // 40-token A: the repeat reuses all but its last token, the 25-token prefix 24, the
        // diverging prompt the 30 shared tokens, the continuation A and its answer but the last token.
        assert.deepEqual(counts.slice(0, 4), [0, 39, 24, 30]);
        assert.equal(counts[4], 40 + 12 - 1);
      }
      // Chunked prefill after the restored prefix.
      await scenario(model, { prefillChunk: 7 }, SEEDED);
    });
  }

  for (const [name, dir] of [['v3-tiny', () => goldenModelDir('v3-tiny')], ['models/default', () => DEFAULT_MODEL_DIR]] as const) {
    it(`restores the MTP module's rows too: same output and same drafts accepted with speculation on ${name}`, {
      skip: name === 'v3-tiny' && GOLDEN_MISSING,
    }, async () => {
      const model = DeepseekV3.load(dir(), { kernels: FAST });
      // The fixed policy: drafts every step, so both schedulers draft alike.
      for (const [k, sampling] of [[1, GREEDY], [2, GREEDY], [2, SEEDED]] as const) {
        const counts = await scenario(model, { speculative: { draftTokens: k, policy: 'fixed' } }, sampling);
        // One token less than without speculation: MTP row i needs token i+1 to match too.
        assert.deepEqual(counts.slice(0, 4), [0, 39, 24, 29]);
        assert.ok(counts[4] >= 40, `continuation reused ${counts[4]}`);
      }
      await scenario(model, { speculative: { draftTokens: 2, policy: 'fixed' }, prefillChunk: 9 }, SEEDED);
      // The adaptive policy (the default; its choices follow the timings, so here a pattern
      // stands in for them): sequences owe the MTP rows of plain steps and compute them when
      // they draft again, or leave (for the cache); a seeded one never drafts and owes them all.
      for (const sampling of [GREEDY, SEEDED]) {
        const counts = await scenario(model, { speculative: { draftTokens: 2 } }, sampling, [0, 0, 2, 0, 1, 2, 2, 0, 0, 0, 1]);
        assert.deepEqual(counts.slice(0, 4), [0, 39, 24, 29]);
        assert.ok(counts[4] >= 40, `continuation reused ${counts[4]}`);
      }
    });
  }

  it('starts a prompt from a running request\'s rows', async () => {
    const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: FAST });
    for (const speculative of [undefined, { draftTokens: 2 }]) {
      const s = new Scheduler(model, { maxBatch: 2, prefixCacheBytes: 16 << 20, speculative });
      const plain = new Scheduler(model, { speculative });
      const A = prompt(50, 4, model.cfg.vocab_size);
      const B = [...A, 7, 8, 9];
      let b: Promise<Out> | null = null;
      const a = new Promise<SeqResult>((resolve) => {
        let n = 0;
        s.submit({
          prompt: A,
          maxNewTokens: 20,
          sampler: new Sampler({ temperature: 0 }),
          onToken: () => {
            if (++n === 3) b = submit(s, B, 10, SEEDED(1)); // A is still decoding
          },
          onDone: resolve,
        });
      });
      assert.equal((await a).finish, 'length');
      const got = await b!;
      assertSame(got, await submit(plain, B, 10, SEEDED(1)), 'B');
      assert.equal(got.r.cachedTokens, speculative ? 49 : 50, 'B reused A\'s prompt rows while A ran');
    }
  });

  it('stays within a tiny budget, evicts the least recently used, and gives the same output', async () => {
    const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: FAST });
    const V = model.cfg.vocab_size;
    const cfg = model.cfg;
    const per = new PrefixCache({ bytes: 1, layers: cfg.num_hidden_layers, C: cfg.kv_lora_rank, R: cfg.qk_rope_head_dim, mtp: false }).bytesPerToken;
    assert.equal(per, 3 * (64 + 16) * 4 + 4);
    const s = new Scheduler(model, { maxBatch: 3, prefixCacheBytes: per * 80 });
    const plain = new Scheduler(model, { maxBatch: 3 });
    const A = prompt(30, 5, V);
    const B = prompt(30, 6, V);
    // Each request keeps its prompt and answer but the last token: 37 tokens for A and B.
    const prompts = [A, B, [...A, 1, 2], [...B, 1, 2], A];
    for (let round = 0; round < 2; round++) {
      // One after another, then all at once.
      const outs: Out[] = [];
      if (round === 0) for (const [i, p] of prompts.entries()) outs.push(await submit(s, p, 8, SEEDED(i)));
      else outs.push(...await Promise.all(prompts.map((p, i) => submit(s, p, 8, SEEDED(i)))));
      for (const [i, p] of prompts.entries()) assertSame(outs[i], await submit(plain, p, 8, SEEDED(i)), `round ${round}, prompt ${i}`);
      const st = s.prefixCache!.stats;
      assert.ok(st.bytes <= st.budget, `${st.bytes} bytes held, budget ${st.budget}`);
      if (round === 0) {
        // A and B fill 74 of 80 tokens; A's extension reuses A and needs 9 more tokens: B, used
        // longer ago than A, goes; so B's extension finds nothing, and A is still there.
        assert.deepEqual(outs.map((o) => o.r.cachedTokens), [0, 0, 30, 0, 29]);
        assert.ok(st.evictedTokens >= 37);
      }
    }
    // A budget below one token's rows keeps nothing.
    const none = new Scheduler(model, { prefixCacheBytes: per - 1 });
    await submit(none, A, 4, GREEDY());
    assert.equal((await submit(none, A, 4, GREEDY())).r.cachedTokens, 0);
    assert.equal(none.prefixCache!.stats.bytes, 0);
  });

  it('restores MTP rows equal to those computed for the new prompt, up to one token before the divergence', () => {
    const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: FAST });
    const { cfg } = model;
    const L = cfg.num_hidden_layers;
    const D = cfg.hidden_size;
    const pc = new PrefixCache({ bytes: 1 << 20, layers: L, C: cfg.kv_lora_rank, R: cfg.qk_rope_head_dim, mtp: true });
    // The scheduler's convention: MTP row i pairs h_i with token i+1.
    const computed = (tokens: number[]): SequenceCache => {
      const c = model.newCache();
      const r = model.forward([{ ids: tokens, cache: c }], { logits: 'none' });
      model.mtp([{ ids: tokens.slice(1), hidden: r.hidden.subarray(0, (tokens.length - 1) * D), cache: c }]);
      return c;
    };
    const X = prompt(20, 11, cfg.vocab_size);
    pc.store(X, computed(X));
    const Q = [...X.slice(0, 12), 1, 2, 3, 4];
    const c = model.newCache();
    assert.equal(pc.restore(Q, c).tokens, 11);
    const want = computed(Q);
    for (let l = 0; l <= L; l++) {
      assert.equal(c.layers[l].length, 11, `layer ${l}`);
      assert.deepEqual(c.layers[l].kv.subarray(0, 11 * cfg.kv_lora_rank), want.layers[l].kv.subarray(0, 11 * cfg.kv_lora_rank), `layer ${l}`);
      assert.deepEqual(c.layers[l].pe.subarray(0, 11 * cfg.qk_rope_head_dim), want.layers[l].pe.subarray(0, 11 * cfg.qk_rope_head_dim), `layer ${l}`);
    }
  });

  it('never evicts an entry a running sequence started from; keeps what fits of a too-large insert', () => {
    const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: FAST });
    const V = model.cfg.vocab_size;
    const cfg = model.cfg;
    const opts = { layers: cfg.num_hidden_layers, C: cfg.kv_lora_rank, R: cfg.qk_rope_head_dim, mtp: false };
    const per = new PrefixCache({ ...opts, bytes: 1 }).bytesPerToken;
    const pc = new PrefixCache({ ...opts, bytes: per * 30 });
    const filled = (tokens: number[]): SequenceCache => {
      const c = model.newCache();
      model.forward([{ ids: tokens, cache: c }], { logits: 'none' });
      return c;
    };
    const X = prompt(20, 8, V);
    const Y = prompt(25, 9, V);
    const Z = prompt(10, 10, V);
    pc.store(X, filled(X));
    assert.equal(pc.stats.tokens, 20);
    // A sequence starts from X's first 10 tokens: its rows are X's, bit for bit.
    const c = model.newCache();
    const running = pc.restore([...X.slice(0, 10), 5, 5], c);
    assert.equal(running.tokens, 10);
    const ref = filled(X.slice(0, 10));
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      assert.equal(c.layers[l].length, 10);
      assert.deepEqual(c.layers[l].kv.subarray(0, 10 * cfg.kv_lora_rank), ref.layers[l].kv.subarray(0, 10 * cfg.kv_lora_rank));
      assert.deepEqual(c.layers[l].pe.subarray(0, 10 * cfg.qk_rope_head_dim), ref.layers[l].pe.subarray(0, 10 * cfg.qk_rope_head_dim));
    }
    // Y needs 25 tokens, 10 are free and X is pinned by the running sequence: X stays, Y keeps its first 10.
    pc.store(Y, filled(Y));
    assert.equal(pc.stats.tokens, 30);
    assert.ok(pc.stats.bytes <= pc.budget);
    pc.clear();
    assert.equal(pc.stats.tokens, 20, 'clear() keeps the pinned entry');
    pc.store(Y, filled(Y));
    const x = pc.restore(X, model.newCache());
    const y = pc.restore(Y, model.newCache());
    assert.deepEqual([x.tokens, y.tokens], [19, 10]);
    // Once nobody runs from them, the least recently used (X, restored before Y) goes first.
    for (const h of [running, x, y]) pc.release(h.pin);
    pc.store(Z, filled(Z));
    assert.deepEqual([X, Y, Z].map((t) => pc.restore(t, model.newCache()).tokens), [0, 10, 9]);
    assert.equal(pc.stats.evictedTokens, 20 + 10);
  });
});
