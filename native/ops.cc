// The ops: CPU-level dispatch, splitting work over the thread pool, and the small ops that
// are cheap enough to stay portable (their arithmetic mirrors the TypeScript reference,
// in double where the reference uses JS numbers).
#include "ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(DSV3_X86)
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace dsv3 {

// ---------------------------------------------------------------------------------------
// CPU detection, once at load.
namespace {

struct Cpu {
  bool avx2 = false, avx512 = false, bf16 = false;
  std::string features;
};

#if defined(DSV3_X86)
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER)
  int t[4];
  __cpuidex(t, (int)leaf, (int)sub);
  for (int i = 0; i < 4; i++) r[i] = (unsigned)t[i];
#else
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}
unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
#endif
}
#endif

Cpu detect() {
  Cpu c;
#if defined(DSV3_X86)
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned maxLeaf = r[0];
  if (maxLeaf < 7) return c;
  cpuid(1, 0, r);
  const bool fma = (r[2] >> 12) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1, f16c = (r[2] >> 29) & 1;
  if (!osxsave || !avx) return c;
  const unsigned long long xcr0 = xgetbv0();
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
  cpuid(7, 0, r);
  const unsigned b = r[1];
  const bool avx2 = (b >> 5) & 1, f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
  const bool vnni = (r[2] >> 11) & 1;
  unsigned r1[4];
  cpuid(7, 1, r1);
  c.bf16 = zmm && ((r1[0] >> 5) & 1);
  c.avx2 = ymm && avx2 && fma && f16c;
  // The avx512 level also uses VNNI (vpdpbusd) for the block formats: CPUs with AVX-512 but
  // without it (Skylake-SP/X) run the avx2 level.
  c.avx512 = c.avx2 && zmm && f && dq && bw && vl && vnni;
  const char* names[] = {"fma", "f16c", "avx2", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"};
  const bool has[] = {fma, f16c, avx2 && ymm, f && zmm, dq && zmm, bw && zmm, vl && zmm, vnni && zmm, c.bf16};
  for (int i = 0; i < 9; i++)
    if (has[i]) c.features += (c.features.empty() ? "" : " ") + std::string(names[i]);
#endif
  return c;
}

const Cpu& cpu() {
  static const Cpu c = detect();
  return c;
}

const KernelTable* pick_default() {
  const KernelTable* best = generic_table();
#if defined(DSV3_X86)
  if (cpu().avx512) best = avx512_table();
  else if (cpu().avx2) best = avx2_table();
#endif
  if (const char* want = std::getenv("DSV3_NATIVE_LEVEL")) {
    const char* names[4];
    const int n = cpu_levels(names, 4);
    for (int i = 0; i < n; i++)
      if (std::strcmp(names[i], want) == 0) {
        set_level(want);
        return level();
      }
  }
  return best;
}

const KernelTable* g_level = nullptr;

const KernelTable* lv() {
  if (!g_level) g_level = pick_default();
  return g_level;
}

}  // namespace

int cpu_levels(const char** names, int max) {
  int n = 0;
#if defined(DSV3_X86)
  if (cpu().avx512 && n < max) names[n++] = "avx512";
  if (cpu().avx2 && n < max) names[n++] = "avx2";
#endif
  if (n < max) names[n++] = "generic";
  return n;
}

bool set_level(const char* name) {
#if defined(DSV3_X86)
  if (std::strcmp(name, "avx512") == 0 && cpu().avx512) return (g_level = avx512_table()), true;
  if (std::strcmp(name, "avx2") == 0 && cpu().avx2) return (g_level = avx2_table()), true;
#endif
  if (std::strcmp(name, "generic") == 0) return (g_level = generic_table()), true;
  return false;
}

const KernelTable* level() { return lv(); }
const char* cpu_features() { return cpu().features.c_str(); }

// ---------------------------------------------------------------------------------------
// Splitting work over the pool.
namespace {

inline i64 cdiv(i64 a, i64 b) { return (a + b - 1) / b; }
inline i64 rup(i64 a, i64 b) { return cdiv(a, b) * b; }

/** Bytes of model weights loaded through the addon's allocator (set_weight_bytes). */
i64 g_weight_bytes = 0;

/**
 * The size of the last-level cache one core sees, in bytes, or 0 if unknown. Linux's sysfs
 * gives one cache instance; sysconf(_SC_LEVEL3_CACHE_SIZE) can give the whole socket's
 * (320 MiB on a 32 MiB-per-CCD EPYC guest), so it is not used.
 */
i64 llc_bytes() {
  static const i64 n = [] {
    i64 v = 0;
#if defined(__linux__)
    if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
      long k = 0;
      char unit = 0;
      if (std::fscanf(f, "%ld%c", &k, &unit) >= 1 && k > 0)
        v = (i64)k * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1);
      std::fclose(f);
    }
#endif
    return v;
  }();
  return n;
}

/** Whether all loaded weights fit in the last-level cache (so decode need not stream). */
bool weights_resident() { return g_weight_bytes > 0 && g_weight_bytes <= llc_bytes(); }

/** Threads worth using for `work` multiply-adds (a wake-up costs a few microseconds). */
int threads_for(double work) {
  const int nt = pool_threads();
  if (nt <= 1 || work < 65536.0) return 1;
  const double per = 32768.0;  // at least this much work per thread
  const int t = (int)std::min<double>(nt, std::max(1.0, work / per));
  return t;
}

template <class F>
void run_jobs(i64 njobs, int threads, const F& f) {
  if (njobs <= 0) return;
  if (threads <= 1 || njobs == 1) {
    for (i64 j = 0; j < njobs; j++) f(j);
    return;
  }
  pool_run(
      njobs, [](void* ctx, i64 j) { (*static_cast<const F*>(ctx))(j); }, const_cast<F*>(&f), threads);
}

bool f8_needs_slow(const WView& w, i64 r0, i64 n) {
  if (w.dtype != DT_F8 || n <= 0) return false;
  const i64 a = r0 / w.b0, b = (r0 + n - 1) / w.b0;
  for (i64 i = a * w.sCols; i < (b + 1) * w.sCols; i++) {
    const float s = w.scale[i];
    if (!(std::fabs(s) < 256.0f)) return true;
  }
  return false;
}

/**
 * Whether a GEMM of M rows takes the packed path (W decoded to f32 panels once, reused over
 * blocks of M) rather than the direct one (W decoded in the inner loop, each group of W
 * rows run over a block of M rows small enough for x to stay in a core's L2, about 1 MiB
 * on Zen 4). For 16-bit weights decoding is cheap and direct is faster (no panel traffic;
 * W is re-read once per M block, which costs little next to the arithmetic): bench-s
 * prefill of 128 tokens went from ~1700 to ~2150 tok/s. FP8 decoding costs more, so FP8
 * packs from packMinM rows on.
 */
bool is_block(int dtype) { return dtype >= 0 && dtype < DT_COUNT && FORMATS[dtype].blockElems > 1; }

bool packed(const KernelTable* t, i64 M, int dtype) {
  return M >= t->packMinM && (dtype == DT_F8 || is_block(dtype));
}

/** Bytes of one row of W (FORMATS). */
i64 row_bytes(const WView& w) {
  const FormatTraits& f = FORMATS[w.dtype];
  return w.cols / f.blockElems * f.blockBytes;
}

/** Rows of x per direct-path job: as many as keep M·K·4 bytes within about 1 MiB. */
i64 direct_rows(i64 M, i64 K) {
  const i64 fit = std::max<i64>(4, ((i64)(1 << 20) / (std::max<i64>(K, 1) * 4)) / 4 * 4);
  return std::min(M, fit);
}


/** A block of a GEMM: net e, rows [m0, m1), outputs [n0, n1). */
struct GemmBlock {
  i64 e, m0, m1, n0, n1;
};

/**
 * Split the GEMMs g[0..n) into blocks the way op_matmul splits one: decode GEMMs by output
 * rows, packed GEMMs by [m-chunk x n-chunk].
 */
void split_gemms(const KernelTable* t, const GemmNT* g, i64 n, int nt, std::vector<GemmBlock>& out) {
  out.clear();
  // Direct blocks are sized by work over the whole list (about 4 per thread in all), so
  // that a list of small GEMMs (an MoE layer's experts at decode) streams W in long runs
  // rather than in many short ones, each paying the prefetchers' ramp-up, while a GEMM
  // with many rows (the shared expert at prefill) is cut finer than one with few.
  double work = 0;
  for (i64 e = 0; e < n; e++)
    if (g[e].M > 0 && g[e].N > 0) work += (double)g[e].M * g[e].N * g[e].K;
  const double target = work / ((double)nt * 4);
  for (i64 e = 0; e < n; e++) {
    const i64 M = g[e].M, N = g[e].N;
    if (M <= 0 || N <= 0) continue;
    if (packed(t, M, g[e].w.dtype)) {
      const i64 mc = M <= 256 ? M : 256;
      i64 nc = rup(cdiv(N, (i64)nt * 4), 48);
      if (nc > 384) nc = 384;
      for (i64 m = 0; m < M; m += mc)
        for (i64 c = 0; c < N; c += nc) out.push_back({e, m, std::min(M, m + mc), c, std::min(N, c + nc)});
    } else {
      // ...and no block streams more than about 1 MiB of W.
      const i64 rowBytes = std::max<i64>(1, row_bytes(g[e].w));
      const i64 mc = direct_rows(M, g[e].K);
      const i64 byWork = (i64)(target / ((double)mc * std::max<i64>(1, g[e].K)));
      const i64 nc = std::max<i64>(16, rup(std::min<i64>(byWork, (1 << 20) / rowBytes), 16));
      for (i64 m = 0; m < M; m += mc)
        for (i64 c = 0; c < N; c += nc) out.push_back({e, m, std::min(M, m + mc), c, std::min(N, c + nc)});
    }
  }
  // Biggest blocks first, so the threads finish together (blocks are claimed in order).
  std::stable_sort(out.begin(), out.end(), [](const GemmBlock& a, const GemmBlock& b) {
    return (a.m1 - a.m0) * (a.n1 - a.n0) > (b.m1 - b.m0) * (b.n1 - b.n0);
  });
}

void run_block(const KernelTable* t, const GemmNT& g, const GemmBlock& b) {
  if (packed(t, g.M, g.w.dtype)) t->gemm_nt_packed(&g, b.m0, b.m1, b.n0, b.n1);
  else t->gemm_nt(&g, b.m0, b.m1, b.n0, b.n1);
}

/** out[m*ldo + n] = x[m*ldx ...] · W[r0 + n] for n < N; dense x and out unless ldx/ldo say. */
GemmNT make_gemm(const float* x, i64 M, const WView& w, float* out, i64 r0, i64 N, i64 ldx, i64 ldo) {
  GemmNT g;
  g.x = x;
  g.ldx = ldx;
  g.M = M;
  g.K = w.cols;
  g.w = w;
  g.r0 = r0;
  g.N = N;
  g.out = out;
  g.ldo = ldo;
  g.f8slow = f8_needs_slow(w, r0, N);
  g.resident = weights_resident() ? 1 : 0;
  return g;
}
GemmNT make_gemm(const float* x, i64 M, const WView& w, float* out) {
  return make_gemm(x, M, w, out, 0, w.rows, w.cols, w.rows);
}

/**
 * Block-format GEMMs: quantise each one's rows of x to its weight's vec_dot type (XQ in
 * common.h; the packed path's tiles too when it runs packed on a level that has them), into
 * the calling thread's scratch, and point g[e].xq at it. GEMMs of the same dtype over the
 * same x (an expert's gate and up) share one. The rows are split over the pool; the bytes do
 * not depend on how.
 */
void quantize_gemms(const KernelTable* t, GemmNT* g, i64 n) {
  static thread_local std::vector<XQ> xqs;
  static thread_local std::vector<std::uint8_t> arena;
  struct Plan {
    i64 rowBytes, tileBytes, ntiles, off, src;  // src: the GEMM whose XQ this one shares, or -1
  };
  std::vector<Plan> plan((std::size_t)n);
  i64 total = 0;
  double work = 0;
  for (i64 e = 0; e < n; e++) {
    Plan& p = plan[(std::size_t)e];
    p = {0, 0, 0, 0, -1};
    const int dt = g[e].w.dtype;
    if (!is_block(dt) || g[e].M <= 0) continue;
    for (i64 f = 0; f < e && p.src < 0; f++)
      if (plan[(std::size_t)f].src < 0 && is_block(g[f].w.dtype) && g[f].w.dtype == dt && g[f].x == g[e].x &&
          g[f].ldx == g[e].ldx && g[f].M == g[e].M && g[f].K == g[e].K)
        p.src = f;
    if (p.src >= 0) continue;
    const i64 K = g[e].K, nb = K / FORMATS[dt].blockElems;
    const bool q81 = dt == DT_Q4_1 || dt == DT_Q5_1;  // Q8_1: also the float s, and padding
    p.rowBytes = rup(K + 4 * nb + (FORMATS[dt].blockElems == 256 ? 32 * nb : 4 * nb) + (q81 ? 4 * nb + 32 : 0), 64);
    if (t->xqTileRows > 0 && packed(t, g[e].M, dt)) {
      p.tileBytes = rup(t->xq_tile_bytes(dt, K), 64);  // 0: no packed kernel for dt
      p.ntiles = p.tileBytes > 0 ? cdiv(g[e].M, t->xqTileRows) : 0;
    }
    p.off = total;
    total += g[e].M * p.rowBytes + p.ntiles * p.tileBytes;
    work += (double)g[e].M * K * 8;
  }
  if (total == 0) return;
  if ((i64)arena.size() < total + 128) arena.resize((std::size_t)(total + 128));
  std::uint8_t* base = arena.data() + ((64 - (reinterpret_cast<std::uintptr_t>(arena.data()) & 63)) & 63);
  xqs.resize((std::size_t)n);
  for (i64 e = 0; e < n; e++) {
    const Plan& p = plan[(std::size_t)e];
    if (p.rowBytes == 0) continue;
    XQ& q = xqs[(std::size_t)e];
    q.rows = base + p.off;
    q.rowBytes = p.rowBytes;
    q.tiles = p.ntiles ? q.rows + g[e].M * p.rowBytes : nullptr;
    q.tileBytes = p.tileBytes;
    g[e].xq = &q;
  }
  for (i64 e = 0; e < n; e++)
    if (plan[(std::size_t)e].src >= 0) g[e].xq = g[plan[(std::size_t)e].src].xq;
  // Jobs: (GEMM, chunk of rows), chunks a multiple of the tile rows.
  const i64 chunk = std::max<i64>(16, t->xqTileRows);
  std::vector<std::pair<i64, i64>> jobs;
  for (i64 e = 0; e < n; e++)
    if (plan[(std::size_t)e].rowBytes > 0)
      for (i64 m = 0; m < g[e].M; m += chunk) jobs.push_back({e, m});
  run_jobs((i64)jobs.size(), threads_for(work), [&](i64 j) {
    const GemmNT& ge = g[jobs[(std::size_t)j].first];
    const i64 m0 = jobs[(std::size_t)j].second;
    t->quantize_x(ge.w.dtype, ge.x, ge.ldx, ge.K, m0, std::min(ge.M, m0 + chunk), ge.M, ge.xq);
  });
}

/** Run the GEMMs g[0..n) as blocks over the pool. */
void run_gemms(const KernelTable* t, const GemmNT* g, i64 n, double work) {
  const int nt = threads_for(work);
  std::vector<GemmBlock> blocks;
  split_gemms(t, g, n, nt, blocks);
  run_jobs((i64)blocks.size(), nt, [&](i64 j) {
    const GemmBlock& b = blocks[(std::size_t)j];
    run_block(t, g[b.e], b);
  });
}

}  // namespace

void op_matmul(float* out, const float* x, i64 M, const WView& w, i64 r0, i64 N) {
  op_matmul_heads(out, x, M, 1, w, r0, 0, N);
}

void op_matmul_heads(float* out, const float* x, i64 M, i64 H, const WView& w, i64 r0, i64 step, i64 N) {
  if (M <= 0 || N <= 0 || H <= 0) return;
  const i64 K = w.cols;
  std::vector<GemmNT> g((std::size_t)H);
  for (i64 h = 0; h < H; h++) g[(std::size_t)h] = make_gemm(x + h * K, M, w, out + h * N, r0 + h * step, N, H * K, H * N);
  if (is_block(w.dtype)) quantize_gemms(lv(), g.data(), H);
  run_gemms(lv(), g.data(), H, (double)H * M * N * (K + 16));
}

void op_matmulT(float* out, const float* x, i64 M, const WView& w, i64 r0, i64 R) {
  op_matmulT_heads(out, x, M, 1, R, w, r0, 0, R);
}

void op_matmulT_heads(float* out, const float* x, i64 M, i64 H, i64 xs, const WView& w, i64 r0, i64 step, i64 R) {
  if (M <= 0 || H <= 0) return;
  const KernelTable* t = lv();
  const i64 C = w.cols;
  std::vector<GemmNN> g((std::size_t)H);
  for (i64 h = 0; h < H; h++) {
    GemmNN& e = g[(std::size_t)h];
    e.x = x + h * xs;
    e.ldx = H * xs;
    e.M = M;
    e.R = R;
    e.w = w;
    e.r0 = r0 + h * step;
    e.C = C;
    e.out = out + h * C;
    e.ldo = H * C;
    e.f8slow = f8_needs_slow(w, e.r0, R);
  }
  // Jobs: (head, m-block, column chunk); columns split only when heads alone are too few.
  const int nt = threads_for((double)H * M * C * (R + 4));
  const i64 perHead = std::max<i64>(1, cdiv(nt * 2, H));
  const i64 cc = std::max<i64>(64, rup(cdiv(C, perHead), 64));
  const i64 ncc = cdiv(C, cc);
  const i64 mc = H * ncc >= nt ? M : std::max<i64>(6, rup(cdiv(M, nt), 6));
  const i64 nmc = cdiv(M, mc);
  run_jobs(H * nmc * ncc, nt, [&](i64 j) {
    const i64 h = j / (nmc * ncc), mi = ((j / ncc) % nmc) * mc, ci = (j % ncc) * cc;
    t->gemm_nn(&g[(std::size_t)h], mi, std::min(M, mi + mc), ci, std::min(C, ci + cc));
  });
}

void op_embedding(float* out, const WView& w, const std::int32_t* ids, i64 T) {
  const i64 D = w.cols;
  const float* e4 = e4m3_table();
  for (i64 t = 0; t < T; t++) {
    const i64 r = ids[t];
    float* o = out + t * D;
    switch (w.dtype) {
      case DT_F32: std::memcpy(o, static_cast<const float*>(w.data) + r * w.ld, (std::size_t)D * 4); break;
      case DT_BF16: {
        const std::uint16_t* s = static_cast<const std::uint16_t*>(w.data) + r * w.ld;
        for (i64 k = 0; k < D; k++) {
          const std::uint32_t u = (std::uint32_t)s[k] << 16;
          std::memcpy(o + k, &u, 4);
        }
        break;
      }
      case DT_F16: {
        const std::uint16_t* s = static_cast<const std::uint16_t*>(w.data) + r * w.ld;
        for (i64 k = 0; k < D; k++) o[k] = f16_to_f32(s[k]);
        break;
      }
      case DT_F8: {
        const std::uint8_t* s = static_cast<const std::uint8_t*>(w.data) + r * w.ld;
        const float* sr = w.scale + (r / w.b0) * w.sCols;
        for (i64 k = 0; k < D; k++) o[k] = e4[s[k]] * sr[k / w.b1];
        break;
      }
      default: lv()->decode_row(&w, r, o); break;  // block formats
    }
  }
}

void op_rmsnorm(float* out, const float* x, const float* weight, i64 M, i64 D, double eps) {
  const int nt = threads_for((double)M * D * 2);
  const i64 rc = std::max<i64>(1, cdiv(M, (i64)nt * 2));
  run_jobs(cdiv(M, rc), nt, [&](i64 j) {
    for (i64 m = j * rc; m < std::min(M, (j + 1) * rc); m++) {
      const float* xr = x + m * D;
      double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      i64 d = 0;
      for (; d + 8 <= D; d += 8)
        for (int l = 0; l < 8; l++) s[l] += (double)xr[d + l] * xr[d + l];
      for (; d < D; d++) s[0] += (double)xr[d] * xr[d];
      const double ss = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
      const double inv = 1.0 / std::sqrt(ss / (double)D + eps);
      float* o = out + m * D;
      for (d = 0; d < D; d++) o[d] = (float)((double)xr[d] * inv * (double)weight[d]);
    }
  });
}

void op_rope(float* x, i64 T, i64 H, i64 stride, i64 offset, const std::int32_t* pos, const float* freqs,
             i64 half) {
  std::vector<float> cs((std::size_t)half * 2);
  for (i64 t = 0; t < T; t++) {
    for (i64 i = 0; i < half; i++) {
      const float angle = (float)((double)pos[t] * (double)freqs[i]);
      cs[2 * i] = (float)std::cos((double)angle);
      cs[2 * i + 1] = (float)std::sin((double)angle);
    }
    for (i64 h = 0; h < H; h++) {
      float* p = x + (t * H + h) * stride + offset;
      for (i64 i = 0; i < half; i++) {
        const double a = p[2 * i], b = p[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
        p[2 * i] = (float)(a * c - b * s);
        p[2 * i + 1] = (float)(a * s + b * c);
      }
    }
  }
}

void op_softmax(float* x, i64 rows, i64 cols) {
  const KernelTable* t = lv();
  const int nt = threads_for((double)rows * cols * 8);
  const i64 rc = std::max<i64>(1, cdiv(rows, (i64)nt * 2));
  run_jobs(cdiv(rows, rc), nt, [&](i64 j) { t->softmax_rows(x, cols, cols, j * rc, std::min(rows, (j + 1) * rc)); });
}

void op_silu_mul(float* out, const float* g, const float* u, i64 n) {
  const KernelTable* t = lv();
  const int nt = threads_for((double)n * 8);
  const i64 c = rup(std::max<i64>(1, cdiv(n, (i64)nt)), 64);
  run_jobs(cdiv(n, c), nt, [&](i64 j) { t->silu_mul(out, g, u, j * c, std::min(n, (j + 1) * c)); });
}

void op_add(float* out, const float* a, i64 n) {
  for (i64 i = 0; i < n; i++) out[i] += a[i];
}

void op_attn_latent(const AttnLatentArgs& a) {
  const KernelTable* t = lv();
  const i64 T = a.T, H = a.H;
  if (T <= 0 || H <= 0) return;
  const double work = (double)T * H * (a.p0 + T) * (2.0 * a.C + a.R);
  const int nt = threads_for(work);
  // Jobs: (query t, head chunk), the longest (latest t) first.
  const i64 hc = T >= 2 * nt ? H : std::max<i64>(1, cdiv(H, (i64)nt));
  const i64 nhc = cdiv(H, hc);
  run_jobs(T * nhc, nt, [&](i64 j) {
    const i64 tt = T - 1 - j / nhc, h0 = (j % nhc) * hc;
    t->attn_latent(&a, tt, h0, std::min(H, h0 + hc));
  });
}

void op_attention(const AttentionArgs& a) {
  const KernelTable* t = lv();
  const i64 T = a.T, H = a.H;
  if (T <= 0 || H <= 0) return;
  const double work = (double)T * H * (a.p0 + T) * (double)(a.Dk + a.Dv);
  const int nt = threads_for(work);
  // Jobs: (head, block of queries), the latest (longest) blocks first.
  const i64 tb = 32, ntb = cdiv(T, tb);
  run_jobs(H * ntb, nt, [&](i64 j) {
    const i64 b = ntb - 1 - j / H, h = j % H;
    t->attention(&a, h, b * tb, std::min(T, (b + 1) * tb));
  });
}

namespace {
/** Indices of the k largest of v[0..n), descending; ties to the lower index (as ref). */
void topk_indices(const double* v, i64 n, i64 k, i64* out) {
  std::vector<i64> idx((std::size_t)n);
  for (i64 i = 0; i < n; i++) idx[(std::size_t)i] = i;
  const i64 kk = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](i64 a, i64 b) {
    if (v[a] != v[b]) {
      if (v[a] > v[b]) return true;
      if (v[b] > v[a]) return false;
    }
    return a < b;
  });
  for (i64 i = 0; i < kk; i++) out[i] = idx[(std::size_t)i];
}
}  // namespace

void op_moe_route(std::int32_t* outIdx, float* outW, const float* logits, i64 T, i64 E, const RouteArgs& p) {
  std::vector<double> s((std::size_t)E), c((std::size_t)E);
  const i64 G = p.nGroup;
  const i64 per = G > 0 ? E / G : E;
  std::vector<double> gs((std::size_t)std::max<i64>(G, 1));
  std::vector<i64> tmp((std::size_t)std::max<i64>(E, 2)), chosen((std::size_t)p.topk);
  for (i64 t = 0; t < T; t++) {
    for (i64 e = 0; e < E; e++) s[e] = logits[t * E + e];
    if (p.softmax) {
      double mx = -INFINITY;
      for (i64 e = 0; e < E; e++) mx = s[e] > mx ? s[e] : mx;
      double sum = 0;
      for (i64 e = 0; e < E; e++) {
        s[e] = std::exp(s[e] - mx);
        sum += s[e];
      }
      for (i64 e = 0; e < E; e++) s[e] /= sum;
    } else {
      for (i64 e = 0; e < E; e++) s[e] = 1.0 / (1.0 + std::exp(-s[e]));
    }
    for (i64 e = 0; e < E; e++) s[e] = (double)(float)s[e];
    for (i64 e = 0; e < E; e++) c[e] = p.bias ? (double)(float)(s[e] + (double)p.bias[e]) : s[e];
    if (G > 1) {
      for (i64 g = 0; g < G; g++) {
        const double* grp = c.data() + g * per;
        if (p.bias) {
          topk_indices(grp, per, 2, tmp.data());
          gs[g] = grp[tmp[0]] + grp[tmp[per > 1 ? 1 : 0]];
        } else {
          double mx = -INFINITY;
          for (i64 e = 0; e < per; e++) mx = grp[e] > mx ? grp[e] : mx;
          gs[g] = mx;
        }
      }
      topk_indices(gs.data(), G, p.topkGroup, tmp.data());
      std::vector<char> kept((std::size_t)G, 0);
      for (i64 i = 0; i < std::min(p.topkGroup, G); i++) kept[tmp[i]] = 1;
      for (i64 g = 0; g < G; g++)
        if (!kept[g])
          for (i64 e = g * per; e < (g + 1) * per; e++) c[e] = -INFINITY;
    }
    topk_indices(c.data(), E, p.topk, chosen.data());
    double sum = 0;
    for (i64 j = 0; j < p.topk; j++) sum += s[chosen[j]];
    for (i64 j = 0; j < p.topk; j++) {
      const i64 e = chosen[j];
      const double w = p.normalize ? (double)(float)(s[e] / sum) : s[e];
      outIdx[t * p.topk + j] = (std::int32_t)e;
      outW[t * p.topk + j] = (float)(w * p.scale);
    }
  }
}

void op_gather_rows(float* out, const float* x, const std::int32_t* rows, i64 n, i64 D) {
  for (i64 i = 0; i < n; i++) std::memcpy(out + i * D, x + (i64)rows[i] * D, (std::size_t)D * 4);
}

i64 op_argmax(const float* x, i64 n) { return argmax_lanes(x, n); }

void op_scatter_add_rows(float* out, const float* src, const std::int32_t* rows, const float* w, i64 n, i64 D) {
  const int nt = threads_for((double)n * D);
  const i64 dc = std::max<i64>(256, rup(cdiv(D, (i64)nt), 64));
  run_jobs(cdiv(D, dc), nt, [&](i64 j) {
    const i64 d0 = j * dc, d1 = std::min(D, d0 + dc);
    for (i64 i = 0; i < n; i++) {
      float* o = out + (i64)rows[i] * D;
      const float* s = src + i * D;
      const double wi = w[i];
      for (i64 d = d0; d < d1; d++) o[d] = (float)((double)o[d] + wi * (double)s[d]);
    }
  });
}

void op_ffn_experts(float* y, const float* x, i64 D, const FfnNet* nets, i64 count) {
  const KernelTable* t = lv();
  // Scratch: gathered inputs [n, D], gate and up outputs [n, I] each, outputs [n, D].
  std::vector<i64> xo((std::size_t)count + 1, 0), ho((std::size_t)count + 1, 0);
  for (i64 e = 0; e < count; e++) {
    xo[e + 1] = xo[e] + nets[e].n * D;
    ho[e + 1] = ho[e] + nets[e].n * nets[e].gate.rows;
  }
  // The calling thread's scratch; workers only see pointers into it.
  static thread_local std::vector<float> sx, sg, su, sy;
  if (sx.size() < (std::size_t)xo[count]) sx.resize((std::size_t)xo[count]);
  if (sy.size() < (std::size_t)xo[count]) sy.resize((std::size_t)xo[count]);
  if (sg.size() < (std::size_t)ho[count]) sg.resize((std::size_t)ho[count]);
  if (su.size() < (std::size_t)ho[count]) su.resize((std::size_t)ho[count]);
  double work1 = 0, work2 = 0;
  std::vector<GemmNT> gg((std::size_t)count), gu((std::size_t)count), gd((std::size_t)count);
  for (i64 e = 0; e < count; e++) {
    const FfnNet& f = nets[e];
    float* xe = sx.data() + xo[e];
    for (i64 i = 0; i < f.n; i++) std::memcpy(xe + i * D, x + (i64)f.rows[i] * D, (std::size_t)D * 4);
    gg[e] = make_gemm(xe, f.n, f.gate, sg.data() + ho[e]);
    gu[e] = make_gemm(xe, f.n, f.up, su.data() + ho[e]);
    gd[e] = make_gemm(sg.data() + ho[e], f.n, f.down, sy.data() + xo[e]);
    work1 += 2.0 * (double)f.n * f.gate.rows * (D + 16);
    work2 += (double)f.n * D * (f.gate.rows + 16);
  }
  // Block formats: each net's gathered x is quantised once for gate and up (phase 1), and the
  // gate outputs for down after phase 1.
  std::vector<GemmNT> g1((std::size_t)count * 2);
  for (i64 e = 0; e < count; e++) {
    g1[(std::size_t)(2 * e)] = gg[e];
    g1[(std::size_t)(2 * e + 1)] = gu[e];
  }
  quantize_gemms(t, g1.data(), count * 2);
  for (i64 e = 0; e < count; e++) {
    gg[e].xq = g1[(std::size_t)(2 * e)].xq;
    gu[e].xq = g1[(std::size_t)(2 * e + 1)].xq;
  }
  std::vector<GemmBlock> blocks;
  // Phase 1: gate and up over the same block, then silu(gate) * up in place of the gate.
  int nt = threads_for(work1);
  split_gemms(t, gg.data(), count, nt, blocks);
  run_jobs((i64)blocks.size(), nt, [&](i64 j) {
    const GemmBlock& b = blocks[(std::size_t)j];
    run_block(t, gg[b.e], b);
    run_block(t, gu[b.e], b);
    const i64 I = gg[b.e].N;
    float* g = gg[b.e].out;
    const float* u = gu[b.e].out;
    for (i64 m = b.m0; m < b.m1; m++) t->silu_mul(g + m * I, g + m * I, u + m * I, b.n0, b.n1);
  });
  // Phase 2: down.
  quantize_gemms(t, gd.data(), count);
  run_gemms(t, gd.data(), count, work2);
  // Scatter in net order (op_scatter_add_rows' arithmetic), split over columns.
  const float* ys = sy.data();  // thread_local: take the caller's pointer, not the worker's
  double rowsTotal = 0;
  for (i64 e = 0; e < count; e++) rowsTotal += (double)nets[e].n;
  nt = threads_for(rowsTotal * D);
  const i64 dc = std::max<i64>(256, rup(cdiv(D, (i64)nt), 64));
  run_jobs(cdiv(D, dc), nt, [&](i64 j) {
    const i64 d0 = j * dc, d1 = std::min(D, d0 + dc);
    for (i64 e = 0; e < count; e++) {
      const FfnNet& f = nets[e];
      const float* src = ys + xo[e];
      for (i64 i = 0; i < f.n; i++) {
        float* o = y + (i64)f.rows[i] * D;
        const float* s = src + i * D;
        const double wi = f.w[i];
        for (i64 d = d0; d < d1; d++) o[d] = (float)((double)o[d] + wi * (double)s[d]);
      }
    }
  });
}

void set_weight_bytes(i64 bytes) { g_weight_bytes = bytes; }
bool decode_resident() { return weights_resident(); }

double read_bandwidth(i64 bytes, int reps) {
  const i64 n = bytes / 8;
  std::vector<std::uint64_t> buf((std::size_t)n);
  for (i64 i = 0; i < n; i++) buf[(std::size_t)i] = (std::uint64_t)i * 2654435761u;
  const int nt = pool_threads();
  std::vector<std::uint64_t> sink((std::size_t)nt * 8, 0);
  const i64 chunk = cdiv(n, nt);
  double best = 0;
  for (int r = 0; r < reps; r++) {
    const auto t0 = std::chrono::steady_clock::now();
    run_jobs(nt, nt, [&](i64 j) {
      const std::uint64_t* p = buf.data() + j * chunk;
      const i64 m = std::min(chunk, n - j * chunk);
      std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      i64 i = 0;
      for (; i + 4 <= m; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
      }
      for (; i < m; i++) a0 += p[i];
      sink[(std::size_t)j * 8] += a0 + a1 + a2 + a3;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, (double)n * 8 / s / 1e9);
  }
  volatile std::uint64_t keep = sink[0];
  (void)keep;
  return best;
}

}  // namespace dsv3
