// GGUF writing (src/io/gguf.ts) and the deepseek2 export (src/io/convert-gguf.ts), checked without
// running llama.cpp: encodings against their definitions, the file layout against our reader and
// against node-llama-cpp's independent GGUF parser, and every exported tensor against the
// checkpoint it came from. test/llama-cpp/crosscheck.test.ts runs the exports in llama.cpp.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { main } from '../cli/main.ts';
import { loadConfig } from './config.ts';
import { Checkpoint } from './safetensors.ts';
import { tinyConfig, writeRandomCheckpoint } from '../model/init.ts';
import { F16_TABLE, toF32 } from '../tensor/dtypes.ts';
import { V2_STYLE, tempDir } from '../../test/helpers/fixtures.ts';
import { DEEPSEEK_TOKENIZER_DIR } from '../../test/helpers/golden.ts';
import {
  dequantizeQ8_0,
  encodeTensor,
  f32ToF16,
  GGML_TYPE,
  GgufType,
  kv,
  quantizeQ8_0,
  readGgufHeader,
  readGgufTensor,
  writeGguf,
} from './gguf.ts';
import { convertToGguf, readF32, tokenizerMetadata } from './convert-gguf.ts';

test('f32ToF16 rounds to the nearest half, ties to even, and round-trips every half', () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = F16_TABLE[h];
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToF16(v), h, `half 0x${h.toString(16)}`);
  }
  // Midpoints between neighbours go to the even one; just above goes up.
  for (const h of [0x0001, 0x03ff, 0x3c00, 0x3c01, 0x7bfe, 0x8401]) {
    const a = F16_TABLE[h];
    const b = F16_TABLE[h + 1];
    const mid = (a + b) / 2;
    assert.equal(f32ToF16(mid), h % 2 === 0 ? h : h + 1, `midpoint after 0x${h.toString(16)}`);
    assert.equal(f32ToF16(Math.fround(mid + (b - a) / 8)), h + 1);
  }
  assert.equal(f32ToF16(65520), 0x7c00, 'past the largest half → inf');
  assert.equal(f32ToF16(2 ** -26), 0, 'below half the smallest subnormal → 0');
});

test('Q8_0 follows ggml quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d), f16 d', () => {
  const x = new Float32Array(64);
  x[0] = 127; // d = 1 exactly
  x[1] = 2.5; // roundf: halves away from zero
  x[2] = -2.5;
  x[3] = 0.49;
  x[4] = -126.5;
  // second block all zeros: d = 0, q = 0
  const q = quantizeQ8_0(x);
  assert.equal(q.byteLength, 2 * 34);
  const dv = new DataView(q.buffer);
  assert.equal(dv.getUint16(0, true), 0x3c00, 'd = 1.0 as f16');
  assert.deepEqual([2, 3, 4, 5, 6].map((o) => dv.getInt8(o)), [127, 3, -3, 0, -127]);
  assert.equal(dv.getUint16(34, true), 0);
  assert.ok(q.subarray(36).every((b) => b === 0));

  // Random data: every value within half a step (plus d's f16 rounding) of the original.
  const r = new Float32Array(32 * 50);
  let s = 12345;
  for (let i = 0; i < r.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    r[i] = ((s / 2 ** 32) - 0.5) * 2 ** ((i >> 5) % 9 - 4);
  }
  const back = dequantizeQ8_0(quantizeQ8_0(r));
  for (let b = 0; b < 50; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(r[b * 32 + j]));
    const d = amax / 127;
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      assert.ok(Math.abs(back[i] - r[i]) <= d * 0.5 + amax * 2 ** -11, `block ${b} value ${j}`);
    }
  }
  assert.throws(() => quantizeQ8_0(new Float32Array(33)), /multiple of 32/);
});

test('writeGguf: header, typed metadata, aligned tensors; read back by us and by node-llama-cpp', async () => {
  const dir = tempDir('dsv3-gguf-');
  const path = join(dir, 't.gguf');
  const a = Float32Array.from({ length: 3 * 5 }, (_, i) => i - 7.25);
  const b = Float32Array.from({ length: 2 * 64 }, (_, i) => Math.sin(i));
  const tensors = [
    { name: 'a', shape: [3, 5], type: 'F32' as const },
    { name: 'b16', shape: [2, 64], type: 'F16' as const },
    { name: 'bb', shape: [2, 64], type: 'BF16' as const },
    { name: 'q', shape: [1, 2, 64], type: 'Q8_0' as const },
  ];
  const bytes: Record<string, Uint8Array> = {
    a: encodeTensor(a, 'F32'),
    b16: encodeTensor(b, 'F16'),
    bb: encodeTensor(b, 'BF16'),
    q: encodeTensor(b, 'Q8_0'),
  };
  const meta = [
    kv.str('general.architecture', 'llama'),
    kv.u32('llama.block_count', 7),
    kv.i32('x.i32', -5),
    kv.f32('x.f32', 0.1),
    kv.bool('x.bool', true),
    kv.u64('x.u64', 2n ** 40n),
    { key: 'x.u8', type: GgufType.UINT8, value: 200 },
    { key: 'x.f64', type: GgufType.FLOAT64, value: Math.PI },
    kv.strs('x.strs', ['a', 'béta', '']),
    kv.i32s('x.i32s', [1, -2, 3]),
    // Far past the header buffer's first growth step.
    kv.strs('x.big', Array.from({ length: 20000 }, (_, i) => `token-${i}-ü`)),
  ] as const;
  writeGguf(path, [...meta], tensors, (n) => {
    // Q8_0 given in two chunks to exercise streaming.
    if (n === 'q') return [bytes.q.subarray(0, 34), bytes.q.subarray(34)];
    return bytes[n];
  });

  const h = readGgufHeader(path);
  assert.equal(h.version, 3);
  assert.equal(h.dataOffset % 32, 0);
  assert.equal(h.metadata.get('llama.block_count'), 7);
  assert.equal(h.metadata.get('x.i32'), -5);
  assert.equal(h.metadata.get('x.f32'), Math.fround(0.1));
  assert.equal(h.metadata.get('x.bool'), true);
  assert.equal(h.metadata.get('x.u64'), 2n ** 40n);
  assert.equal(h.metadata.get('x.u8'), 200);
  assert.equal(h.metadata.get('x.f64'), Math.PI);
  assert.deepEqual(h.metadata.get('x.strs'), ['a', 'béta', '']);
  assert.deepEqual(h.types.get('x.i32s'), [GgufType.ARRAY, GgufType.INT32]);
  const big = h.metadata.get('x.big') as string[];
  assert.equal(big.length, 20000);
  assert.ok(big.every((v, i) => v === `token-${i}-ü`));
  for (const t of tensors) {
    const info = h.tensors.find((x) => x.name === t.name)!;
    assert.deepEqual(info.shape, t.shape);
    assert.equal(info.type, GGML_TYPE[t.type]);
    assert.equal((info.offset - h.dataOffset) % 32, 0, `${t.name} aligned`);
    assert.ok(Buffer.from(readGgufTensor(path, h, t.name)).equals(Buffer.from(bytes[t.name])), `${t.name} bytes`);
  }

  // An independent parser: node-llama-cpp's (ne innermost first, as ggml stores it).
  const info = await readGgufFileInfo(path, { logWarnings: false });
  assert.equal(info.version, 3);
  assert.equal(info.tensorCount, 4);
  const md = info.metadata as unknown as Record<string, any>;
  assert.equal(md.general.architecture, 'llama');
  assert.equal(md.llama.block_count, 7);
  assert.deepEqual(md.x.strs, ['a', 'béta', '']);
  const ti = new Map(info.tensorInfo!.map((t) => [t.name, t]));
  assert.deepEqual(ti.get('a')!.dimensions.map(Number), [5, 3]);
  assert.deepEqual(ti.get('q')!.dimensions.map(Number), [64, 2, 1]);
  assert.equal(ti.get('q')!.ggmlType, 8);
  assert.equal(ti.get('bb')!.ggmlType, 30);
  assert.equal(Number(ti.get('b16')!.offset) % 32, 0);

  assert.throws(
    () => writeGguf(join(dir, 'bad.gguf'), [], [{ name: 'a', shape: [3, 5], type: 'F32' }], () => new Uint8Array(4)),
    /data\(\) gave 4 bytes, F32 \[3,5\] needs 60/,
  );
  assert.throws(() => writeGguf(join(dir, 'bad.gguf'), [kv.u32('k', -1)], [], () => new Uint8Array(0)), /does not fit/);
});

/** A tiny V3 checkpoint with FP8 linears, partial 128-blocks, an MTP module and group routing. */
function fp8Checkpoint(): string {
  const dir = tempDir('dsv3-gguf-src-');
  writeRandomCheckpoint(
    dir,
    tinyConfig({ hidden_size: 136, moe_intermediate_size: 40, kv_lora_rank: 132, n_group: 4, topk_group: 2 }),
    { dtype: 'FP8', seed: 11 },
  );
  return dir;
}

test('deepseek2 export: metadata and every tensor laid out as llama.cpp reads it', () => {
  const src = fp8Checkpoint();
  const cfg = loadConfig(src);
  const out = join(tempDir('dsv3-gguf-'), 'm.gguf');
  const r = convertToGguf(src, out, { type: 'f32' });
  assert.match(r.notes.join('\n'), /MTP module\(s\) .* not exported/);
  const h = readGgufHeader(out);
  const m = h.metadata;
  const A = 'deepseek2';
  const expect: Record<string, unknown> = {
    'general.architecture': A,
    [`${A}.block_count`]: 2,
    [`${A}.context_length`]: 128,
    [`${A}.embedding_length`]: 136,
    [`${A}.feed_forward_length`]: 96,
    [`${A}.attention.head_count`]: 2,
    [`${A}.attention.head_count_kv`]: 1,
    [`${A}.rope.freq_base`]: 10000,
    [`${A}.attention.layer_norm_rms_epsilon`]: Math.fround(1e-6),
    [`${A}.expert_count`]: 8,
    [`${A}.expert_used_count`]: 2,
    [`${A}.expert_group_count`]: 4,
    [`${A}.expert_group_used_count`]: 2,
    [`${A}.expert_gating_func`]: 2,
    [`${A}.leading_dense_block_count`]: 1,
    [`${A}.vocab_size`]: 128,
    [`${A}.attention.q_lora_rank`]: 48,
    [`${A}.attention.kv_lora_rank`]: 132,
    [`${A}.attention.key_length`]: 140,
    [`${A}.attention.value_length`]: 132,
    [`${A}.attention.key_length_mla`]: 24,
    [`${A}.attention.value_length_mla`]: 16,
    [`${A}.expert_feed_forward_length`]: 40,
    [`${A}.expert_shared_count`]: 1,
    [`${A}.expert_weights_scale`]: 2.5,
    [`${A}.expert_weights_norm`]: true,
    [`${A}.rope.dimension_count`]: 8,
    [`${A}.rope.scaling.type`]: 'yarn',
    [`${A}.rope.scaling.factor`]: 4,
    [`${A}.rope.scaling.original_context_length`]: 32,
    [`${A}.rope.scaling.yarn_beta_fast`]: 32,
    [`${A}.rope.scaling.yarn_beta_slow`]: 1,
    [`${A}.rope.scaling.yarn_log_multiplier`]: Math.fround(0.1),
    'general.file_type': 0,
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': 'deepseek-v3',
  };
  for (const [k, v] of Object.entries(expect)) assert.equal(m.get(k), v, k);
  assert.equal(h.types.get(`${A}.expert_weights_norm`), GgufType.BOOL);
  assert.equal(h.types.get(`${A}.expert_weights_scale`), GgufType.FLOAT32);
  assert.equal(h.types.get(`${A}.block_count`), GgufType.UINT32);
  assert.equal(m.has(`${A}.nextn_predict_layers`), false);
  const toks = m.get('tokenizer.ggml.tokens') as string[];
  assert.equal(toks.length, 128);
  assert.equal(new Set(toks).size, 128, 'distinct tokens');

  const ck = Checkpoint.open(src);
  const names = new Set(h.tensors.map((t) => t.name));
  assert.equal(names.size, h.tensors.length);
  assert.ok(![...names].some((n) => n.startsWith('blk.2.')), 'no MTP layer');
  const f32 = (n: string) => {
    const raw = readGgufTensor(out, h, n);
    return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  };
  const same = (gguf: string, hf: string) => {
    const t = h.tensors.find((x) => x.name === gguf)!;
    assert.deepEqual(t.shape, ck.entry(hf).shape, `${gguf} shape`);
    assert.deepEqual(f32(gguf), readF32(ck, hf), `${gguf} = ${hf}`);
  };
  same('token_embd.weight', 'model.embed_tokens.weight');
  same('output.weight', 'lm_head.weight');
  same('output_norm.weight', 'model.norm.weight');
  same('blk.0.attn_q_a.weight', 'model.layers.0.self_attn.q_a_proj.weight');
  same('blk.0.attn_q_a_norm.weight', 'model.layers.0.self_attn.q_a_layernorm.weight');
  same('blk.1.attn_q_b.weight', 'model.layers.1.self_attn.q_b_proj.weight');
  same('blk.1.attn_kv_a_mqa.weight', 'model.layers.1.self_attn.kv_a_proj_with_mqa.weight');
  same('blk.1.attn_output.weight', 'model.layers.1.self_attn.o_proj.weight');
  same('blk.0.ffn_down.weight', 'model.layers.0.mlp.down_proj.weight');
  same('blk.1.ffn_gate_inp.weight', 'model.layers.1.mlp.gate.weight');
  same('blk.1.exp_probs_b.bias', 'model.layers.1.mlp.gate.e_score_correction_bias');
  same('blk.1.ffn_up_shexp.weight', 'model.layers.1.mlp.shared_experts.up_proj.weight');
  same('blk.1.ffn_norm.weight', 'model.layers.1.post_attention_layernorm.weight');

  // FP8 weights are dequantised exactly: e4m3 · block scale in float32.
  const fp8 = ck.read('model.layers.0.self_attn.kv_b_proj.weight');
  assert.equal(fp8.dtype, 'F8_E4M3');
  const scale = toF32('F32', ck.read('model.layers.0.self_attn.kv_b_proj.weight_scale_inv').data);
  const kvb = readF32(ck, 'model.layers.0.self_attn.kv_b_proj.weight');
  const C = 132;
  const codes = toF32('F8_E4M3', fp8.data);
  for (let i = 0; i < kvb.length; i++) {
    const [row, col] = [Math.floor(i / C), i % C];
    assert.equal(kvb[i], Math.fround(codes[i] * scale[Math.floor(row / 128) * 2 + Math.floor(col / 128)]));
  }

  // MLA split: attn_k_b [H, C, nope] = key rows transposed, attn_v_b [H, v, C] = value rows.
  const H = 2;
  const nope = 16;
  const dv = 16;
  const kb = f32('blk.0.attn_k_b.weight');
  const vb = f32('blk.0.attn_v_b.weight');
  assert.deepEqual(h.tensors.find((t) => t.name === 'blk.0.attn_k_b.weight')!.shape, [H, C, nope]);
  assert.deepEqual(h.tensors.find((t) => t.name === 'blk.0.attn_v_b.weight')!.shape, [H, dv, C]);
  for (let hh = 0; hh < H; hh++) {
    for (let c = 0; c < C; c++) {
      for (let n = 0; n < nope; n++) assert.equal(kb[(hh * C + c) * nope + n], kvb[(hh * (nope + dv) + n) * C + c]);
      for (let j = 0; j < dv; j++) assert.equal(vb[(hh * dv + j) * C + c], kvb[(hh * (nope + dv) + nope + j) * C + c]);
    }
  }

  // Stacked experts [E, out, in], expert e at e·out·in.
  for (const [g, hf] of [['ffn_gate_exps', 'gate_proj'], ['ffn_down_exps', 'down_proj'], ['ffn_up_exps', 'up_proj']]) {
    const t = h.tensors.find((x) => x.name === `blk.1.${g}.weight`)!;
    const [E, rows, cols] = t.shape;
    assert.equal(E, 8);
    const all = f32(`blk.1.${g}.weight`);
    for (let e = 0; e < E; e++) {
      assert.deepEqual(all.subarray(e * rows * cols, (e + 1) * rows * cols), readF32(ck, `model.layers.1.mlp.experts.${e}.${hf}.weight`));
    }
  }
  ck.close();
});

test('deepseek2 export types: auto keeps stored dtypes, q8_0 quantises (F16 where rows are not 32-multiples)', () => {
  const src = fp8Checkpoint();
  const dir = tempDir('dsv3-gguf-');
  const ck = Checkpoint.open(src);

  const auto = join(dir, 'auto.gguf');
  convertToGguf(src, auto, { type: 'auto' });
  const ha = readGgufHeader(auto);
  const type = (h: typeof ha, n: string) => h.tensors.find((t) => t.name === n)!.type;
  assert.equal(type(ha, 'token_embd.weight'), GGML_TYPE.BF16, 'BF16 stays BF16');
  assert.ok(
    Buffer.from(readGgufTensor(auto, ha, 'token_embd.weight')).equals(Buffer.from(ck.read('model.embed_tokens.weight').data)),
    'BF16 copied bit for bit',
  );
  assert.equal(type(ha, 'blk.0.attn_q_a.weight'), GGML_TYPE.BF16, 'FP8 → BF16');
  assert.equal(type(ha, 'blk.1.ffn_gate_inp.weight'), GGML_TYPE.F32, 'router F32');
  assert.equal(type(ha, 'blk.1.exp_probs_b.bias'), GGML_TYPE.F32);
  assert.equal(type(ha, 'blk.0.attn_norm.weight'), GGML_TYPE.F32, 'norms F32');
  assert.equal(ha.metadata.get('general.file_type'), 32);

  const q8 = join(dir, 'q8.gguf');
  const r = convertToGguf(src, q8, { type: 'q8_0' });
  const hq = readGgufHeader(q8);
  assert.equal(type(hq, 'blk.0.ffn_down.weight'), GGML_TYPE.Q8_0);
  assert.ok(
    Buffer.from(readGgufTensor(q8, hq, 'blk.0.ffn_down.weight')).equals(
      Buffer.from(quantizeQ8_0(readF32(ck, 'model.layers.0.mlp.down_proj.weight'))),
    ),
  );
  // hidden 136 is not a multiple of 32: every [*, 136] matrix falls back to F16.
  assert.equal(type(hq, 'token_embd.weight'), GGML_TYPE.F16);
  assert.match(r.notes.join("\n"), /token_embd\.weight: rows of 136 are not whole Q8_0 blocks, written as F16/);
  // general.file_type names the recipe (LLAMA_FTYPE_MOSTLY_Q8_0), as llama-quantize writes it.
  assert.equal(hq.metadata.get('general.file_type'), 7);
  ck.close();
});

test('deepseek2 export of a V2-Lite-style model: plain q_proj, softmax routing, no bias, no renormalisation', () => {
  const src = tempDir('dsv3-gguf-v2-');
  writeRandomCheckpoint(
    src,
    tinyConfig({
      ...V2_STYLE,
      rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 256, mscale: 0.707, mscale_all_dim: 0.707 },
    }),
  );
  const out = join(tempDir('dsv3-gguf-'), 'v2.gguf');
  const r = convertToGguf(src, out);
  assert.deepEqual(r.notes, []);
  const h = readGgufHeader(out);
  const m = h.metadata;
  assert.equal(m.get('deepseek2.attention.q_lora_rank'), 0, 'written as 0: llama.cpp only treats 26/27-layer models as lite');
  assert.equal(m.get('deepseek2.expert_gating_func'), 1);
  assert.equal(m.has('deepseek2.expert_weights_norm'), false);
  assert.equal(m.has('deepseek2.expert_group_count'), false);
  assert.equal(m.has('deepseek2.rope.scaling.type'), false, 'no YaRN: max_position_embeddings ≤ original');
  const names = h.tensors.map((t) => t.name);
  assert.ok(names.includes('blk.0.attn_q.weight'));
  assert.ok(!names.some((n) => n.includes('attn_q_a') || n.includes('exp_probs_b')));

  // V2's group-limited greedy routing scores a group by its best expert; llama.cpp sums the best two.
  const grouped = tempDir('dsv3-gguf-v2g-');
  writeRandomCheckpoint(
    grouped,
    tinyConfig({ model_type: 'deepseek_v2', topk_method: 'group_limited_greedy', scoring_func: 'softmax', n_group: 2, topk_group: 1 }),
  );
  const rg = convertToGguf(grouped, join(tempDir('dsv3-gguf-'), 'v2g.gguf'));
  assert.match(rg.notes.join('\n'), /group-limited routing without the selection bias/);
});

test('tokenizer metadata from DeepSeek-V3 tokenizer.json (as convert_hf_to_gguf writes it)', () => {
  const pkg = DEEPSEEK_TOKENIZER_DIR;
  const dir = tempDir('dsv3-tok-');
  copyFileSync(join(pkg, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(pkg, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  const md = new Map(tokenizerMetadata(dir, 129280).map((e) => [e.key, e.value]));
  const tokens = md.get('tokenizer.ggml.tokens') as string[];
  const types = md.get('tokenizer.ggml.token_type') as number[];
  assert.equal(tokens.length, 129280);
  assert.equal(tokens[0], '<｜begin▁of▁sentence｜>');
  assert.equal(types[0], 3, 'control');
  assert.equal(tokens[128800], '<｜fim▁hole｜>');
  assert.equal(types[128800], 3, 'looks special → control');
  assert.equal(tokens[129279], '[PAD129279]');
  assert.equal(types[129279], 5, 'unused');
  assert.equal(types[300], 1);
  assert.equal(md.get('tokenizer.ggml.bos_token_id'), 0);
  assert.equal(md.get('tokenizer.ggml.eos_token_id'), 1);
  assert.equal(md.get('tokenizer.ggml.add_bos_token'), true);
  assert.equal(md.get('tokenizer.ggml.add_eos_token'), false);
  assert.match(md.get('tokenizer.chat_template') as string, /add_generation_prompt/);
  const merges = md.get('tokenizer.ggml.merges') as string[];
  assert.equal(merges[0], 'Ġ t');
});

test('dsv3 convert --to gguf: writes the file, rejects a bad --type', async () => {
  const src = tempDir('dsv3-gguf-cli-');
  writeRandomCheckpoint(src, tinyConfig({ num_nextn_predict_layers: 0 }), { dtype: 'BF16' });
  const out = join(tempDir('dsv3-gguf-'), 'm.gguf');
  const log: string[] = [];
  const origErr = process.stderr.write.bind(process.stderr);
  const origOut = process.stdout.write.bind(process.stdout);
  process.stderr.write = ((s: string) => (log.push(String(s)), true)) as typeof process.stderr.write;
  process.stdout.write = ((s: string) => (log.push(String(s)), true)) as typeof process.stdout.write;
  let codes: number[];
  try {
    codes = [
      await main(['convert', '--model', src, '--to', 'gguf', '--out', out, '--type', 'bf16']),
      await main(['convert', '--model', src, '--to', 'gguf', '--out', out, '--type', 'q4']),
    ];
  } finally {
    process.stderr.write = origErr;
    process.stdout.write = origOut;
  }
  assert.deepEqual(codes, [0, 2]);
  assert.match(log.join(''), /--type must be one of auto, f32, f16, bf16, q8_0, q6_k, q4_k_m, got "q4"/);
  assert.equal(readGgufHeader(out).metadata.get('general.file_type'), 32);
});
