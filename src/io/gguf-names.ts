// The one table between our checkpoint names (Hugging Face's spelling) and llama.cpp's
// `deepseek2` GGUF names (gguf-py constants.py / tensor_mapping.py). Both directions use it:
// `dsv3 convert --to gguf` writes these names and the GGUF loader reads them.
//
// Two of llama.cpp's layouts have no Hugging Face tensor of their own, so they get names here:
// * Routed experts are stacked per layer: `blk.L.ffn_gate_exps.weight` is [E, out, in], and
//   `model.layers.L.mlp.experts.E.gate_proj.weight` is its slice E.
// * MLA's kv_b_proj is written split for the absorbed path: attn_k_b [H, C, nope] (each head's
//   key rows transposed) and attn_v_b [H, v, C]. They are `self_attn.k_b_proj.weight` and
//   `self_attn.v_b_proj.weight` here. Files from before that split hold attn_kv_b, which is
//   kv_b_proj itself.

const GLOBAL: readonly (readonly [string, string])[] = [
  ['model.embed_tokens.weight', 'token_embd.weight'],
  ['model.norm.weight', 'output_norm.weight'],
  ['lm_head.weight', 'output.weight'],
];

/** Per decoder layer: `model.layers.L.<hf>` ↔ `blk.L.<gguf>`. */
const LAYER: readonly (readonly [string, string])[] = [
  ['input_layernorm.weight', 'attn_norm.weight'],
  ['self_attn.q_a_proj.weight', 'attn_q_a.weight'],
  ['self_attn.q_a_layernorm.weight', 'attn_q_a_norm.weight'],
  ['self_attn.q_b_proj.weight', 'attn_q_b.weight'],
  ['self_attn.q_proj.weight', 'attn_q.weight'],
  ['self_attn.kv_a_proj_with_mqa.weight', 'attn_kv_a_mqa.weight'],
  ['self_attn.kv_a_layernorm.weight', 'attn_kv_a_norm.weight'],
  ['self_attn.kv_b_proj.weight', 'attn_kv_b.weight'],
  ['self_attn.k_b_proj.weight', 'attn_k_b.weight'],
  ['self_attn.v_b_proj.weight', 'attn_v_b.weight'],
  ['self_attn.o_proj.weight', 'attn_output.weight'],
  ['post_attention_layernorm.weight', 'ffn_norm.weight'],
  ['mlp.gate_proj.weight', 'ffn_gate.weight'],
  ['mlp.up_proj.weight', 'ffn_up.weight'],
  ['mlp.down_proj.weight', 'ffn_down.weight'],
  ['mlp.gate.weight', 'ffn_gate_inp.weight'],
  ['mlp.gate.e_score_correction_bias', 'exp_probs_b.bias'],
  ['mlp.shared_experts.gate_proj.weight', 'ffn_gate_shexp.weight'],
  ['mlp.shared_experts.up_proj.weight', 'ffn_up_shexp.weight'],
  ['mlp.shared_experts.down_proj.weight', 'ffn_down_shexp.weight'],
];

/** Routed experts: `mlp.experts.E.<proj>.weight` ↔ slice E of `blk.L.<stacked>`. */
const EXPERTS: Readonly<Record<string, string>> = {
  gate_proj: 'ffn_gate_exps.weight',
  up_proj: 'ffn_up_exps.weight',
  down_proj: 'ffn_down_exps.weight',
};

const LAYER_HF = new Map(LAYER);
const GLOBAL_HF = new Map(GLOBAL);

/** Where a Hugging Face tensor lives in a deepseek2 GGUF file. */
export interface GgufLocation {
  name: string;
  /** For a routed expert: its index in the stacked tensor. */
  expert?: number;
}

/** The GGUF name of one of our tensor names, or null when GGUF has no place for it. */
export function ggufLocation(hf: string): GgufLocation | null {
  const g = GLOBAL_HF.get(hf);
  if (g) return { name: g };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return null;
  const [, layer, rest] = m;
  const e = /^mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$/.exec(rest);
  if (e) return { name: `blk.${layer}.${EXPERTS[e[2]]}`, expert: Number(e[1]) };
  const l = LAYER_HF.get(rest);
  return l ? { name: `blk.${layer}.${l}` } : null;
}

/** The GGUF name of a tensor that is not a routed expert; throws when the table lacks it. */
export function ggufName(hf: string): string {
  const loc = ggufLocation(hf);
  if (!loc || loc.expert !== undefined) throw new Error(`no single GGUF tensor for "${hf}"`);
  return loc.name;
}

/** The stacked GGUF tensor of routed-expert projection `proj` in layer `layer`. */
export function ggufExpertsName(layer: number, proj: 'gate_proj' | 'up_proj' | 'down_proj'): string {
  return `blk.${layer}.${EXPERTS[proj]}`;
}
