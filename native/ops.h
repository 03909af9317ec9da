// The ops of the Kernels interface on raw pointers (validated by binding.cc).
#pragma once
#include "common.h"

#include <cmath>

namespace dsv3 {

struct RouteArgs {
  i64 topk, nGroup, topkGroup;
  bool softmax;
  const float* bias;  // nullptr when absent
  bool normalize;
  double scale;
};

/** Names of the levels this CPU can run, best first, e.g. {"avx512", "avx2", "generic"}. */
int cpu_levels(const char** names, int max);
/** Select a level by name (must be one of cpu_levels); returns false if unknown/unsupported. */
bool set_level(const char* name);
const KernelTable* level();
/** CPU features seen at load, for diagnostics. */
const char* cpu_features();

void op_matmul(float* out, const float* x, i64 M, const WView& w, i64 r0, i64 N);
void op_matmulT(float* out, const float* x, i64 M, const WView& w, i64 r0, i64 R);
/** op_matmul per head h < H on x[:, h*K ...] (ldx H*K) → out[:, h*N ...] (ldo H*N), rows r0 + h*step. */
void op_matmul_heads(float* out, const float* x, i64 M, i64 H, const WView& w, i64 r0, i64 step, i64 N);
/** op_matmulT per head h < H on x[:, h*xs ...] (ldx H*xs) → out[:, h*C ...] (ldo H*C), rows r0 + h*step. */
void op_matmulT_heads(float* out, const float* x, i64 M, i64 H, i64 xs, const WView& w, i64 r0, i64 step, i64 R);
void op_embedding(float* out, const WView& w, const std::int32_t* ids, i64 T);
void op_rmsnorm(float* out, const float* x, const float* weight, i64 M, i64 D, double eps);
void op_rope(float* x, i64 T, i64 H, i64 stride, i64 offset, const std::int32_t* pos, const float* freqs,
             i64 half);
void op_softmax(float* x, i64 rows, i64 cols);
void op_silu_mul(float* out, const float* g, const float* u, i64 n);
void op_add(float* out, const float* a, i64 n);
void op_attn_latent(const AttnLatentArgs& a);
void op_attention(const AttentionArgs& a);
void op_moe_route(std::int32_t* outIdx, float* outW, const float* logits, i64 T, i64 E, const RouteArgs& p);
void op_gather_rows(float* out, const float* x, const std::int32_t* rows, i64 n, i64 D);
void op_scatter_add_rows(float* out, const float* src, const std::int32_t* rows, const float* w, i64 n, i64 D);
/** Index of the largest of x[0..n), the lowest on ties, NaN never winning; -1 if none > -inf. */
i64 op_argmax(const float* x, i64 n);

/**
 * The first index of the largest of x[0, n), or -1 when none is above -inf: the maximum over
 * eight independent lanes (v > m is false for NaN, so NaN never wins; the compiler turns these
 * into vector max instructions), then its first index. op_argmax (float logits) and the
 * sampler (double scores) both use it.
 */
template <class T>
i64 argmax_lanes(const T* x, i64 n) {
  T m[8];
  for (int l = 0; l < 8; l++) m[l] = -INFINITY;
  i64 i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
  T best = m[0];
  for (int l = 1; l < 8; l++) best = m[l] > best ? m[l] : best;
  if (!(best > -INFINITY)) return -1;
  for (i = 0; i < n; i++)
    if (x[i] == best) return i;
  return -1;
}
/** One SwiGLU network of ffn_experts and the rows it serves. */
struct FfnNet {
  WView gate, up, down;        // [I, D], [I, D], [D, I]
  const std::int32_t* rows;    // n token rows of x / y
  const float* w;              // n weights
  i64 n;
};
/**
 * y[rows[i]] += w[i] * down(silu(gate(x[rows[i]])) * up(x[rows[i]])) for every net in order:
 * the numbers of gather_rows, matmul, silu_mul, matmul and scatter_add_rows, in two pool jobs.
 */
void op_ffn_experts(float* y, const float* x, i64 D, const FfnNet* nets, i64 count);
/**
 * The bytes of model weights the process holds (native.ts's weight allocator reports its
 * running total). When they fit in the last-level cache, decode interleaves weight rows.
 */
void set_weight_bytes(i64 bytes);
bool decode_resident();
/** One row of op_sample_rows (Kernels.sampleBatch, validated by binding.cc). */
struct SampleRowArgs {
  const float* logits;  // V values
  double temperature, topP, minP, rep, freq, pres, u;
  i64 topK, vocab, logprobs;  // logprobs: alternatives to report, -1 for none
  const std::int32_t* hist;   // penalty history, ids < V
  i64 nHist;
  const std::uint32_t* mask;  // allowed ids (bit id & 31 of word id >> 5), nullptr: all
  i64 maskWords;
  std::int32_t* outId;
  std::uint8_t* outDrew;
  float* outLp;             // with logprobs >= 0: the pick's logprob
  std::int32_t* outTopIds;  // and min(logprobs, vocab, V) alternatives, best first
  float* outTopLp;
};
/** Kernels.sampleBatch over n rows of V logits, one row per pool job (sample.cc). */
void op_sample_rows(const SampleRowArgs* rows, i64 n, i64 V);
/**
 * V8's Math functions as sample.cc computes them (js_math.h), for tests: fn 0 exp, 1 log,
 * 2 log2, 3 exp through the level's vectorised exp_sum (x <= 0 only).
 */
void op_js_math(int fn, const double* x, double* out, i64 n);
/** Read bandwidth of a simple streaming sum over `bytes` bytes, `reps` times, all threads (GB/s). */
double read_bandwidth(i64 bytes, int reps);

}  // namespace dsv3
