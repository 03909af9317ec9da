// Shared declarations of the native backend. This header holds only plain structs and
// function declarations: the per-architecture translation units are compiled with
// different instruction-set flags, so no inline code may be shared between them (an
// inline function instantiated in the AVX-512 file could otherwise be picked by the
// linker for the portable code and crash a CPU without AVX-512).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dsv3 {

typedef std::int64_t i64;

/**
 * Weight dtype codes (src/tensor/dtypes.ts FORMATS[..].native). Codes 10.. are ggml's
 * block-quantised formats: a row is a run of blocks of blockElems values, blockBytes each.
 */
enum DType : int {
  DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2, DT_F8 = 3,
  DT_Q4_0 = 10, DT_Q5_0 = 11, DT_Q8_0 = 12, DT_Q4_K = 13, DT_Q5_K = 14, DT_Q6_K = 15,
  DT_Q4_1 = 16, DT_Q5_1 = 17,
};

/**
 * The one table of storage formats, indexed by dtype code (blockElems == 0: no such code).
 * Plain dtypes are blocks of one element. binding.cc validates sizes with it, ops.cc sizes
 * work with it, and the kernels take their block constants from it; adding a format means
 * a row here and its decoder in kernels_impl.h. (Data only: no code is shared between the
 * per-architecture translation units.)
 */
struct FormatTraits {
  const char* name;
  int blockElems;  // values per block
  int blockBytes;  // bytes per block
};
constexpr int DT_COUNT = 18;
constexpr FormatTraits FORMATS[DT_COUNT] = {
    {"F32", 1, 4},     {"BF16", 1, 2},    {"F16", 1, 2},    {"F8_E4M3", 1, 1}, {nullptr, 0, 0},
    {nullptr, 0, 0},   {nullptr, 0, 0},   {nullptr, 0, 0},  {nullptr, 0, 0},   {nullptr, 0, 0},
    {"Q4_0", 32, 18},  {"Q5_0", 32, 22},  {"Q8_0", 32, 34}, {"Q4_K", 256, 144}, {"Q5_K", 256, 176},
    {"Q6_K", 256, 210}, {"Q4_1", 32, 20},  {"Q5_1", 32, 24},
};

/** A weight matrix in its stored dtype (see src/tensor/weight.ts). */
struct WView {
  const void* data;
  int dtype;
  i64 rows, cols;
  // Row stride in units of the stored element: elements for F32/BF16/F16/F8 (== cols for a
  // LinearWeight), bytes for block formats (== cols / blockElems · blockBytes).
  i64 ld;
  const float* scale;  // F8 only: [ceil(rows / b0), sCols]
  i64 b0, b1, sCols;
  int nanfree;  // F8 only: known to hold no NaN code (0x7F, 0xFF), so kernels skip the check
};

/**
 * Activations quantised for a block-format weight (llama.cpp's arithmetic, see qdot_impl.h):
 * each row of x as the weight's vec_dot type. Row m starts at rows + m·rowBytes and holds
 * int8 q[K], then per block (nb = K / blockElems of the weight) float d[nb], then for Q8_0
 * (Q4_0, Q5_0, Q8_0 weights) int32 s[nb] (each block's Σq), for Q8_K (K-quant weights)
 * int16 bsums[16·nb]; for Q8_1 (Q4_1, Q5_1 weights) s[nb] then float s1[nb] (Q8_1's stored
 * f16 s = d·Σq, widened) and 32 bytes of padding. Levels with a packed (prefill) kernel also
 * lay the rows out in tiles of tileRows rows (tileBytes each, a level's own layout), when
 * tiles is set (never for Q4_1 / Q5_1).
 */
struct XQ {
  std::uint8_t* rows;
  i64 rowBytes;
  std::uint8_t* tiles;
  i64 tileBytes;
};

/** out[m*ldo + n] = sum_k x[m*ldx + k] * W[r0 + n][k], k < K = w.cols, n < N. */
struct GemmNT {
  const float* x;
  i64 ldx;
  i64 M, K;
  WView w;
  i64 r0, N;
  float* out;
  i64 ldo;
  int f8slow;  // F8: some |scale| >= 256 or non-finite (use two multiplies per element)
  int resident = 0;  // W is likely cache-resident: decode interleaves rows (see nt_direct_t)
  const XQ* xq = nullptr;  // block formats: x quantised (rows of x, as M rows of XQ)
};

/** out[m*ldo + c] = sum_r x[m*ldx + r] * W[r0 + r][c], r < R, c < C = w.cols. */
struct GemmNN {
  const float* x;
  i64 ldx;
  i64 M, R;
  WView w;
  i64 r0, C;
  float* out;
  i64 ldo;
  int f8slow;
};

struct AttnLatentArgs {
  float* out;
  const float *qLat, *qPe, *kv, *pe;
  i64 T, H, C, R, p0;
  float scale;
};

struct AttentionArgs {
  float* out;
  const float *q, *k, *v;
  i64 T, H, Dk, Dv, p0;
  float scale;
};

/**
 * One instruction-set level. Every function works on a range and runs on the calling
 * thread; ops.cc splits the work over the pool. Within a level the reduction order of
 * one output element depends only on the problem's K (never on M, the range or the
 * thread), which makes every op batch invariant and thread-count invariant.
 */
struct KernelTable {
  const char* name;
  int lanes;
  /** Rows m of a GEMM at or above which the packed (prefill) path is used. */
  i64 packMinM;
  /** Decode the weight directly in the inner loop. Ranges: rows [m0,m1), outputs [n0,n1). */
  void (*gemm_nt)(const GemmNT* g, i64 m0, i64 m1, i64 n0, i64 n1);
  /** Same numbers as gemm_nt, but decodes panels of W to f32 once and reuses them over M. */
  void (*gemm_nt_packed)(const GemmNT* g, i64 m0, i64 m1, i64 n0, i64 n1);
  void (*gemm_nn)(const GemmNN* g, i64 m0, i64 m1, i64 c0, i64 c1);
  /** Rows of a [rows, cols] matrix with row stride ld. */
  void (*softmax_rows)(float* x, i64 ld, i64 cols, i64 r0, i64 r1);
  void (*silu_mul)(float* out, const float* g, const float* u, i64 i0, i64 i1);
  /** Query t, heads [h0, h1). */
  void (*attn_latent)(const AttnLatentArgs* a, i64 t, i64 h0, i64 h1);
  /** Head h, queries [t0, t1). */
  void (*attention)(const AttentionArgs* a, i64 h, i64 t0, i64 t1);
  /** Row `row` of a block-format weight dequantised to dst[0 .. cols) (embedding). */
  void (*decode_row)(const WView* w, i64 row, float* dst);
  /**
   * Block formats: rows of a tile of the packed path's x layout (0: the level has no packed
   * kernel for block formats and runs every M through gemm_nt), and its bytes for weight
   * dtype dt and K values.
   */
  int xqTileRows;
  i64 (*xq_tile_bytes)(int dt, i64 K);
  /**
   * Quantise rows [m0, m1) of x (ldx) to q for weight dtype dt (K values a row); with
   * q->tiles, m0 is a multiple of xqTileRows and the tiles of these rows are written too
   * (rows past m1 in the last tile as zeros when m1 is the end).
   */
  void (*quantize_x)(int dt, const float* x, i64 ldx, i64 K, i64 m0, i64 m1, i64 M, const XQ* q);
  /**
   * p[i] = exp((x[i] − m) · s) for i < n (p may be x, or null: not stored), each value V8's
   * Math.exp bit for bit, for arguments <= 0 (exp_impl.h); returns their sum in index order
   * (0 when !sum: then only the values are written).
   */
  double (*exp_sum)(const double* x, double* p, i64 n, double m, double s, int sum);
};

const KernelTable* generic_table();
/** Exact f16 → f32, and the 256 e4m3fn values (generic/kernels.cc). */
float f16_to_f32(std::uint16_t h);
const float* e4m3_table();
#if defined(DSV3_X86)
const KernelTable* avx2_table();
const KernelTable* avx512_table();
#endif

// ---- thread pool (pool.cc) ----
typedef void (*JobFn)(void* ctx, i64 job);
/** Run fn(ctx, j) for every j in [0, njobs) on up to maxThreads threads (the caller included). */
void pool_run(i64 njobs, JobFn fn, void* ctx, int maxThreads);
void pool_set_threads(int n);
int pool_threads();
int pool_default_threads();

}  // namespace dsv3
