// N-API glue: validates the arguments (a wrong size must throw, never write out of
// bounds) and hands the TypedArrays' own memory to the ops, zero-copy.
#include <node_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ops.h"
#include "quantize.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

using namespace dsv3;

namespace dsv3 {
/** Files mapped into memory (mapfile.cc): mapFile(path) → handle, mapSize(handle), mapView(handle, offset, length). */
napi_value MapFile(napi_env env, napi_callback_info info);
napi_value MapSize(napi_env env, napi_callback_info info);
napi_value MapView(napi_env env, napi_callback_info info);
}  // namespace dsv3

#ifndef NODE_GYP_MODULE_NAME
#define NODE_GYP_MODULE_NAME dsv3_native
#endif

namespace {

/**
 * A weight as the ops see it: one descriptor made (and validated) once per matrix by weight(),
 * holding references to its arrays so they outlive it. Ops take it instead of the matrix's
 * arrays and numbers.
 */
struct WeightHandle {
  WView w;
  napi_ref data = nullptr;
  napi_ref scale = nullptr;
};
const napi_type_tag kWeightTag = {0x64737633574d6174ULL, 0x7269782068616e64ULL};

void finalizeWeight(napi_env env, void* p, void*) {
  WeightHandle* h = static_cast<WeightHandle*>(p);
  if (h->data) napi_delete_reference(env, h->data);
  if (h->scale) napi_delete_reference(env, h->scale);
  delete h;
}

struct Args {
  napi_env env;
  napi_value v[16];
  size_t n = 16;
  bool ok = true;
  const char* fn;

  Args(napi_env e, napi_callback_info info, const char* name) : env(e), fn(name) {
    if (napi_get_cb_info(env, info, &n, v, nullptr, nullptr) != napi_ok) fail("bad call");
  }
  void fail(const std::string& msg, bool range = false) {
    if (!ok) return;
    ok = false;
    const std::string m = std::string("dsv3 native ") + fn + ": " + msg;
    if (range) napi_throw_range_error(env, nullptr, m.c_str());
    else napi_throw_type_error(env, nullptr, m.c_str());
  }
  bool isNull(size_t i) { return i >= n || nullish(v[i]); }
  bool nullish(napi_value val) {
    napi_valuetype t;
    napi_typeof(env, val, &t);
    return t == napi_null || t == napi_undefined;
  }
  void* typed(size_t i, napi_typedarray_type want, size_t* len, const char* what) {
    if (i >= n) {
      *len = 0;
      if (ok) fail(std::string(what) + " must be a typed array");
      return nullptr;
    }
    return typedv(v[i], want, len, what);
  }
  void* typedv(napi_value val, napi_typedarray_type want, size_t* len, const char* what) {
    *len = 0;
    if (!ok) return nullptr;
    bool is = false;
    if (napi_is_typedarray(env, val, &is) != napi_ok || !is) {
      fail(std::string(what) + " must be a typed array");
      return nullptr;
    }
    napi_typedarray_type type;
    void* data = nullptr;
    napi_value ab;
    size_t off;
    napi_get_typedarray_info(env, val, &type, len, &data, &ab, &off);
    if (type != want) {
      fail(std::string(what) + " has the wrong element type");
      return nullptr;
    }
    static float dummy[16];
    return data ? data : dummy;  // zero-length arrays may have no storage
  }
  float* f32(size_t i, size_t* len, const char* what) {
    return static_cast<float*>(typed(i, napi_float32_array, len, what));
  }
  std::int32_t* i32(size_t i, size_t* len, const char* what) {
    return static_cast<std::int32_t*>(typed(i, napi_int32_array, len, what));
  }
  double num(size_t i, const char* what) {
    double d = 0;
    if (!ok) return 0;
    if (i >= n || napi_get_value_double(env, v[i], &d) != napi_ok) fail(std::string(what) + " must be a number");
    return d;
  }
  i64 count(size_t i, const char* what) {
    const double d = num(i, what);
    if (!ok) return 0;
    if (!(d >= 0 && d <= 9007199254740991.0) || std::floor(d) != d) {
      fail(std::string(what) + " must be a non-negative integer", true);
      return 0;
    }
    return (i64)d;
  }
  bool flag(size_t i) {
    bool b = false;
    if (i < n) napi_get_value_bool(env, v[i], &b);
    return b;
  }
  void need(size_t have, double want, const char* what) {
    if (ok && (double)have < want)
      fail(std::string(what) + " is too short (" + std::to_string(have) + " < " + std::to_string((long long)want) + ")",
           true);
  }
  /** (data, dtype, rows, cols, scale | null, b0, b1) starting at argument i. */
  WView weight(size_t i) {
    if (i + 6 >= n) {
      fail("missing weight arguments");
      return WView{};
    }
    const double dt = num(i + 1, "dtype"), rows = num(i + 2, "rows"), cols = num(i + 3, "cols");
    const double b0 = isNull(i + 5) ? 0 : num(i + 5, "block[0]"), b1 = isNull(i + 6) ? 0 : num(i + 6, "block[1]");
    return weightOf(v[i], dt, rows, cols, isNull(i + 4) ? nullptr : v[i + 4], b0, b1);
  }
  i64 whole(double d, const char* what) {
    if (ok && (!(d >= 0 && d <= 9007199254740991.0) || std::floor(d) != d))
      fail(std::string(what) + " must be a non-negative integer", true);
    return ok ? (i64)d : 0;
  }
  /** A weight from its data array, numbers, and scale array (nullptr when absent). */
  WView weightOf(napi_value data, double dtd, double rowsd, double colsd, napi_value scale, double b0, double b1) {
    WView w;
    std::memset(&w, 0, sizeof w);
    // Code 4 is F8 that the caller has checked holds no NaN code (kernels then skip the check).
    i64 dt = whole(dtd, "dtype");
    if (dt == 4) {
      dt = DT_F8;
      w.nanfree = 1;
    }
    w.rows = whole(rowsd, "rows");
    w.cols = whole(colsd, "cols");
    w.ld = w.cols;
    w.dtype = (int)dt;
    size_t len = 0;
    if (!ok) return w;
    if (dt >= DT_COUNT || FORMATS[dt].blockElems == 0) {
      fail("unknown dtype code " + std::to_string(dt));
      return w;
    }
    const FormatTraits& f = FORMATS[dt];
    const std::string what = std::string("weight data (") + f.name + ")";
    if (f.blockElems > 1) {
      // ggml block format: rows of whole blocks, raw bytes; ld is the row's byte count.
      if (w.cols % f.blockElems != 0) {
        fail(std::string(f.name) + " rows hold whole blocks of " + std::to_string(f.blockElems) + " values; cols = " +
                 std::to_string(w.cols) + " is not a multiple",
             true);
        return w;
      }
      w.ld = w.cols / f.blockElems * f.blockBytes;
      w.data = typedv(data, napi_uint8_array, &len, what.c_str());
      need(len, (double)w.rows * (double)w.ld, "weight data");
      return w;
    }
    switch (dt) {
      case DT_F32: w.data = typedv(data, napi_float32_array, &len, what.c_str()); break;
      case DT_BF16: w.data = typedv(data, napi_uint16_array, &len, what.c_str()); break;
      case DT_F16: w.data = typedv(data, napi_uint16_array, &len, what.c_str()); break;
      case DT_F8: w.data = typedv(data, napi_uint8_array, &len, what.c_str()); break;
    }
    need(len, (double)w.rows * (double)w.cols, "weight data");
    if (ok && dt == DT_F8) {
      w.b0 = whole(b0, "block[0]");
      w.b1 = whole(b1, "block[1]");
      if (ok && (w.b0 < 1 || w.b1 < 1)) fail("F8 weight needs a block size >= 1", true);
      if (!scale) fail("F8 weight needs its scale");
      size_t sl = 0;
      w.scale = static_cast<float*>(typedv(scale, napi_float32_array, &sl, "weight scale"));
      if (ok) {
        w.sCols = (w.cols + w.b1 - 1) / w.b1;
        need(sl, (double)((w.rows + w.b0 - 1) / w.b0) * (double)w.sCols, "weight scale");
      }
    }
    return w;
  }
  /** The weight a handle from weight() describes, at argument i (validated when it was made). */
  WView handle(size_t i) {
    if (i >= n) {
      fail("argument " + std::to_string(i) + " must be a weight handle (from weight())");
      return WView{};
    }
    return handleOf(v[i], "argument " + std::to_string(i));
  }
  WView handleOf(napi_value val, const std::string& what) {
    WView w;
    std::memset(&w, 0, sizeof w);
    bool tagged = false;
    void* p = nullptr;
    if (!ok) return w;
    if (napi_check_object_type_tag(env, val, &kWeightTag, &tagged) != napi_ok || !tagged ||
        napi_get_value_external(env, val, &p) != napi_ok || !p) {
      fail(what + " must be a weight handle (from weight())");
      return w;
    }
    return static_cast<const WeightHandle*>(p)->w;
  }
};

napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// weight(data, dtype, rows, cols, scale | null, b0, b1) → handle: see WeightHandle. Code 4 is
// F8 the caller has checked holds no NaN code (kernels then skip the check).
napi_value Weight(napi_env env, napi_callback_info info) {
  Args a(env, info, "weight");
  const WView w = a.weight(0);
  if (!a.ok) return nullptr;
  WeightHandle* h = new WeightHandle();
  h->w = w;
  napi_create_reference(env, a.v[0], 1, &h->data);
  if (w.scale) napi_create_reference(env, a.v[4], 1, &h->scale);
  napi_value ext;
  if (napi_create_external(env, h, finalizeWeight, nullptr, &ext) != napi_ok ||
      napi_type_tag_object(env, ext, &kWeightTag) != napi_ok) {
    finalizeWeight(env, h, nullptr);
    a.fail("cannot create the handle");
    return nullptr;
  }
  return ext;
}

// matmul(out, x, M, w, r0, N)
napi_value Matmul(napi_env env, napi_callback_info info) {
  Args a(env, info, "matmul");
  size_t lo, lx;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const i64 M = a.count(2, "M");
  const WView w = a.handle(3);
  const i64 r0 = a.count(4, "r0"), N = a.count(5, "N");
  if (a.ok && r0 + N > w.rows) a.fail("r0 + N exceeds the weight's rows", true);
  a.need(lx, (double)M * w.cols, "x");
  a.need(lo, (double)M * N, "out");
  if (a.ok) op_matmul(out, x, M, w, r0, N);
  return nullptr;
}

// matmulT(out, x, M, w, r0, R)
napi_value MatmulT(napi_env env, napi_callback_info info) {
  Args a(env, info, "matmulT");
  size_t lo, lx;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const i64 M = a.count(2, "M");
  const WView w = a.handle(3);
  const i64 r0 = a.count(4, "r0"), R = a.count(5, "R");
  if (a.ok && r0 + R > w.rows) a.fail("r0 + R exceeds the weight's rows", true);
  a.need(lx, (double)M * R, "x");
  a.need(lo, (double)M * w.cols, "out");
  if (a.ok) op_matmulT(out, x, M, w, r0, R);
  return nullptr;
}

// matmulHeads(out, x, M, H, w, r0, step, N)
napi_value MatmulHeads(napi_env env, napi_callback_info info) {
  Args a(env, info, "matmulHeads");
  size_t lo, lx;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const i64 M = a.count(2, "M"), H = a.count(3, "H");
  const WView w = a.handle(4);
  const i64 r0 = a.count(5, "r0"), step = a.count(6, "step"), N = a.count(7, "N");
  if (a.ok && H > 0 && (double)r0 + (double)(H - 1) * step + N > (double)w.rows) a.fail("the last head's rows exceed the weight", true);
  a.need(lx, (double)M * H * w.cols, "x");
  a.need(lo, (double)M * H * N, "out");
  if (a.ok) op_matmul_heads(out, x, M, H, w, r0, step, N);
  return nullptr;
}

// matmulTHeads(out, x, M, H, xs, w, r0, step, R)
napi_value MatmulTHeads(napi_env env, napi_callback_info info) {
  Args a(env, info, "matmulTHeads");
  size_t lo, lx;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const i64 M = a.count(2, "M"), H = a.count(3, "H"), xs = a.count(4, "xs");
  const WView w = a.handle(5);
  const i64 r0 = a.count(6, "r0"), step = a.count(7, "step"), R = a.count(8, "R");
  if (a.ok && R > xs) a.fail("R exceeds the head stride xs", true);
  if (a.ok && H > 0 && (double)r0 + (double)(H - 1) * step + R > (double)w.rows) a.fail("the last head's rows exceed the weight", true);
  a.need(lx, (double)M * H * xs, "x");
  a.need(lo, (double)M * H * w.cols, "out");
  if (a.ok) op_matmulT_heads(out, x, M, H, xs, w, r0, step, R);
  return nullptr;
}

// embedding(out, w, ids)
napi_value Embedding(napi_env env, napi_callback_info info) {
  Args a(env, info, "embedding");
  size_t lo, li;
  float* out = a.f32(0, &lo, "out");
  const WView w = a.handle(1);
  const std::int32_t* ids = a.i32(2, &li, "ids");
  a.need(lo, (double)li * w.cols, "out");
  for (size_t t = 0; a.ok && t < li; t++)
    if (ids[t] < 0 || ids[t] >= w.rows)
      a.fail("token id " + std::to_string(ids[t]) + " outside [0, " + std::to_string(w.rows) + ")", true);
  if (a.ok) op_embedding(out, w, ids, (i64)li);
  return nullptr;
}

// rmsNorm(out, x, weight, M, eps)
napi_value RmsNorm(napi_env env, napi_callback_info info) {
  Args a(env, info, "rmsNorm");
  size_t lo, lx, lw;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const float* w = a.f32(2, &lw, "weight");
  const i64 M = a.count(3, "M");
  const double eps = a.num(4, "eps");
  a.need(lx, (double)M * lw, "x");
  a.need(lo, (double)M * lw, "out");
  if (a.ok) op_rmsnorm(out, x, w, M, (i64)lw, eps);
  return nullptr;
}

// rope(x, T, H, stride, offset, pos, freqs)
napi_value Rope(napi_env env, napi_callback_info info) {
  Args a(env, info, "rope");
  size_t lx, lp, lf;
  float* x = a.f32(0, &lx, "x");
  const i64 T = a.count(1, "T"), H = a.count(2, "H"), stride = a.count(3, "stride"), off = a.count(4, "offset");
  const std::int32_t* pos = a.i32(5, &lp, "pos");
  const float* freqs = a.f32(6, &lf, "freqs");
  a.need(lp, (double)T, "pos");
  if (a.ok && off + 2 * (i64)lf > stride) a.fail("offset + 2·freqs.length exceeds stride", true);
  if (a.ok && T * H > 0) a.need(lx, (double)(T * H - 1) * stride + off + 2 * (double)lf, "x");
  if (a.ok) op_rope(x, T, H, stride, off, pos, freqs, (i64)lf);
  return nullptr;
}

// softmax(x, rows, cols)
napi_value Softmax(napi_env env, napi_callback_info info) {
  Args a(env, info, "softmax");
  size_t lx;
  float* x = a.f32(0, &lx, "x");
  const i64 rows = a.count(1, "rows"), cols = a.count(2, "cols");
  a.need(lx, (double)rows * cols, "x");
  if (a.ok) op_softmax(x, rows, cols);
  return nullptr;
}

// siluMul(out, gate, up, n)
napi_value SiluMul(napi_env env, napi_callback_info info) {
  Args a(env, info, "siluMul");
  size_t lo, lg, lu;
  float* out = a.f32(0, &lo, "out");
  const float* g = a.f32(1, &lg, "gate");
  const float* u = a.f32(2, &lu, "up");
  const i64 n = a.count(3, "n");
  a.need(lo, (double)n, "out");
  a.need(lg, (double)n, "gate");
  a.need(lu, (double)n, "up");
  if (a.ok) op_silu_mul(out, g, u, n);
  return nullptr;
}

// add(out, a, n)
napi_value Add(napi_env env, napi_callback_info info) {
  Args a(env, info, "add");
  size_t lo, la;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &la, "a");
  const i64 n = a.count(2, "n");
  a.need(lo, (double)n, "out");
  a.need(la, (double)n, "a");
  if (a.ok) op_add(out, x, n);
  return nullptr;
}

// attnLatent(out, qLat, qPe, kv, pe, T, H, C, R, p0, scale)
napi_value AttnLatent(napi_env env, napi_callback_info info) {
  Args a(env, info, "attnLatent");
  size_t lo, lq, lr, lk, lp;
  AttnLatentArgs p;
  p.out = a.f32(0, &lo, "out");
  p.qLat = a.f32(1, &lq, "qLat");
  p.qPe = a.f32(2, &lr, "qPe");
  p.kv = a.f32(3, &lk, "kv");
  p.pe = a.f32(4, &lp, "pe");
  p.T = a.count(5, "T");
  p.H = a.count(6, "H");
  p.C = a.count(7, "C");
  p.R = a.count(8, "R");
  p.p0 = a.count(9, "p0");
  p.scale = (float)a.num(10, "scale");
  const double TH = (double)p.T * p.H, S = (double)(p.p0 + p.T);
  a.need(lo, TH * p.C, "out");
  a.need(lq, TH * p.C, "qLat");
  a.need(lr, TH * p.R, "qPe");
  a.need(lk, S * p.C, "kv");
  a.need(lp, S * p.R, "pe");
  if (a.ok) op_attn_latent(p);
  return nullptr;
}

// attention(out, q, k, v, T, H, Dk, Dv, p0, scale)
napi_value Attention(napi_env env, napi_callback_info info) {
  Args a(env, info, "attention");
  size_t lo, lq, lk, lv;
  AttentionArgs p;
  p.out = a.f32(0, &lo, "out");
  p.q = a.f32(1, &lq, "q");
  p.k = a.f32(2, &lk, "k");
  p.v = a.f32(3, &lv, "v");
  p.T = a.count(4, "T");
  p.H = a.count(5, "H");
  p.Dk = a.count(6, "Dk");
  p.Dv = a.count(7, "Dv");
  p.p0 = a.count(8, "p0");
  p.scale = (float)a.num(9, "scale");
  const double TH = (double)p.T * p.H, SH = (double)(p.p0 + p.T) * p.H;
  a.need(lo, TH * p.Dv, "out");
  a.need(lq, TH * p.Dk, "q");
  a.need(lk, SH * p.Dk, "k");
  a.need(lv, SH * p.Dv, "v");
  if (a.ok) op_attention(p);
  return nullptr;
}

// moeRoute(outIdx, outW, logits, T, E, topk, nGroup, topkGroup, softmax, bias, normalize, scale)
napi_value MoeRoute(napi_env env, napi_callback_info info) {
  Args a(env, info, "moeRoute");
  size_t li, lw, ll, lb = 0;
  std::int32_t* idx = a.i32(0, &li, "outIdx");
  float* w = a.f32(1, &lw, "outW");
  const float* logits = a.f32(2, &ll, "logits");
  const i64 T = a.count(3, "T"), E = a.count(4, "E");
  RouteArgs p;
  p.topk = a.count(5, "topk");
  p.nGroup = a.count(6, "nGroup");
  p.topkGroup = a.count(7, "topkGroup");
  p.softmax = a.flag(8);
  p.bias = a.isNull(9) ? nullptr : a.f32(9, &lb, "bias");
  p.normalize = a.flag(10);
  p.scale = a.num(11, "scale");
  a.need(ll, (double)T * E, "logits");
  a.need(li, (double)T * p.topk, "outIdx");
  a.need(lw, (double)T * p.topk, "outW");
  if (p.bias) a.need(lb, (double)E, "bias");
  if (a.ok && (p.nGroup < 1 || E % p.nGroup != 0)) a.fail("nGroup must divide E", true);
  if (a.ok && p.topk > E) a.fail("topk exceeds E", true);
  if (a.ok) op_moe_route(idx, w, logits, T, E, p);
  return nullptr;
}

// gatherRows(out, x, rows, D)
napi_value GatherRows(napi_env env, napi_callback_info info) {
  Args a(env, info, "gatherRows");
  size_t lo, lx, lr;
  float* out = a.f32(0, &lo, "out");
  const float* x = a.f32(1, &lx, "x");
  const std::int32_t* rows = a.i32(2, &lr, "rows");
  const i64 D = a.count(3, "D");
  a.need(lo, (double)lr * D, "out");
  for (size_t i = 0; a.ok && i < lr; i++)
    if (rows[i] < 0 || (double)(rows[i] + 1) * D > (double)lx) a.fail("row index out of range", true);
  if (a.ok) op_gather_rows(out, x, rows, (i64)lr, D);
  return nullptr;
}

// ffnExperts(y, x, D, handles, offsets, rows, weights): net e's gate, up and down are the weight
// handles handles[3e], handles[3e+1], handles[3e+2].
napi_value FfnExperts(napi_env env, napi_callback_info info) {
  Args a(env, info, "ffnExperts");
  size_t ly, lx, lo, lr, lw;
  float* y = a.f32(0, &ly, "y");
  const float* x = a.f32(1, &lx, "x");
  const i64 D = a.count(2, "D");
  const std::int32_t* off = a.i32(4, &lo, "offsets");
  const std::int32_t* rows = a.i32(5, &lr, "rows");
  const float* wts = a.f32(6, &lw, "weights");
  if (!a.ok) return nullptr;
  bool isArr = false;
  napi_is_array(env, a.v[3], &isArr);
  uint32_t na = 0;
  if (isArr) napi_get_array_length(env, a.v[3], &na);
  const i64 count = lo > 0 ? (i64)lo - 1 : 0;
  if (!isArr || na != (uint32_t)(3 * count)) {
    a.fail("handles must hold 3 weights per net (offsets has nets + 1)", true);
    return nullptr;
  }
  if (lw < lr) a.fail("weights is shorter than rows", true);
  const double T = D > 0 ? std::floor((double)lx / (double)D) : 0;
  if (a.ok) a.need(ly, T * (double)D, "y");
  std::vector<FfnNet> nets((std::size_t)count);
  for (i64 e = 0; a.ok && e < count; e++) {
    napi_value el[3];
    for (uint32_t k = 0; k < 3; k++) napi_get_element(env, a.v[3], (uint32_t)(3 * e) + k, &el[k]);
    FfnNet& f = nets[(std::size_t)e];
    const std::string net = "net " + std::to_string(e);
    f.gate = a.handleOf(el[0], net + " gate");
    f.up = a.handleOf(el[1], net + " up");
    f.down = a.handleOf(el[2], net + " down");
    if (!a.ok) break;
    if (f.gate.cols != D || f.up.cols != D || f.up.rows != f.gate.rows || f.down.rows != D || f.down.cols != f.gate.rows)
      a.fail("net " + std::to_string(e) + ": gate/up must be [I, D] and down [D, I]", true);
    const i64 o0 = off[e], o1 = off[e + 1];
    if (a.ok && (o0 < 0 || o1 < o0 || (size_t)o1 > lr)) a.fail("offsets must rise within rows", true);
    if (!a.ok) break;
    f.rows = rows + o0;
    f.w = wts + o0;
    f.n = o1 - o0;
    for (i64 i = 0; i < f.n; i++)
      if (f.rows[i] < 0 || (double)f.rows[i] >= T) a.fail("row index out of range", true);
  }
  if (a.ok) op_ffn_experts(y, x, D, nets.data(), count);
  return nullptr;
}

// scatterAddRows(out, src, rows, weights, D)
napi_value ScatterAddRows(napi_env env, napi_callback_info info) {
  Args a(env, info, "scatterAddRows");
  size_t lo, ls, lr, lw;
  float* out = a.f32(0, &lo, "out");
  const float* src = a.f32(1, &ls, "src");
  const std::int32_t* rows = a.i32(2, &lr, "rows");
  const float* w = a.f32(3, &lw, "weights");
  const i64 D = a.count(4, "D");
  a.need(ls, (double)lr * D, "src");
  a.need(lw, (double)lr, "weights");
  for (size_t i = 0; a.ok && i < lr; i++)
    if (rows[i] < 0 || (double)(rows[i] + 1) * D > (double)lo) a.fail("row index out of range", true);
  if (a.ok) op_scatter_add_rows(out, src, rows, w, (i64)lr, D);
  return nullptr;
}

// f8NanFree(codes): true when no byte is an e4m3 NaN code (0x7F or 0xFF).
napi_value F8NanFree(napi_env env, napi_callback_info info) {
  Args a(env, info, "f8NanFree");
  size_t n;
  const std::uint8_t* p = static_cast<const std::uint8_t*>(a.typed(0, napi_uint8_array, &n, "codes"));
  if (!a.ok) return nullptr;
  bool any = false;
  for (size_t i = 0; i < n && !any; i += 4096) {
    const size_t e = std::min(n, i + 4096);
    unsigned char acc = 0;
    for (size_t j = i; j < e; j++) acc |= (unsigned char)((p[j] & 0x7f) == 0x7f);
    any = acc != 0;
  }
  napi_value r;
  napi_get_boolean(env, !any, &r);
  return r;
}

// argmax(x): see Kernels.argmax.
napi_value Argmax(napi_env env, napi_callback_info info) {
  Args a(env, info, "argmax");
  size_t n;
  const float* x = a.f32(0, &n, "x");
  if (!a.ok) return nullptr;
  napi_value r;
  napi_create_int64(env, op_argmax(x, (i64)n), &r);
  return r;
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  Args a(env, info, "setThreads");
  const i64 n = a.count(0, "n");
  if (a.ok) pool_set_threads((int)n);
  return nullptr;
}

napi_value GetThreads(napi_env env, napi_callback_info) {
  napi_value r;
  napi_create_int32(env, pool_threads(), &r);
  return r;
}

napi_value Str(napi_env env, const char* s) {
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

napi_value Level(napi_env env, napi_callback_info) { return Str(env, level()->name); }
napi_value Features(napi_env env, napi_callback_info) { return Str(env, cpu_features()); }

napi_value Levels(napi_env env, napi_callback_info) {
  const char* names[8];
  const int n = cpu_levels(names, 8);
  napi_value arr;
  napi_create_array_with_length(env, (size_t)n, &arr);
  for (int i = 0; i < n; i++) napi_set_element(env, arr, (uint32_t)i, Str(env, names[i]));
  return arr;
}

napi_value SetLevel(napi_env env, napi_callback_info info) {
  Args a(env, info, "setLevel");
  char buf[32] = {0};
  size_t len = 0;
  if (a.n < 1 || napi_get_value_string_utf8(env, a.v[0], buf, sizeof buf, &len) != napi_ok) a.fail("name must be a string");
  if (a.ok && !set_level(buf)) a.fail(std::string("level ") + buf + " is not supported on this CPU", true);
  return nullptr;
}

// setWeightBytes(n): the bytes of weights loaded through the allocator so far.
napi_value SetWeightBytes(napi_env env, napi_callback_info info) {
  Args a(env, info, "setWeightBytes");
  const i64 n = a.count(0, "bytes");
  if (a.ok) set_weight_bytes(n);
  napi_value r;
  napi_get_boolean(env, a.ok && decode_resident(), &r);
  return r;
}

napi_value ReadBandwidth(napi_env env, napi_callback_info info) {
  Args a(env, info, "readBandwidth");
  const i64 bytes = a.count(0, "bytes"), reps = a.count(1, "reps");
  if (!a.ok) return nullptr;
  napi_value r;
  napi_create_double(env, read_bandwidth(bytes, (int)(reps > 0 ? reps : 1)), &r);
  return r;
}

// adviseHugePages(typedArray): ask Linux to back the array's memory with 2 MiB pages
// (THP in "madvise" mode). Streaming a weight that spans thousands of 4 KiB pages costs a
// TLB miss per page, which under a hypervisor (nested paging) is expensive. Best called
// on a fresh, not yet written array. Returns true if the advice was taken.
napi_value AdviseHugePages(napi_env env, napi_callback_info info) {
  Args a(env, info, "adviseHugePages");
  bool ok = false;
  bool is = false;
  if (a.n >= 1 && napi_is_typedarray(env, a.v[0], &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t len, off;
    void* data = nullptr;
    napi_value ab;
    napi_get_typedarray_info(env, a.v[0], &type, &len, &data, &ab, &off);
    void* base = nullptr;
    size_t bytes = 0;
    napi_get_arraybuffer_info(env, ab, &base, &bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const std::uintptr_t huge = 2u << 20;
    const std::uintptr_t lo = ((std::uintptr_t)base + huge - 1) & ~(huge - 1);
    const std::uintptr_t hi = ((std::uintptr_t)base + bytes) & ~(huge - 1);
    if (base && hi > lo) ok = madvise((void*)lo, hi - lo, MADV_HUGEPAGE) == 0;
#endif
  }
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

// quantize(out, w, type): every row of the weight
// quantised to the block dtype code `type`, row after row into out (Uint8Array).
napi_value Quantize(napi_env env, napi_callback_info info) {
  Args a(env, info, "quantize");
  size_t lo;
  std::uint8_t* out = static_cast<std::uint8_t*>(a.typed(0, napi_uint8_array, &lo, "out"));
  const WView w = a.handle(1);
  const i64 type = a.count(2, "type");
  if (a.ok && (type >= DT_COUNT || FORMATS[type].blockElems <= 1))
    a.fail("type " + std::to_string(type) + " is not a block format code", true);
  if (a.ok && w.cols % FORMATS[type].blockElems != 0)
    a.fail(std::string(FORMATS[type].name) + " needs cols to be a multiple of " +
               std::to_string(FORMATS[type].blockElems) + ", got " + std::to_string(w.cols),
           true);
  if (a.ok) a.need(lo, (double)w.rows * (double)(w.cols / FORMATS[type].blockElems) * FORMATS[type].blockBytes, "out");
  if (a.ok) op_quantize(out, w, (int)type);
  return nullptr;
}

// sampleBatch(logits, V, rows, params, hist, histOff, masks, outIds, outDrew, outLp, outTopIds,
// outTopLp, maxTop): see Kernels.sampleBatch and native.ts, which packs the rows. Row r reads
// logits row rows[r] and params[r·10 …] = temperature, topK, topP, minP, repetition,
// frequency, presence, vocab, u, logprobs; its penalty history is hist[histOff[r] …
// histOff[r+1]), its mask masks[r] (Int32Array or Uint32Array, or null); it writes outIds[r],
// outDrew[r], outLp[r] and maxTop alternatives at outTopIds / outTopLp[r·maxTop …].
napi_value SampleBatch(napi_env env, napi_callback_info info) {
  Args a(env, info, "sampleBatch");
  size_t nl, nr, np, nh, nho, noi, nod, nol, nti, ntl;
  const float* logits = a.f32(0, &nl, "logits");
  const i64 V = a.count(1, "V");
  const std::int32_t* rows = a.i32(2, &nr, "rows");
  const double* params = static_cast<const double*>(a.typed(3, napi_float64_array, &np, "params"));
  const std::int32_t* hist = a.i32(4, &nh, "hist");
  const std::int32_t* histOff = a.i32(5, &nho, "histOff");
  std::int32_t* outIds = a.i32(7, &noi, "outIds");
  std::uint8_t* outDrew = static_cast<std::uint8_t*>(a.typed(8, napi_uint8_array, &nod, "outDrew"));
  float* outLp = a.f32(9, &nol, "outLp");
  std::int32_t* outTopIds = a.i32(10, &nti, "outTopIds");
  float* outTopLp = a.f32(11, &ntl, "outTopLp");
  const i64 maxTop = a.count(12, "maxTop");
  if (!a.ok) return nullptr;
  const i64 R = (i64)nr;
  if (V < 1) a.fail("V must be positive", true);
  a.need(np, (double)R * 10, "params");
  a.need(nho, (double)R + 1, "histOff");
  a.need(noi, (double)R, "outIds");
  a.need(nod, (double)R, "outDrew");
  a.need(nol, (double)R, "outLp");
  a.need(nti, (double)R * maxTop, "outTopIds");
  a.need(ntl, (double)R * maxTop, "outTopLp");
  bool isArr = false;
  if (a.ok && (a.n < 7 || napi_is_array(env, a.v[6], &isArr) != napi_ok || !isArr)) a.fail("masks must be an array");
  uint32_t nm = 0;
  if (a.ok) napi_get_array_length(env, a.v[6], &nm);
  if (a.ok && (i64)nm < R) a.fail("masks is too short", true);
  if (!a.ok) return nullptr;
  std::vector<SampleRowArgs> args((std::size_t)R);
  const i64 nRows = (i64)(nl / (size_t)V);
  for (i64 r = 0; r < R && a.ok; r++) {
    SampleRowArgs& s = args[(std::size_t)r];
    const double* q = params + r * 10;
    const std::string at = "row " + std::to_string(r) + ": ";
    if (rows[r] < 0 || rows[r] >= nRows) {
      a.fail(at + "logits row " + std::to_string(rows[r]) + " is outside the " + std::to_string(nRows) + " rows", true);
      break;
    }
    s.logits = logits + (i64)rows[r] * V;
    s.temperature = q[0];
    s.topP = q[2];
    s.minP = q[3];
    s.rep = q[4];
    s.freq = q[5];
    s.pres = q[6];
    s.u = q[8];
    const bool ok = q[0] >= 0 && std::isfinite(q[0]) && q[1] >= 0 && q[1] <= 9007199254740991.0 && std::floor(q[1]) == q[1] &&
                    q[2] > 0 && q[2] <= 1 && q[3] >= 0 && q[3] <= 1 && q[4] > 0 && std::isfinite(q[4]) &&
                    std::isfinite(q[5]) && std::isfinite(q[6]) && q[7] >= 1 && q[8] >= 0 && q[8] < 1 &&
                    q[9] >= -1 && q[9] <= (double)maxTop && std::floor(q[9]) == q[9];
    if (!ok) {
      a.fail(at + "a parameter is out of range", true);
      break;
    }
    s.topK = (i64)q[1];
    s.vocab = q[7] >= (double)V ? V : (i64)q[7];
    s.logprobs = (i64)q[9];
    const i64 h0 = histOff[r], h1 = histOff[r + 1];
    if (h0 < 0 || h1 < h0 || (size_t)h1 > nh) {
      a.fail(at + "histOff is out of range", true);
      break;
    }
    s.hist = hist + h0;
    s.nHist = h1 - h0;
    for (i64 j = 0; j < s.nHist; j++)
      if (s.hist[j] < 0 || s.hist[j] >= V) {
        a.fail(at + "history id " + std::to_string(s.hist[j]) + " is not below " + std::to_string(V), true);
        break;
      }
    napi_value m;
    napi_get_element(env, a.v[6], (uint32_t)r, &m);
    s.mask = nullptr;
    s.maskWords = 0;
    if (a.ok && !a.nullish(m)) {
      bool isTyped = false;
      napi_typedarray_type type;
      size_t len = 0, off;
      void* data = nullptr;
      napi_value ab;
      if (napi_is_typedarray(env, m, &isTyped) == napi_ok && isTyped)
        napi_get_typedarray_info(env, m, &type, &len, &data, &ab, &off);
      if (!isTyped || (type != napi_int32_array && type != napi_uint32_array)) {
        a.fail(at + "a mask must be an Int32Array or a Uint32Array");
        break;
      }
      static const std::uint32_t none = 0;
      s.mask = data ? static_cast<const std::uint32_t*>(data) : &none;
      s.maskWords = (i64)len;
    }
    s.outId = outIds + r;
    s.outDrew = outDrew + r;
    s.outLp = outLp + r;
    s.outTopIds = outTopIds + r * maxTop;
    s.outTopLp = outTopLp + r * maxTop;
  }
  if (a.ok && R > 0) op_sample_rows(args.data(), R, V);
  return nullptr;
}

// jsMath(fn, x, out): out[i] = V8's Math.exp (0), Math.log (1), Math.log2 (2) of x[i] as the
// sampler computes them, or (3) exp through the level's vectorised exp_sum (x <= 0). For tests.
napi_value JsMath(napi_env env, napi_callback_info info) {
  Args a(env, info, "jsMath");
  size_t nx, no;
  const i64 fn = a.count(0, "fn");
  const double* x = static_cast<const double*>(a.typed(1, napi_float64_array, &nx, "x"));
  double* out = static_cast<double*>(a.typed(2, napi_float64_array, &no, "out"));
  if (a.ok && fn > 3) a.fail("fn must be 0, 1, 2 or 3", true);
  a.need(no, (double)nx, "out");
  if (a.ok) op_js_math((int)fn, x, out, (i64)nx);
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback cb;
  } fns[] = {
      {"matmul", Matmul},         {"matmulT", MatmulT},
      {"matmulHeads", MatmulHeads}, {"matmulTHeads", MatmulTHeads},       {"embedding", Embedding},
      {"rmsNorm", RmsNorm},       {"rope", Rope},             {"softmax", Softmax},
      {"siluMul", SiluMul},       {"add", Add},               {"attnLatent", AttnLatent},
      {"attention", Attention},   {"moeRoute", MoeRoute},     {"gatherRows", GatherRows},
      {"scatterAddRows", ScatterAddRows}, {"argmax", Argmax}, {"f8NanFree", F8NanFree}, {"ffnExperts", FfnExperts}, {"setThreads", SetThreads}, {"getThreads", GetThreads},
      {"level", Level},           {"levels", Levels},         {"setLevel", SetLevel},
      {"cpuFeatures", Features},  {"readBandwidth", ReadBandwidth}, {"setWeightBytes", SetWeightBytes}, {"adviseHugePages", AdviseHugePages},
      {"mapFile", MapFile}, {"mapSize", MapSize}, {"mapView", MapView},
      {"quantize", Quantize}, {"weight", Weight},
      {"sampleBatch", SampleBatch}, {"jsMath", JsMath},
  };
  for (auto& f : fns) {
    napi_value fn;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn);
    napi_set_named_property(env, exports, f.name, fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
