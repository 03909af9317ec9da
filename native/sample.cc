// Kernels.sampleBatch: next-token picks for a batch of logits rows, one row per pool job.
// src/kernels/ref/sample.ts is the definition and this file repeats it operation for
// operation: float64 values, sums in index order, V8's Math.exp / Math.log / Math.log2
// (js_math.h; exp through the level's vectorised exp_sum, exp_impl.h), the same
// tie-breaking everywhere. So the ids are the TypeScript sampler's for the same draw, and the
// logprobs the same float32 bits. What differs is only how the work is found: after top-k /
// top-p / min-p the kept tokens are a list of ids in index order instead of a dense array with
// zeros (adding +0 never changes a sum), and top-p bucketises the large values first and the
// rest only when the nucleus is not closed among them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "js_math.h"
#include "ops.h"

namespace dsv3 {
namespace {

const int NBUCKETS = 1024;  // as the reference: 8 buckets per halving, by floor(-8·log2 v)

// ---- the reference's bucket, floor(-8·Math.log2(v)) capped at 1023, for 0 < v <= 1 ----
// With v = m·2^e (1 <= m < 2) and m strictly between thresholds T_j = 2^(j/8) and T_(j+1),
// the bucket is -8e - 1 - j, unless Math.log2's rounding could cross an eighth: only within
// 2^-20 of a threshold (its error is below 1 ulp, ~2^-45 here), where it is called exactly.
struct BucketTable {
  double t[9];              // T_0 … T_8
  std::int8_t j[256];       // by the top 8 bits of m's fraction: j, or -1 (near a threshold)
  BucketTable() {
    for (int k = 0; k <= 8; k++) t[k] = std::exp2(k / 8.0);
    t[0] = 1.0;
    t[8] = 2.0;
    const double margin = 0x1p-20;
    for (int s = 0; s < 256; s++) {
      const double lo = 1.0 + s / 256.0, hi = 1.0 + (s + 1) / 256.0;
      int jj = 0;
      while (jj < 7 && t[jj + 1] <= lo) jj++;
      const bool clean = lo - margin > t[jj] && hi + margin < t[jj + 1];
      j[s] = clean ? (std::int8_t)jj : (std::int8_t)-1;
    }
  }
};
const BucketTable g_bt;

inline int bucket_exact(double v) {
  const double b = std::floor(-jsmath::log2(v) * 8.0);
  return b >= NBUCKETS - 1 ? NBUCKETS - 1 : (int)b;
}

inline int bucket_of(double v) {
  const std::uint64_t b = jsmath::bits(v);
  const int e = (int)(b >> 52) - 1023;
  if (e < -128) return NBUCKETS - 1;  // v < 2^-128: -8·log2 v > 1024 (subnormals too)
  const std::uint64_t frac = b & ((1ull << 52) - 1);
  if (frac == 0) return std::min(NBUCKETS - 1, -8 * e);  // a power of two: log2 is exact
  int j = g_bt.j[frac >> 44];
  if (j < 0) {
    const double m = jsmath::from_bits(frac | 0x3ff0000000000000ull);
    j = 0;
    while (j < 7 && g_bt.t[j + 1] <= m) j++;
    if (m - g_bt.t[j] < 0x1p-20 || g_bt.t[j + 1] - m < 0x1p-20) return bucket_exact(v);
  }
  return std::min(NBUCKETS - 1, -8 * e - 1 - j);
}

// ---- per-thread scratch, kept between calls (workers persist) ----
struct Scratch {
  std::vector<double> x;             // penalised logits, then the weights p
  std::vector<std::uint32_t> counts; // penalty counts by id, all zero between rows
  std::vector<std::int32_t> ids, ids2, ids3;
  std::vector<std::uint16_t> bucket; // by id (top-p over a dense row)
  std::vector<double> vals;
  double mass[NBUCKETS];
  std::uint32_t cnt[NBUCKETS];
};
// Each thread's scratch (pool workers persist), reached once per row and passed down: a
// thread_local in a shared library costs a __tls_get_addr call per access.
Scratch& scratch() {
  static thread_local Scratch tl;
  return tl;
}

/**
 * The weights of a row: p[i] for the ids of the distribution, which is either dense (every id
 * 0 … V-1, zeros included) or the ascending list `ids`; total is their sum in index order.
 */
struct Dist {
  double* p;
  std::int64_t V;
  bool dense;
  std::vector<std::int32_t>* ids;
  double total;
  template <class F>
  void each(F f) const {
    if (dense) {
      for (std::int64_t i = 0; i < V; i++)
        if (p[i] != 0) f((std::int32_t)i);
    } else {
      for (const std::int32_t i : *ids) f(i);
    }
  }
};

// The k-th largest non-zero value of a dense row (0 when it has fewer than k), as the
// reference's kthLargest: any exact selection gives the same value for k <= 256; for larger k
// the reference sorts one log2 bucket, repeated here bucket for bucket.
double kth_largest(Scratch& s, const double* p, std::int64_t V, std::int64_t k) {
  if (k <= 256) {
    s.vals.assign((std::size_t)k, 0.0);
    double* heap = s.vals.data();
    std::int64_t size = 0;
    for (std::int64_t i = 0; i < V; i++) {
      const double v = p[i];
      if (v == 0) continue;
      if (size < k) {
        std::int64_t j = size++;
        while (j > 0) {
          const std::int64_t up = (j - 1) >> 1;
          if (heap[up] <= v) break;
          heap[j] = heap[up];
          j = up;
        }
        heap[j] = v;
      } else if (v > heap[0]) {
        std::int64_t j = 0;
        for (;;) {
          const std::int64_t l = 2 * j + 1;
          if (l >= k) break;
          const std::int64_t c = l + 1 < k && heap[l + 1] < heap[l] ? l + 1 : l;
          if (heap[c] >= v) break;
          heap[j] = heap[c];
          j = c;
        }
        heap[j] = v;
      }
    }
    return size < k ? 0.0 : heap[0];
  }
  s.bucket.resize((std::size_t)V);
  std::fill(s.cnt, s.cnt + NBUCKETS, 0u);
  for (std::int64_t i = 0; i < V; i++) {
    if (p[i] == 0) continue;
    const int b = bucket_of(p[i]);
    s.bucket[i] = (std::uint16_t)b;
    s.cnt[b]++;
  }
  int b = 0;
  std::int64_t above = 0;
  while (b < NBUCKETS && above + s.cnt[b] < k) above += s.cnt[b++];
  if (b == NBUCKETS) return 0.0;
  s.vals.clear();
  for (std::int64_t i = 0; i < V; i++)
    if (p[i] != 0 && s.bucket[i] == b) s.vals.push_back(p[i]);
  std::sort(s.vals.begin(), s.vals.end());
  return s.vals[s.vals.size() - (std::size_t)(k - above)];
}

// Top-k over the dense row: the ids with p >= the k-th largest, as a list.
void keep_top_k(Scratch& s, Dist& d, std::int64_t k) {
  const double kth = kth_largest(s, d.p, d.V, k);
  if (kth == 0) {  // fewer than k non-zero: nothing cut, the total is the row's
    double total = 0;
    for (std::int64_t i = 0; i < d.V; i++) total += d.p[i];
    d.total = total;
    return;
  }
  std::vector<std::int32_t>& out = s.ids;
  out.clear();
  double total = 0;
  for (std::int64_t i = 0; i < d.V; i++)
    if (d.p[i] >= kth) {
      out.push_back((std::int32_t)i);
      total += d.p[i];
    }
  d.dense = false;
  d.ids = &out;
  d.total = total;
}

// Top-p (the reference's keepTopP): masses of the log2 buckets in index order, the bucket where
// the nucleus closes sorted, ties at the cut kept lowest id first. A value below 2^(-FIRST/8)
// is in bucket FIRST or later, so the buckets before FIRST hold only the values above it (few,
// in a peaked distribution): they are summed first, and the rest only when the nucleus does
// not close among them. When it does, the ids below are past the closing bucket (dropped).
void keep_top_p(Scratch& s, Dist& d, double topP) {
  const int FIRST = 64;
  const double tau = 0x1p-8;  // 2^(-FIRST/8)
  const double need = topP * d.total;
  const double* p = d.p;
  std::fill(s.mass, s.mass + NBUCKETS, 0.0);
  // The candidates (values >= tau), in index order, and their buckets.
  std::vector<std::int32_t>& cand = s.ids2;
  std::vector<std::uint16_t>& cb = s.bucket;
  cand.clear();
  cb.clear();
  d.each([&](std::int32_t i) {
    if (p[i] >= tau) cand.push_back(i);
  });
  for (const std::int32_t i : cand) {
    const int b = bucket_of(p[i]);
    cb.push_back((std::uint16_t)b);
    if (b < FIRST) s.mass[b] += p[i];
  }
  int closing = 0;
  double before = 0;
  while (closing < FIRST && before + s.mass[closing] < need) before += s.mass[closing++];
  // The ids to look at from here on, and their buckets.
  const std::vector<std::int32_t>* dom = &cand;
  const std::uint16_t* bk = cb.data();
  std::vector<std::int32_t> all;
  std::vector<std::uint16_t> allB;
  if (closing == FIRST) {
    // Not closed: every non-zero value's bucket, and the masses of buckets FIRST and later.
    all.reserve(d.dense ? 4096 : d.ids->size());
    std::size_t c = 0;
    d.each([&](std::int32_t i) {
      int b;
      if (c < cand.size() && cand[c] == i) b = cb[c++];
      else b = bucket_of(p[i]);
      all.push_back(i);
      allB.push_back((std::uint16_t)b);
      if (b >= FIRST) s.mass[b] += p[i];
    });
    while (closing < NBUCKETS - 1 && before + s.mass[closing] < need) before += s.mass[closing++];
    dom = &all;
    bk = allB.data();
  }
  const std::size_t n = dom->size();
  const std::int32_t* ids = dom->data();
  s.vals.clear();
  for (std::size_t j = 0; j < n; j++)
    if (bk[j] == closing) s.vals.push_back(p[ids[j]]);
  std::sort(s.vals.begin(), s.vals.end());
  double cutValue = 0;
  std::int64_t tiesKept = 0;
  for (std::int64_t j = (std::int64_t)s.vals.size() - 1; j >= 0 && before < need; j--) {
    const double v = s.vals[j];
    if (v != cutValue) {
      cutValue = v;
      tiesKept = 0;
    }
    tiesKept++;
    before += v;
  }
  std::vector<std::int32_t>& out = s.ids3;
  out.clear();
  double kept = 0;
  for (std::size_t j = 0; j < n; j++) {
    const double v = p[ids[j]];
    const int b = bk[j];
    if (b < closing || (b == closing && (v > cutValue || (v == cutValue && tiesKept-- > 0)))) {
      out.push_back(ids[j]);
      kept += v;
    }
  }
  s.ids.swap(out);
  d.dense = false;
  d.ids = &s.ids;
  d.total = kept;
}

// Min-p: the cut relative to the most likely (weight 1) is minP itself.
void keep_min_p(Scratch& s, Dist& d, double minP) {
  std::vector<std::int32_t>& out = s.ids2;
  out.clear();
  double total = 0;
  d.each([&](std::int32_t i) {
    if (!(d.p[i] < minP)) {
      out.push_back(i);
      total += d.p[i];
    }
  });
  s.ids.swap(out);
  d.dense = false;
  d.ids = &s.ids;
  d.total = total;
}

/** The pick; -1 when nothing can be picked. */
std::int32_t pick(Scratch& s, const SampleRowArgs& a, std::int64_t V, const KernelTable* t, bool* drew) {
  *drew = false;
  const float* l = a.logits;
  const std::int64_t vocab = a.vocab < V ? a.vocab : V;
  const bool pen = a.rep != 1 || a.freq != 0 || a.pres != 0;
  if (a.temperature == 0 && !pen && !a.mask) return (std::int32_t)op_argmax(l, vocab);

  s.x.resize((std::size_t)V);
  double* x = s.x.data();
  if (!a.mask) {
    for (std::int64_t i = 0; i < vocab; i++) {
      const double v = l[i];
      x[i] = v == v ? v : -INFINITY;
    }
  } else {
    // By words of the mask (none past its end: not allowed), each bit a select.
    for (std::int64_t w = 0; w << 5 < vocab; w++) {
      const std::uint32_t bits = w < a.maskWords ? a.mask[w] : 0u;
      const std::int64_t i0 = w << 5, n = std::min<std::int64_t>(32, vocab - i0);
      for (std::int64_t j = 0; j < n; j++) {
        const double v = l[i0 + j];
        x[i0 + j] = ((bits >> j) & 1u) && v == v ? v : -INFINITY;
      }
    }
  }
  for (std::int64_t i = vocab; i < V; i++) x[i] = -INFINITY;
  if (pen) {
    if (s.counts.size() < (std::size_t)V) s.counts.assign((std::size_t)V, 0u);
    std::uint32_t* cnt = s.counts.data();
    for (std::int64_t j = 0; j < a.nHist; j++) cnt[a.hist[j]]++;
    for (std::int64_t j = 0; j < a.nHist; j++) {
      const std::int32_t id = a.hist[j];
      const std::uint32_t c = cnt[id];
      if (c == 0) continue;  // done already
      cnt[id] = 0;
      double v = x[id];
      if (a.rep != 1) v = v > 0 ? v / a.rep : v * a.rep;
      v -= (double)c * a.freq + a.pres;
      x[id] = v;
    }
  }
  const std::int64_t best = argmax_lanes(x, V);
  if (best < 0) return -1;
  const double max = x[best];
  if (a.temperature == 0 || max == INFINITY) return (std::int32_t)best;

  Dist d{x, V, true, nullptr, 0};
  // The total of the whole row is only read by top-p and the draw: top-k and min-p sum what they keep.
  const bool topK = a.topK > 0 && a.topK < V;
  const bool wholeTotal = !topK && !(a.topP >= 1 && a.minP > 0);
  d.total = t->exp_sum(x, x, V, max, 1.0 / a.temperature, wholeTotal);
  if (topK) keep_top_k(s, d, a.topK);
  if (a.topP < 1) keep_top_p(s, d, a.topP);
  if (a.minP > 0) keep_min_p(s, d, a.minP);
  *drew = true;
  double u = a.u * d.total;
  std::int32_t last = (std::int32_t)best, got = -1;
  if (d.dense) {
    for (std::int64_t i = 0; i < V; i++) {
      const double v = x[i];
      if (v == 0) continue;
      last = (std::int32_t)i;
      u -= v;
      if (u < 0) {
        got = last;
        break;
      }
    }
  } else {
    for (const std::int32_t i : *d.ids) {
      last = i;
      u -= x[i];
      if (u < 0) {
        got = i;
        break;
      }
    }
  }
  return got >= 0 ? got : last;  // rounding left u >= 0: the last kept token
}

/** The row's logprobs (the reference's logSoftmax and topLogprobs, on the raw logits). */
void logprobs(Scratch& s, const SampleRowArgs& a, std::int64_t V, const KernelTable* t, std::int32_t id) {
  const float* l = a.logits;
  float m = -INFINITY;
  bool nan = false;
  for (std::int64_t i = 0; i < V; i++) {
    if (l[i] > m) m = l[i];
    nan |= l[i] != l[i];
  }
  double lse = NAN;  // NaN anywhere (or no finite maximum) makes every logprob NaN
  if (!nan && m != -INFINITY && m != INFINITY) {
    s.x.resize((std::size_t)V);
    for (std::int64_t i = 0; i < V; i++) s.x[i] = l[i];
    const double sum = t->exp_sum(s.x.data(), nullptr, V, m, 1.0, 1);
    lse = (double)m + jsmath::log(sum);
  }
  auto lp = [&](std::int64_t i) { return (float)((double)l[i] - lse); };
  *a.outLp = id >= 0 ? lp(id) : NAN;
  const std::int64_t n = std::min(V, a.vocab), k = std::min<std::int64_t>(a.logprobs, n);
  std::int32_t* ti = a.outTopIds;
  float* tv = a.outTopLp;
  if (lse != lse) {
    for (std::int64_t j = 0; j < k; j++) ti[j] = (std::int32_t)j, tv[j] = NAN;
    return;
  }
  // Best first; a later id with an equal value ranks after (ids come in increasing order).
  std::int64_t size = 0;
  for (std::int64_t i = 0; i < n && k > 0; i++) {
    const float v = lp(i);
    if (size == k && !(v > tv[k - 1])) continue;
    std::int64_t j = size < k ? size++ : k - 1;
    while (j > 0 && v > tv[j - 1]) {
      tv[j] = tv[j - 1];
      ti[j] = ti[j - 1];
      j--;
    }
    tv[j] = v;
    ti[j] = (std::int32_t)i;
  }
}

struct BatchCtx {
  const SampleRowArgs* rows;
  std::int64_t V;
  const KernelTable* t;
};

void run_row(void* ctx, std::int64_t r) {
  const BatchCtx& c = *static_cast<const BatchCtx*>(ctx);
  const SampleRowArgs& a = c.rows[r];
  Scratch& s = scratch();
  bool drew = false;
  const std::int32_t id = pick(s, a, c.V, c.t, &drew);
  *a.outId = id;
  *a.outDrew = drew ? 1 : 0;
  if (a.logprobs >= 0) logprobs(s, a, c.V, c.t, id);
}

}  // namespace

void op_sample_rows(const SampleRowArgs* rows, i64 n, i64 V) {
  BatchCtx c{rows, V, level()};
  pool_run(n, run_row, &c, (int)std::min<i64>(n, pool_threads()));
}

void op_js_math(int fn, const double* x, double* out, i64 n) {
  if (fn == 3) {
    level()->exp_sum(x, out, n, 0.0, 1.0, 1);
    return;
  }
  for (i64 i = 0; i < n; i++) out[i] = fn == 0 ? jsmath::exp(x[i]) : fn == 1 ? jsmath::log(x[i]) : jsmath::log2(x[i]);
}

}  // namespace dsv3
