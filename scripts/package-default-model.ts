// Packs a training checkpoint as the model dsv3 ships (models/default): BF16 weights (router
// bias in F32), the MTP module without its copies of the embedding and head (the loader ties
// them to the main ones), config and tokenizer; no optimizer state. Checks the 20 MB budget.
//   node --import tsx scripts/package-default-model.ts runs/default/checkpoint models/default

import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { refKernels } from '../src/kernels/ref/index.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';

const [src, dst] = process.argv.slice(2);
if (!src || !dst) {
  console.error('usage: package-default-model.ts CHECKPOINT_DIR OUT_DIR');
  process.exit(2);
}
const model = DeepseekV3.load(src, { kernels: refKernels, mtp: true }).forTraining();
saveCheckpoint(dst, model, { dtype: 'BF16', tokenizerDir: src, mtpCopies: false });
const bytes = readdirSync(dst).reduce((n, f) => n + statSync(join(dst, f)).size, 0);
console.log(`${dst}: ${(bytes / 1e6).toFixed(2)} MB`);
if (bytes > 20e6) {
  console.error('over the 20 MB budget for a shipped model');
  process.exit(1);
}
