// Loading checks: a checkpoint that disagrees with its config fails on load with an error
// that names the file and the tensor, and weights stay in their stored dtype.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, unlinkSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3 } from './deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { DsError, type ErrorCode } from '../errors.ts';
import { randomCheckpoint, rewriteCheckpoint as rewrite } from '../../test/helpers/fixtures.ts';
import { tensorTable } from './weights.ts';
import { tinyConfig } from './init.ts';

function loadFails(dir: string, code: ErrorCode, ...patterns: RegExp[]): void {
  assert.throws(
    () => DeepseekV3.load(dir, { kernels: refKernels }),
    (e: unknown) => {
      assert.ok(e instanceof DsError, `expected a DsError, got ${e}`);
      assert.equal(e.code, code, e.message);
      for (const p of patterns) assert.match(e.message, p);
      return true;
    },
  );
}

describe('checkpoint loading', () => {
  it('keeps BF16 and FP8 matrices in their stored dtype (no f32 expansion)', () => {
    const bf = DeepseekV3.load(randomCheckpoint({}, { dtype: 'BF16' }), { kernels: refKernels });
    const q = bf.weights.layers[0].self_attn.q_b_proj!;
    assert.equal(q.dtype, 'BF16');
    assert.ok(q.data instanceof Uint16Array && q.data.length === q.rows * q.cols);
    const f8 = DeepseekV3.load(randomCheckpoint({ hidden_size: 200 }, { dtype: 'FP8' }), { kernels: refKernels });
    const w = f8.weights.layers[1].moe!.experts[3].down_proj;
    assert.equal(w.dtype, 'F8_E4M3');
    assert.ok(w.data instanceof Uint8Array && w.data.length === w.rows * w.cols);
    assert.deepEqual(w.block, [128, 128]);
    assert.equal(w.scale!.length, Math.ceil(w.rows / 128) * Math.ceil(w.cols / 128));
    // The router stays BF16 and the bias F32, as in the released checkpoint.
    assert.equal(f8.weights.layers[1].moe!.gate.dtype, 'BF16');
  });

  it('lists every tensor of the released layout, MTP module included', () => {
    const names = tensorTable(tinyConfig()).map((s) => s.name);
    for (const n of [
      'model.embed_tokens.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.1.mlp.gate.e_score_correction_bias',
      'model.layers.1.mlp.experts.7.down_proj.weight',
      'model.layers.1.mlp.shared_experts.up_proj.weight',
      'model.layers.2.eh_proj.weight',
      'model.layers.2.shared_head.head.weight',
      'model.layers.2.self_attn.kv_b_proj.weight',
      'lm_head.weight',
    ]) {
      assert.ok(names.includes(n), n);
    }
  });

  it('names the tensor whose shape disagrees with the config', () => {
    const dir = randomCheckpoint();
    rewrite(dir, (specs, data) => {
      const s = specs.find((x) => x.name === 'model.layers.1.self_attn.kv_b_proj.weight')!;
      s.shape = [s.shape[1], s.shape[0]];
      void data;
    });
    loadFails(dir, 'BAD_SHAPE', /model\.safetensors/, /kv_b_proj\.weight/, /the config implies/);
  });

  it('names a missing tensor', () => {
    const dir = randomCheckpoint();
    rewrite(dir, (specs) => {
      specs.splice(specs.findIndex((x) => x.name === 'model.layers.1.mlp.experts.5.up_proj.weight'), 1);
    });
    loadFails(dir, 'MISSING_TENSOR', /model\.layers\.1\.mlp\.experts\.5\.up_proj\.weight/);
  });

  it('names an FP8 weight without its block scales', () => {
    const dir = randomCheckpoint({}, { dtype: 'FP8' });
    rewrite(dir, (specs) => {
      specs.splice(specs.findIndex((x) => x.name === 'model.layers.0.self_attn.o_proj.weight_scale_inv'), 1);
    });
    loadFails(dir, 'MISSING_TENSOR', /o_proj\.weight_scale_inv/);
  });

  it('names FP8 block scales of the wrong shape', () => {
    const dir = randomCheckpoint({}, { dtype: 'FP8' });
    rewrite(dir, (specs, data) => {
      const s = specs.find((x) => x.name === 'model.layers.0.self_attn.o_proj.weight_scale_inv')!;
      s.shape = [2, 1];
      data.set(s.name, new Uint8Array(8));
    });
    loadFails(dir, 'BAD_SHAPE', /o_proj\.weight_scale_inv/);
  });

  it('names a norm stored in a dtype it cannot have', () => {
    const dir = randomCheckpoint();
    rewrite(dir, (specs, data) => {
      const s = specs.find((x) => x.name === 'model.norm.weight')!;
      s.dtype = 'F8_E4M3';
      data.set(s.name, new Uint8Array(s.shape[0]));
    });
    loadFails(dir, 'BAD_DTYPE', /model\.safetensors/, /model\.norm\.weight/, /F8_E4M3/);
  });

  it('names the config field that is missing', () => {
    const dir = randomCheckpoint();
    const cfgFile = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    delete cfg.kv_lora_rank;
    writeFileSync(cfgFile, JSON.stringify(cfg));
    loadFails(dir, 'BAD_CONFIG', /config\.json/, /"kv_lora_rank"/);
  });

  it('reports a missing weights file', () => {
    const dir = randomCheckpoint();
    unlinkSync(join(dir, 'model.safetensors'));
    loadFails(dir, 'MISSING_FILE', /safetensors/);
  });

  it('reports a truncated weights file', () => {
    const dir = randomCheckpoint();
    const file = join(dir, 'model.safetensors');
    const bytes = readFileSync(file);
    writeFileSync(file, bytes.subarray(0, bytes.length - 100));
    loadFails(dir, 'BAD_SAFETENSORS', /model\.safetensors/);
    assert.ok(readdirSync(dir).length === 2 && statSync(file).size > 0);
  });
});
