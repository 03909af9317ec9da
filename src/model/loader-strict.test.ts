// The loader refuses what it cannot run faithfully: tensors the config has no place for
// (more layers than the config, stray names) are errors, extras a known format may carry
// are one note naming them; config numbers out of range, non-regular files, absurd token
// ids and NaN/Inf weights are clear errors. Bad checkpoints are copies of the shipped and
// golden ones in temp folders; every shipped and golden model still loads without a note.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3, type LoadOptions } from './deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { convertToGguf } from '../io/convert-gguf.ts';
import { GgufFile, GgufType, writeGguf, type GgufKV, type GgufScalarType, type GgufTensorSpec, type GgmlTypeName } from '../io/gguf.ts';
import { formatOfGgml } from '../tensor/dtypes.ts';
import { parseConfig } from '../io/config.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { toApiError } from '../server/errors.ts';
import { DsError, type ErrorCode } from '../errors.ts';
import { DEFAULT_MODEL_DIR, rewriteCheckpoint as rewrite, tempDir } from '../../test/helpers/fixtures.ts';
import { GOLDEN_MISSING, REPO_ROOT, goldenModelDir, goldenModels } from '../../test/helpers/golden.ts';

/** A copy of a checkpoint folder (its config, weights and tokenizer files) in a temp folder. */
function copyModel(src: string): string {
  const dst = tempDir('dsv3-strict-');
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
    try {
      copyFileSync(join(src, f), join(dst, f));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return dst;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  edit(c);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
}

function load(path: string, opts: Partial<LoadOptions> = {}) {
  const notes: string[] = [];
  const model = DeepseekV3.load(path, { kernels: refKernels, onNote: (n) => notes.push(n), ...opts });
  return { model, notes };
}

function fails(fn: () => unknown, code: ErrorCode, ...patterns: RegExp[]): DsError {
  let err: unknown;
  assert.throws(fn, (e: unknown) => ((err = e), true));
  assert.ok(err instanceof DsError, `expected a DsError, got ${err}`);
  assert.equal(err.code, code, err.message);
  for (const p of patterns) assert.match(err.message, p);
  return err;
}

const F32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);

/** A copy of a GGUF file with its metadata edited and tensors added (others kept). */
function rewriteGguf(src: string, dst: string, meta: (kvs: GgufKV[]) => GgufKV[], add: { spec: GgufTensorSpec; data: Uint8Array }[]): void {
  const f = GgufFile.open(src);
  try {
    let kvs: GgufKV[] = [];
    for (const [key, value] of f.metadata) {
      if (key === 'general.alignment') continue;
      const t = f.header.types.get(key)!;
      kvs.push(Array.isArray(t)
        ? { key, type: GgufType.ARRAY, itemType: t[1] as GgufScalarType, value: value as (string | number)[] }
        : { key, type: t as GgufScalarType, value: value as string | number });
    }
    kvs = meta(kvs);
    const specs: GgufTensorSpec[] = [
      ...f.header.tensors.map((t) => ({ name: t.name, shape: t.shape, type: formatOfGgml(t.type) as GgmlTypeName })),
      ...add.map((a) => a.spec),
    ];
    const extra = new Map(add.map((a) => [a.spec.name, a.data]));
    writeGguf(dst, kvs, specs, (n) => extra.get(n) ?? f.tensor(n).data);
  } finally {
    f.close();
  }
}

describe('strict loading', () => {
  it('every golden model and the shipped model load without a note, with and without MTP, and as GGUF', () => {
    const dirs = [DEFAULT_MODEL_DIR, ...(GOLDEN_MISSING ? [] : goldenModels().map(goldenModelDir))];
    for (const dir of dirs) {
      for (const mtp of [false, true]) assert.deepEqual(load(dir, { mtp }).notes, [], `${dir} (mtp ${mtp})`);
    }
    const gguf = join(tempDir('dsv3-strict-gguf-'), 'default.gguf');
    convertToGguf(DEFAULT_MODEL_DIR, gguf, { type: 'auto' });
    assert.deepEqual(load(gguf).notes, []);
  });

  it('a config with fewer layers than the checkpoint is an error naming the layer and the counts', () => {
    // The shipped model: 3 layers + 1 MTP layer (model.layers.3).
    const dir = copyModel(DEFAULT_MODEL_DIR);
    editConfig(dir, (c) => void (c.num_hidden_layers = 2));
    // Layer 2 would pass for the (unloaded) MTP layer; layer 3 has no place.
    fails(() => load(dir, { mtp: false }), 'UNUSED_TENSOR', /layer 3 \(model\.layers\.3\./, /num_hidden_layers 2 \+ num_nextn_predict_layers 1/, /fewer layers than the checkpoint/);
    editConfig(dir, (c) => {
      c.num_hidden_layers = 3;
      c.num_nextn_predict_layers = 0; // the MTP layer is then a layer the config lacks
    });
    fails(() => load(dir), 'UNUSED_TENSOR', /layer 3/, /num_nextn_predict_layers 0/);
  });

  it('a stray tensor, or FP8 scales beside a weight that is not FP8, is an error naming it', () => {
    const dir = copyModel(DEFAULT_MODEL_DIR);
    rewrite(dir, (specs, data) => {
      specs.push({ name: 'model.layers.0.mlp.extra.weight', dtype: 'F32', shape: [2] });
      data.set('model.layers.0.mlp.extra.weight', F32([1, 2]));
    });
    fails(() => load(dir), 'UNUSED_TENSOR', /1 tensor the config has no place for: "model\.layers\.0\.mlp\.extra\.weight"/);

    const dir2 = copyModel(DEFAULT_MODEL_DIR);
    rewrite(dir2, (specs, data) => {
      const n = 'model.layers.0.self_attn.o_proj.weight_scale_inv';
      specs.push({ name: n, dtype: 'F32', shape: [2, 1] });
      data.set(n, F32([1, 1]));
    });
    fails(() => load(dir2), 'UNUSED_TENSOR', /o_proj\.weight_scale_inv/);
  });

  it('rotary inv_freq buffers and a split kv_b beside the joint one are tolerated with one note naming them', () => {
    const dir = copyModel(DEFAULT_MODEL_DIR);
    rewrite(dir, (specs, data) => {
      for (let i = 0; i < 3; i++) {
        const n = `model.layers.${i}.self_attn.rotary_emb.inv_freq`;
        specs.push({ name: n, dtype: 'F32', shape: [8] });
        data.set(n, F32([1, 2, 3, 4, 5, 6, 7, 8]));
      }
      const n = 'model.layers.1.self_attn.k_b_proj.weight';
      specs.push({ name: n, dtype: 'F32', shape: [2] });
      data.set(n, F32([0, 0]));
    });
    const { model, notes } = load(dir, { mtp: false });
    assert.equal(notes.length, 1, notes.join('\n'));
    assert.match(notes[0], /^warning: .*ignoring 4 tensors the model does not use: /);
    assert.match(notes[0], /model\.layers\.\*\.self_attn\.rotary_emb\.inv_freq \(×3\)/);
    assert.match(notes[0], /model\.layers\.\*\.self_attn\.k_b_proj\.weight/);
    assert.ok(model.weights.layers[1].self_attn.kv_b_proj, 'the joint kv_b_proj is the one used');
  });

  it('GGUF: llama.cpp extras get one note; blocks past block_count are an error; NextN blocks are not run', () => {
    const tmp = tempDir('dsv3-strict-gguf-');
    const base = join(tmp, 'base.gguf');
    convertToGguf(DEFAULT_MODEL_DIR, base, { type: 'auto' });
    const f32 = (name: string, n: number) => ({ spec: { name, shape: [n], type: 'F32' as const }, data: F32(Array.from({ length: n }, (_, i) => i + 1)) });

    const extras = join(tmp, 'extras.gguf');
    rewriteGguf(base, extras, (m) => m, [f32('rope_freqs.weight', 8)]);
    const { notes } = load(extras);
    assert.equal(notes.length, 1);
    assert.match(notes[0], /ignoring 1 tensor the model does not use: rope_freqs\.weight$/);

    const more = join(tmp, 'more.gguf');
    rewriteGguf(base, more, (m) => m, [f32('blk.7.attn_norm.weight', 256)]);
    fails(() => load(more), 'UNUSED_TENSOR', /layer 7 \(blk\.7\./, /block_count 3/);

    // block_count 3 of which 1 NextN: blk.2 is the MTP block, not a decoder layer.
    const nextn = join(tmp, 'nextn.gguf');
    rewriteGguf(base, nextn, (m) => [...m, { key: 'deepseek2.nextn_predict_layers', type: GgufType.UINT32, value: 1 }], []);
    const r = load(nextn);
    assert.equal(r.model.cfg.num_hidden_layers, 2);
    assert.equal(r.notes.length, 1);
    assert.match(r.notes[0], /ignoring \d+ tensors the model does not use: blk\.\*\.attn_norm\.weight/);
  });

  it('range-checks every config number, naming the field', () => {
    const raw = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'config.json'), 'utf8'));
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ rope_scaling: { ...raw.rope_scaling, factor: 0 } }, /rope_scaling: field "factor" must be > 0, got 0/],
      [{ rope_scaling: { ...raw.rope_scaling, factor: -2 } }, /rope_scaling: field "factor" must be > 0/],
      [{ rope_scaling: { ...raw.rope_scaling, beta_fast: 0 } }, /rope_scaling: field "beta_fast" must be > 0/],
      [{ rope_theta: 0 }, /field "rope_theta" must be > 0, got 0/],
      [{ rope_theta: -10000 }, /field "rope_theta" must be > 0/],
      [{ rope_theta: 1 }, /rope_theta must be > 1 with YaRN/],
      [{ rms_norm_eps: -1e-6 }, /field "rms_norm_eps" must be >= 0/],
      [{ routed_scaling_factor: 0 }, /field "routed_scaling_factor" must be > 0/],
      [{ qk_nope_head_dim: 0 }, /field "qk_nope_head_dim" must be >= 1/],
      [{ v_head_dim: -32 }, /field "v_head_dim" must be >= 1/],
      [{ qk_rope_head_dim: 15 }, /qk_rope_head_dim must be even, got 15/],
      [{ hidden_size: 2 ** 30 }, /field "hidden_size" must be <= 1048576/],
      [{ num_hidden_layers: 1e9 }, /field "num_hidden_layers" must be <= 4096/],
      [{ n_routed_experts: 1e7 }, /field "n_routed_experts" must be <= 65536/],
      [{ num_nextn_predict_layers: -1 }, /field "num_nextn_predict_layers" must be >= 0/],
      [{ max_position_embeddings: 1e12 }, /field "max_position_embeddings" must be <= /],
      [{ num_experts_per_tok: 17 }, /num_experts_per_tok \(17\) must not exceed n_routed_experts \(16\)/],
      [{ n_group: 3 }, /n_group \(3\) must divide n_routed_experts \(16\)/],
      [{ topk_group: 5 }, /topk_group \(5\) must not exceed n_group \(4\)/],
      [{ first_k_dense_replace: 9 }, /first_k_dense_replace \(9\) exceeds num_hidden_layers \(3\)/],
      [{ vocab_size: 2 ** 40 }, /field "vocab_size" must be <= /],
      [{ bos_token_id: 9000 }, /field "bos_token_id" must be a token id in \[0, vocab_size 8192\)/],
      [{ eos_token_id: [1, -1] }, /field "eos_token_id" must be token ids/],
      [{ tie_word_embeddings: 'false' }, /field "tie_word_embeddings" must be true or false/],
    ];
    for (const [change, pattern] of bad) {
      fails(() => parseConfig({ ...raw, ...change }, 'm/config.json'), 'BAD_CONFIG', pattern, /^m\/config\.json: /);
    }
    // The real thing: a copy of the shipped model with a bad value fails at load.
    const dir = copyModel(DEFAULT_MODEL_DIR);
    editConfig(dir, (c) => void (c.rms_norm_eps = -1));
    fails(() => load(dir), 'BAD_CONFIG', /config\.json: field "rms_norm_eps" must be >= 0, got -1/);
  });

  it('refuses non-regular files at once: a FIFO or a folder as model.safetensors, a FIFO as config.json', () => {
    // In a child process: a regression would block in open() for ever, which a timeout there catches.
    const probe = (dir: string) => {
      const code = `import('${join(REPO_ROOT, 'src/model/deepseek-v3.ts')}').then(async ({ DeepseekV3 }) => {
        const { refKernels } = await import('${join(REPO_ROOT, 'src/kernels/ref/index.ts')}');
        try { DeepseekV3.load(${JSON.stringify(dir)}, { kernels: refKernels }); console.log('loaded'); }
        catch (e) { console.log(e.code + ' ' + e.message); }
      })`;
      const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { encoding: 'utf8', timeout: 60_000, cwd: REPO_ROOT });
      assert.equal(r.signal, null, `the load hung (killed by the timeout): ${r.stderr}`);
      return r.stdout.trim();
    };
    const fifo = copyModel(DEFAULT_MODEL_DIR);
    unlinkSync(join(fifo, 'model.safetensors'));
    execFileSync('mkfifo', [join(fifo, 'model.safetensors')]);
    assert.match(probe(fifo), /^BAD_SAFETENSORS .*model\.safetensors: is not a regular file \(a FIFO/);

    const folder = copyModel(DEFAULT_MODEL_DIR);
    unlinkSync(join(folder, 'model.safetensors'));
    mkdirSync(join(folder, 'model.safetensors'));
    assert.match(probe(folder), /^BAD_SAFETENSORS .*model\.safetensors: is a folder, not a file/);

    const cfg = copyModel(DEFAULT_MODEL_DIR);
    unlinkSync(join(cfg, 'config.json'));
    execFileSync('mkfifo', [join(cfg, 'config.json')]);
    assert.match(probe(cfg), /^BAD_CONFIG .*config\.json: is not a regular file/);

    assert.match(probe(join(fifo, 'model.safetensors')), /^BAD_INPUT .*neither a folder nor a regular file/);
  });

  it('refuses a tokenizer with an absurd token id instead of stalling', () => {
    const tj = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'tokenizer.json'), 'utf8'));
    const tc = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'tokenizer_config.json'), 'utf8'));
    const withAdded = (id: unknown) => ({ ...tj, added_tokens: [...tj.added_tokens, { ...tj.added_tokens[0], id, content: '<x>' }] });
    const t0 = performance.now();
    fails(() => Tokenizer.fromFiles(withAdded(2 ** 31), tc), 'BAD_CONFIG', /added_tokens\[\d+\] \("<x>"\) has id 2147483648, not an integer in \[0, 4194303\]/);
    assert.ok(performance.now() - t0 < 5000, 'refused at once');
    fails(() => Tokenizer.fromFiles(withAdded(-1), tc), 'BAD_CONFIG', /has id -1/);
    fails(() => Tokenizer.fromFiles(withAdded(1.5), tc), 'BAD_CONFIG', /has id 1\.5/);
    const vocab = { ...tj, model: { ...tj.model, vocab: { ...tj.model.vocab, zzz: 2 ** 40 } } };
    fails(() => Tokenizer.fromFiles(vocab, tc), 'BAD_CONFIG', /token "zzz" has id 1099511627776/);
    assert.ok(Tokenizer.fromFiles(tj, tc).vocabSize > 0, 'the shipped tokenizer passes');
  });

  it('NaN/Inf weights are a model error (BAD_WEIGHTS, a 500 for the server) naming the tensor', () => {
    const poison = (dir: string, name: string, bits: number, at = 3) =>
      rewrite(dir, (specs, data) => {
        const spec = specs.find((s) => s.name === name)!;
        const d = data.get(name)!;
        if (spec.dtype === 'BF16') new DataView(d.buffer, d.byteOffset).setUint16(2 * at, bits, true);
        else if (spec.dtype === 'F32') new DataView(d.buffer, d.byteOffset).setUint32(4 * at, bits, true);
        else d[at] = bits;
      });
    // The shipped model is BF16: a NaN in a norm, an infinity in a matrix.
    const norm = copyModel(DEFAULT_MODEL_DIR);
    poison(norm, 'model.norm.weight', 0x7fc0);
    const e = fails(() => load(norm), 'BAD_WEIGHTS', /tensor "model\.norm\.weight" holds NaN or infinite values \(first at element 3\)/);
    const api = toApiError(e);
    assert.equal(api.status, 500, 'a model error, not the client\'s 400');
    const inf = copyModel(DEFAULT_MODEL_DIR);
    poison(inf, 'model.layers.1.mlp.experts.5.up_proj.weight', 0xff80, 100);
    fails(() => load(inf), 'BAD_WEIGHTS', /"model\.layers\.1\.mlp\.experts\.5\.up_proj\.weight" .*element 100/);
    if (GOLDEN_MISSING) return;
    // FP8 (e4m3 has NaN codes 0x7F / 0xFF) and its F32 block scales.
    const fp8 = copyModel(goldenModelDir('v3-fp8'));
    poison(fp8, 'model.layers.1.mlp.experts.0.down_proj.weight', 0xff);
    fails(() => load(fp8), 'BAD_WEIGHTS', /experts\.0\.down_proj\.weight" holds NaN/);
    const scale = copyModel(goldenModelDir('v3-fp8'));
    poison(scale, 'model.layers.0.self_attn.o_proj.weight_scale_inv', 0x7f800000, 0);
    fails(() => load(scale), 'BAD_WEIGHTS', /o_proj\.weight_scale_inv" holds NaN or infinite values/);
  });

  it('model.attn sets the attention path of every forward pass that names none', () => {
    const { model } = load(DEFAULT_MODEL_DIR, { mtp: false });
    const ids = [1, 50, 300, 7, 99, 1000];
    const run = (attn?: 'absorb' | 'naive') => model.forward([{ ids, cache: model.newCache() }], { logits: 'all', attn }).logits;
    const absorb = run('absorb');
    const naive = run('naive');
    assert.notDeepEqual(absorb, naive, 'the two paths round differently');
    assert.deepEqual(run(), absorb, 'absorb by default');
    model.attn = 'naive';
    assert.deepEqual(run(), naive);
  });
});
