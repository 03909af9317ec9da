// GGUF files beyond the layout `dsv3 convert --to gguf` writes today, each checked against the
// official reference's logits (../shared/golden) or against the checkpoint it came from:
// * files from before llama.cpp split MLA's kv_b into attn_k_b / attn_v_b hold one attn_kv_b
//   (kv_b_proj as it is), in both attention paths;
// * an F16 file gives the logits of its source checkpoint with every matrix rounded to f16;
// * a tensor in a ggml type dsv3 cannot use is an error naming the tensor and the type.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertToGguf } from '../../src/io/convert-gguf.ts';
import { GgufFile, GgufType, writeGguf, type GgufKV, type GgufScalarType, type GgufTensorSpec, type GgmlTypeName } from '../../src/io/gguf.ts';
import { Checkpoint } from '../../src/io/safetensors.ts';
import { formatOfGgml } from '../../src/tensor/dtypes.ts';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { quantizeMatrix } from '../../src/model/quantize.ts';
import { mapMatrices } from '../../src/model/weights.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { loadNative, mapFileInPlace, nativeLoadError } from '../../src/kernels/native.ts';
import { DsError } from '../../src/errors.ts';
import { tempDir } from '../helpers/fixtures.ts';
import { GOLDEN_MISSING, goldenModelDir, goldenModels, logitTolerance, maxAbs, maxAbsDiff, readJson } from '../helpers/golden.ts';

interface Golden {
  weights_storage: string;
  cases: { prompt: number[]; logits_all: number[][] }[];
}

/** A copy of a GGUF file with some tensors dropped and others added (metadata kept). */
function rewriteGguf(src: string, dst: string, drop: (name: string) => boolean, add: { spec: GgufTensorSpec; data: Uint8Array }[]): void {
  const f = GgufFile.open(src);
  try {
    const meta: GgufKV[] = [];
    for (const [key, value] of f.metadata) {
      if (key === 'general.alignment') continue;
      const t = f.header.types.get(key)!;
      meta.push(Array.isArray(t)
        ? { key, type: GgufType.ARRAY, itemType: t[1] as GgufScalarType, value: value as (string | number)[] }
        : { key, type: t as GgufScalarType, value: value as string | number });
    }
    const kept = f.header.tensors.filter((t) => !drop(t.name));
    const specs: GgufTensorSpec[] = [
      ...kept.map((t) => ({ name: t.name, shape: t.shape, type: formatOfGgml(t.type) as GgmlTypeName })),
      ...add.map((a) => a.spec),
    ];
    const extra = new Map(add.map((a) => [a.spec.name, a.data]));
    writeGguf(dst, meta, specs, (n) => extra.get(n) ?? f.tensor(n).data);
  } finally {
    f.close();
  }
}

describe('GGUF layouts', { skip: GOLDEN_MISSING }, () => {
  for (const name of goldenModels().filter((n) => n === 'v3-tiny' || n === 'v2-lite-tiny')) {
    it(`${name}: a file with the joint attn_kv_b (before llama.cpp's split) matches the reference`, () => {
      const dir = goldenModelDir(name);
      const g = readJson<Golden>(join(dir, 'golden.json'));
      const tmp = tempDir('dsv3-kvb-');
      const split = join(tmp, 'split.gguf');
      const joint = join(tmp, 'joint.gguf');
      convertToGguf(dir, split, { type: 'f32' });
      const ck = Checkpoint.open(dir);
      const layers = Number(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).num_hidden_layers);
      const add = Array.from({ length: layers }, (_, i) => {
        const t = ck.read(`model.layers.${i}.self_attn.kv_b_proj.weight`);
        return { spec: { name: `blk.${i}.attn_kv_b.weight`, shape: t.shape, type: 'F32' as const }, data: t.data };
      });
      ck.close();
      rewriteGguf(split, joint, (n) => /\.attn_[kv]_b\.weight$/.test(n), add);
      const model = DeepseekV3.load(joint, { kernels: refKernels });
      assert.ok(model.weights.layers[0].self_attn.kv_b_proj, 'kv_b_proj loaded whole');
      assert.equal(model.weights.layers[0].self_attn.k_b_proj, null);
      const tol = logitTolerance(g.weights_storage, Math.max(...g.cases.map((c) => maxAbs(c.logits_all))));
      for (const attn of ['absorb', 'naive'] as const) {
        for (const c of g.cases) {
          const r = model.forward([{ ids: c.prompt, cache: model.newCache() }], { logits: 'all', attn });
          const d = maxAbsDiff(r.logits, c.logits_all);
          assert.ok(d <= tol, `${attn}, prompt of ${c.prompt.length}: max |Δ| ${d} > ${tol}`);
        }
      }
    });
  }

  it('an F16 file gives the logits of its source with every matrix rounded to f16', () => {
    const dir = goldenModelDir('v3-tiny');
    const file = join(tempDir('dsv3-f16-'), 'f16.gguf');
    convertToGguf(dir, file, { type: 'f16' });
    const fromGguf = DeepseekV3.load(file, { kernels: refKernels });
    assert.equal(fromGguf.weights.layers[1].moe!.experts[0].up_proj.dtype, 'F16');
    const src = DeepseekV3.load(dir, { kernels: refKernels, mtp: false });
    // Every matrix in f16, but the router, which GGUF keeps in F32 (as convert_hf_to_gguf does).
    const routers = new Set(src.weights.layers.map((l) => l.moe?.gate));
    const w16 = mapMatrices(src.weights, (m) => (routers.has(m) ? m : quantizeMatrix(refKernels, m, 'F16')));
    const rounded = new DeepseekV3(src.cfg, w16, refKernels);
    const g = readJson<Golden>(join(dir, 'golden.json'));
    for (const c of g.cases) {
      const a = fromGguf.forward([{ ids: c.prompt, cache: fromGguf.newCache() }], { logits: 'all' }).logits;
      const b = rounded.forward([{ ids: c.prompt, cache: rounded.newCache() }], { logits: 'all' }).logits;
      let d = 0;
      let m = 0;
      for (let i = 0; i < a.length; i++) {
        d = Math.max(d, Math.abs(a[i] - b[i]));
        m = Math.max(m, Math.abs(b[i]));
      }
      // The same f16 weights; only the absorbed attention's order differs (split attn_k_b).
      assert.ok(d <= 1e-5 * (1 + m), `prompt of ${c.prompt.length}: max |Δ| ${d}`);
    }
  });

  it('weights used in place from a mapped file give the numbers of weights read into memory (bitwise)', (t) => {
    const dir = goldenModelDir('v3-tiny-bf16');
    const file = join(tempDir('dsv3-map-'), 'm.gguf');
    convertToGguf(dir, file, { type: 'auto' });
    if (!mapFileInPlace(file)) return t.skip(`native addon not loaded (${nativeLoadError()}): no mapping`);
    const K = loadNative() ?? refKernels;
    const mapped = { ...K, mapFile: mapFileInPlace };
    const read = { ...K, mapFile: undefined };
    const g = readJson<Golden>(join(dir, 'golden.json'));
    for (const path of [dir, file]) {
      const a = DeepseekV3.load(path, { kernels: mapped });
      const b = DeepseekV3.load(path, { kernels: read });
      // Mapped: every matrix is a view into the one mapping of its file, not a copy.
      const w = a.weights.layers[1].moe!.experts[3].down_proj.data;
      assert.equal(w.buffer.byteLength, statSync(path === dir ? join(dir, 'model.safetensors') : file).size, `${path}: a view of the mapping`);
      assert.notEqual(b.weights.layers[1].moe!.experts[3].down_proj.data.buffer.byteLength, w.buffer.byteLength);
      for (const c of g.cases) {
        const la = a.forward([{ ids: c.prompt, cache: a.newCache() }], { logits: 'all' }).logits;
        const lb = b.forward([{ ids: c.prompt, cache: b.newCache() }], { logits: 'all' }).logits;
        assert.deepEqual(la, lb, `${path}, prompt of ${c.prompt.length}`);
      }
    }
  });

  it('a tensor in a type dsv3 cannot use is BAD_DTYPE naming the tensor and the type', () => {
    const dir = goldenModelDir('v3-tiny');
    const file = join(tempDir('dsv3-badtype-'), 'm.gguf');
    convertToGguf(dir, file, { type: 'f32' });
    // Rewrite blk.0.attn_output.weight's ggml type to Q2_K (10) in the tensor info.
    const bytes = readFileSync(file);
    const at = bytes.indexOf(Buffer.from('blk.0.attn_output.weight'));
    assert.ok(at > 0);
    const nd = bytes.readUInt32LE(at + 24);
    bytes.writeUInt32LE(10, at + 24 + 4 + 8 * nd);
    writeFileSync(file, bytes);
    assert.throws(
      () => DeepseekV3.load(file, { kernels: refKernels }),
      (e: unknown) => e instanceof DsError && e.code === 'BAD_DTYPE' && /blk\.0\.attn_output\.weight" has ggml type Q2_K/.test(e.message),
    );
  });
});
