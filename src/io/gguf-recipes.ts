// llama-quantize's type mixtures ("recipes") for the tensors of a deepseek2 GGUF file, by GGUF
// name: used by `dsv3 convert --to gguf --type …` and by quantizing a model at load time, so that
// both give the file llama.cpp's own quantizer would.

import { FORMATS } from '../tensor/dtypes.ts';
import type { GgmlTypeName } from './gguf.ts';

export type QuantRecipe = 'q8_0' | 'q6_k' | 'q4_k_m';
export const QUANT_RECIPES: readonly QuantRecipe[] = ['q8_0', 'q6_k', 'q4_k_m'];

/** What matrixType needs to know about a tensor beyond its stored dtypes. */
export interface MatrixInfo {
  /** GGUF name, e.g. blk.3.ffn_down_exps.weight. */
  name: string;
  shape: number[];
  /** num_hidden_layers. */
  layers: number;
  /** n_routed_experts (llama.cpp treats 8-expert models specially). */
  experts: number;
  /** The file holds no output.weight (token_embd is also the output). */
  tied: boolean;
}

/**
 * llama-quantize's mixture for the quantized recipes (src/llama-quant.cpp, without an importance
 * matrix), for the tensors a deepseek2 file holds:
 * * q8_0: every matrix Q8_0; q6_k: every matrix Q6_K.
 * * q4_k_m: Q4_K, except ffn_down, ffn_down_exps and ffn_down_shexp of the layers where
 *   use_more_bits holds (the first and last eighth, and every third between), which are Q6_K.
 *   (Its other bump, of attention-v-like tensors, matches only attn_kv_b, which files written
 *   with the split attn_k_b / attn_v_b do not hold.)
 * * q4_k_m with exactly 8 routed experts: attn_output is Q5_K.
 * * output.weight (and token_embd when it is also the output) is Q6_K unless the recipe is q8_0.
 * * Rows that are not whole blocks fall back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, then F16 if
 *   still not whole.
 */
/** llama-quantize's fallback for a 256-block type when rows are not whole blocks. */
const FALLBACK: Partial<Record<GgmlTypeName, GgmlTypeName>> = { Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' };

export function recipeType(out: QuantRecipe, m: MatrixInfo, notes: string[]): GgmlTypeName {
  const cols = m.shape[m.shape.length - 1];
  let t: GgmlTypeName = out === 'q8_0' ? 'Q8_0' : out === 'q6_k' ? 'Q6_K' : 'Q4_K';
  const isOutput = m.name === 'output.weight' || (m.tied && m.name === 'token_embd.weight');
  if (isOutput) {
    if (t !== 'Q8_0') t = cols % 256 === 0 ? 'Q6_K' : 'Q8_0';
  } else if (out === 'q4_k_m' && m.name.includes('ffn_down')) {
    const layer = Number(/^blk\.(\d+)\./.exec(m.name)?.[1] ?? -1);
    const n = m.layers;
    const moreBits = layer < Math.floor(n / 8) || layer >= Math.floor((7 * n) / 8) || (layer - Math.floor(n / 8)) % 3 === 2;
    if (moreBits) t = 'Q6_K';
  } else if (out === 'q4_k_m' && m.experts === 8 && m.name.endsWith('.attn_output.weight')) {
    t = 'Q5_K';
  }
  const fits = (x: GgmlTypeName) => cols % FORMATS[x].blockElems === 0;
  if (!fits(t)) {
    const fallback = FALLBACK[t] ?? t;
    const to = fits(fallback) ? fallback : 'F16';
    notes.push(`${m.name}: rows of ${cols} are not whole ${t} blocks, written as ${to} (llama-quantize's fallback)`);
    t = to;
  }
  return t;
}

