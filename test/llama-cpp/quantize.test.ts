// `dsv3 convert --to gguf --type q8_0|q6_k|q4_k_m` against llama.cpp's own quantizer on the same
// input: llama-quantize quantizes our lossless F32 export of each golden model, and every tensor of
// our direct export must have the same ggml type and the same bytes, and the files the same
// general.file_type. Always against what llama-quantize wrote (test/fixtures/llama-quantize: types
// and SHA-256 of every tensor); and again against a live llama-quantize when one is built (from the
// llama.cpp source node-llama-cpp ships, into .cache/llama.cpp/build by `npm run bench`).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { convertToGguf } from '../../src/io/convert-gguf.ts';
import { GgufFile } from '../../src/io/gguf.ts';
import { tempDir } from '../helpers/fixtures.ts';
import { GOLDEN_MISSING, goldenModelDir, goldenModels } from '../helpers/golden.ts';

const QUANTIZE = join(import.meta.dirname, '..', '..', '.cache', 'llama.cpp', 'build', 'bin', 'llama-quantize');
const missing = existsSync(QUANTIZE) ? false : `${QUANTIZE} is not built (npm run bench -- --prepare builds it)`;

type Listing = Record<string, Record<string, { file_type: number; tensors: Record<string, [number, string]> }>>;
const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'llama-quantize', 'golden-models.json');

describe('convert --to gguf writes what llama-quantize wrote (recorded)', { skip: GOLDEN_MISSING }, () => {
  const recorded = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Listing;
  for (const name of goldenModels()) {
    for (const recipe of ['q8_0', 'q6_k', 'q4_k_m'] as const) {
      it(`${name} ${recipe}: every tensor's type and SHA-256`, (t) => {
        const want = recorded[name]?.[recipe];
        if (!want) return t.skip(`no recording for ${name} ${recipe}`);
        const file = join(tempDir('dsv3-quant-'), 'ours.gguf');
        convertToGguf(goldenModelDir(name), file, { type: recipe });
        const f = GgufFile.open(file);
        try {
          const got: Record<string, [number, string]> = {};
          for (const x of f.header.tensors) got[x.name] = [x.type, createHash('sha256').update(f.tensor(x.name).data).digest('hex').slice(0, 16)];
          assert.deepEqual(got, want.tensors);
          assert.equal(f.metadata.get('general.file_type'), want.file_type);
        } finally {
          f.close();
        }
      });
    }
  }
});

describe('convert --to gguf quantizes as llama-quantize does (live)', { skip: GOLDEN_MISSING || missing }, () => {
  for (const name of goldenModels()) {
    for (const recipe of ['q8_0', 'q6_k', 'q4_k_m'] as const) {
      it(`${name} ${recipe}: same types and bytes, tensor by tensor`, () => {
        const dir = goldenModelDir(name);
        const tmp = tempDir('dsv3-quant-');
        const f32 = join(tmp, 'f32.gguf');
        const ours = join(tmp, 'ours.gguf');
        const theirs = join(tmp, 'theirs.gguf');
        convertToGguf(dir, f32, { type: 'f32' });
        convertToGguf(dir, ours, { type: recipe });
        execFileSync(QUANTIZE, [f32, theirs, recipe.toUpperCase(), '1'], { stdio: 'pipe' });
        const a = GgufFile.open(ours);
        const b = GgufFile.open(theirs);
        try {
          assert.deepEqual(a.header.tensors.map((t) => t.name).sort(), b.header.tensors.map((t) => t.name).sort());
          const differ: string[] = [];
          for (const t of b.header.tensors) {
            const mine = a.info(t.name);
            if (mine.type !== t.type) differ.push(`${t.name}: type ${mine.type}, llama-quantize ${t.type}`);
            else if (Buffer.compare(Buffer.from(a.tensor(t.name).data), Buffer.from(b.tensor(t.name).data)) !== 0) differ.push(`${t.name}: bytes`);
          }
          assert.deepEqual(differ, []);
          assert.equal(a.metadata.get('general.file_type'), b.metadata.get('general.file_type'));
        } finally {
          a.close();
          b.close();
        }
      });
    }
  }
});
