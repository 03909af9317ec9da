// config.json parsing: every golden config reads, and each kind of bad value is named.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseConfig, configToJson } from './config.ts';
import { DsError } from '../errors.ts';
import { GOLDEN_MISSING, goldenModelDir, goldenModels } from '../../test/helpers/golden.ts';

const base = () => ({
  model_type: 'deepseek_v3',
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  moe_intermediate_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  n_routed_experts: 4,
  num_experts_per_tok: 2,
  kv_lora_rank: 16,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 4,
  v_head_dim: 8,
  max_position_embeddings: 64,
});

function rejects(raw: unknown, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(raw, 'x/config.json'),
    (e: unknown) => e instanceof DsError && e.code === 'BAD_CONFIG' && pattern.test(e.message) && /x\/config\.json/.test(e.message),
  );
}

describe('config.json', () => {
  it('reads every golden config', { skip: GOLDEN_MISSING }, () => {
    for (const name of goldenModels()) {
      const raw = JSON.parse(readFileSync(`${goldenModelDir(name)}/config.json`, 'utf8'));
      const c = parseConfig(raw);
      assert.equal(c.hidden_size, raw.hidden_size);
      assert.equal(c.q_lora_rank, raw.q_lora_rank ?? 0);
      assert.equal(c.num_nextn_predict_layers, raw.num_nextn_predict_layers ?? 0);
      assert.equal(c.quantization_config !== null, raw.quantization_config !== undefined);
      assert.equal(c.rope_scaling?.mscale_all_dim, raw.rope_scaling.mscale_all_dim);
    }
  });

  it('fills documented defaults (V2 configs have no num_nextn_predict_layers)', () => {
    const c = parseConfig({ ...base(), model_type: 'deepseek_v2', q_lora_rank: null });
    assert.equal(c.num_nextn_predict_layers, 0);
    assert.equal(c.q_lora_rank, 0);
    assert.equal(c.topk_method, 'greedy');
    assert.equal(c.n_group, 1);
  });

  it('round-trips through configToJson', () => {
    const c = parseConfig({ ...base(), q_lora_rank: null });
    const j = configToJson(c);
    assert.equal(j.q_lora_rank, null);
    assert.deepEqual(parseConfig(j), c);
  });

  it('names a missing required field', () => {
    for (const key of ['hidden_size', 'kv_lora_rank', 'vocab_size', 'max_position_embeddings']) {
      const raw: Record<string, unknown> = base();
      delete raw[key];
      rejects(raw, new RegExp(`missing required field "${key}"`));
    }
  });

  it('names a field of the wrong type or value', () => {
    rejects({ ...base(), hidden_size: '32' }, /"hidden_size" must be an integer/);
    rejects({ ...base(), hidden_size: 0 }, /"hidden_size" must be >= 1/);
    rejects({ ...base(), model_type: 'llama' }, /"model_type" must be one of/);
    rejects({ ...base(), scoring_func: 'relu' }, /"scoring_func"/);
    rejects({ ...base(), n_group: 3 }, /n_group/);
    rejects({ ...base(), qk_rope_head_dim: 5 }, /qk_rope_head_dim must be even/);
    rejects({ ...base(), rope_scaling: { type: 'linear', factor: 2 } }, /rope_scaling type "linear"/);
    rejects({ ...base(), quantization_config: { quant_method: 'gptq' } }, /quant_method/);
    rejects([1, 2], /JSON object/);
  });
});
