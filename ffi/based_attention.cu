// Based causal linear attention (2nd-order Taylor feature map) for H100/H200, behind the XLA FFI.
//
// Computes, per (batch b, head h), with phi(x) = [1, x/2, vec(x x^T)/(4 sqrt 2)] (273 features):
//   num_i = phi(q_i).kv0 + sum_{j<=i} (phi(q_i).phi(k_j)) v_j      phi(q).phi(k) = 1 + s + s^2/2, s = q.k/4
//   den_i = phi(q_i).ks0 + sum_{j<=i}  phi(q_i).phi(k_j)
//   out_i = num_i / (den_i + eps) if normalize else num_i
//   kv    = kv0 + sum_j phi(k_j) v_j^T   [273, Dv] fp32,   ks = ks0 + sum_j phi(k_j)   [273] fp32
// Inputs are token-major and read in place: q, k [B, L, H, 16] bf16, v [B, L, H, Dv] bf16; out [B, L, H, Dv]
// bf16. Any leading dims before [L, H, .] are folded into B (this is how jax.vmap reaches us).
//
// Tensor-core instruction: mma.sync.m16n8k16 (bf16 in, fp32 accumulate), not wgmma. Why: the kernel keeps the
// recurrent state in registers as mma accumulators and reuses those accumulators directly as the A operand of
// the next chunk's phi(Q) S product (the m16n8 C-fragment layout is the m16k16 A-fragment layout), and it
// builds the Taylor-expanded operands phi(Q), phi(K) in registers from 16-wide q/k fragments with packed bf16
// multiplies. That needs per-thread control of fragment layouts that mma.sync documents exactly; a wgmma
// version would need the expanded operands staged in swizzled shared memory. mma.sync was the version we could
// make correct without a GPU on the development machine; wgmma is the next step for the large-batch regime.
//
// Algorithm (transposed so that everything stays in registers):
//   * The state is kept transposed, S^T [Dv', 288] fp32: rows are value columns n (Dv' = a group of GV value
//     columns + one row of ones whose state is k_state + zero padding to a multiple of 16), columns are 288
//     padded features: tiles a = 0..15 hold k_a k_b (b = 0..15), tile 16 holds k_b, tile 17 holds the
//     constant 1 at b = 0 (b > 0 is padding). Internally features are unscaled (kv_internal = kv_phi * 4 sqrt 2,
//     * 2, * 1 for the three orders); the 1/32 and 1/4 weights are applied on the q side.
//   * Per 64-token chunk: O^T [Dv', 64] = S^T . phi(Q)^T (inter-chunk, old state) + V^T . A'^T (intra-chunk,
//     A' = causal (1 + s + s^2/2) in bf16), then S^T += V^T . phi(K). Row Gv of O^T is the denominator.
//   * A CTA has MT x 2 warps: warp (m, fh) owns rows [16m, 16m+16) of S^T and half fh of the 18 feature tiles,
//     i.e. 18 accumulator tiles = 72 fp32 registers. The two halves' partial O^T are summed in shared memory.
//   * Value columns are split into groups of GV (64 for Dv % 64 == 0, 56 for Dv % 56 == 0, e.g. 112) so that
//     the state fits in registers; each group is an independent CTA.
//   * Sequence parallelism: when B*H*groups does not fill the GPU, the sequence is split into NS segments.
//     Pass 1 (kOut = false) sums each segment's phi(K)^T V into scratch; pass 2 (kOut = true) starts each
//     segment from the initial state plus the sum of the earlier segments' partial states (read from L2) and
//     writes outputs; the last segment writes the final state.
//   * Loads: cp.async 16-byte copies, double-buffered one chunk ahead; tokens past L are zero-filled (their v
//     and ones entries are zero, so they add nothing to any state) and their outputs are not stored.
//   * All global offsets are int64.
//
// Measured on one H200 (jax 0.11.2, CUPTI median of 20 calls; benchmarks/results/ffi.json), L=8192, H=16, Dv=64,
// normalize=True: B=1 0.150 ms, B=4 0.444 ms, B=16 1.257 ms, B=64 4.98 ms, B=256 19.7 ms (about 136 TFLOP/s
// counted at 80,128 FLOP per token and head). That is ~9.5k cycles per 64-token chunk per CTA for ~1.6k
// m16n8k16 MMAs, so the kernel is latency/issue-bound, not tensor-bound: only 10 warps per SM (the 72-register
// state caps a 10-warp CTA at 168 registers), the phi(Q)/phi(K) operands are rebuilt by every row warp
// (HMUL2/SHFL/LDS per MMA), and for Dv=64 one of the five row tiles carries only the ones row (25% extra MMA).
// Next steps: build phi(Q)^T and phi(K) once per chunk in shared memory for all row warps and move the two big
// products to wgmma; compute the denominator outside the padded row tile; chain the segment prefix in one pass.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include "ffi_common.cuh"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace based_attention {

using based_ffi::aligned16;
using based_ffi::bind_qkv;

constexpr int kChunk = 64;         // tokens per chunk
constexpr int kFeat = 16;          // q/k feature dim
constexpr int kPhi = 273;          // expanded features
constexpr int kHalfTiles = 9;      // feature tiles per warp
constexpr int kAccTiles = 18;      // n8 accumulator tiles per warp (kHalfTiles * 2)
constexpr int kQKStride = 24;      // bf16 elements per q/k smem row (48 B: conflict-free ldmatrix)
constexpr int kAStride = 72;       // bf16 elements per A' smem row (144 B)
constexpr int kQbStride = 17;      // u32 per broadcast-q row
constexpr float kSqrt32 = 5.656854249492380195f;  // 4 sqrt 2

struct Params {
  const __nv_bfloat16* q;  // [B, L, H, 16]
  const __nv_bfloat16* k;  // [B, L, H, 16]
  const __nv_bfloat16* v;  // [B, L, H, Dv]
  const float* kv0;        // [B, H, 273, Dv] or null
  const float* ks0;        // [B, H, 273] or null
  __nv_bfloat16* out;      // [B, L, H, Dv]
  float* kv;               // [B, H, 273, Dv]
  float* ks;               // [B, H, 273]
  float* scratch;          // [B*H*G, NS-1, warps, 72, 32] partial segment states
  int64_t L, H, Dv;
  int G;          // value-column groups
  int NS;         // sequence segments
  int cps;        // chunks per segment
  int nchunks;    // ceil(L / 64)
  int normalize;
  float eps;
};

template <int MT, int GV>
struct Cfg {
  static constexpr int kWarps = 2 * MT;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRows = 16 * MT;          // rows of S^T (value columns + ones + padding)
  static constexpr int kVStride = kRows + 8;      // bf16 per V smem row
  static constexpr int kOStride = kRows + 4;      // f32 per O smem row
  static_assert(GV % 8 == 0 && GV < kRows && GV + 16 >= kRows, "GV must leave room for the ones row");
  // Shared memory layout (bytes).
  static constexpr int kQBytes = kChunk * kQKStride * 2;
  static constexpr int kVBytes = kChunk * kVStride * 2;
  static constexpr int kOffQ = 0;
  static constexpr int kOffK = kOffQ + 2 * kQBytes;
  static constexpr int kOffV = kOffK + 2 * kQBytes;
  static constexpr int kOffA = kOffV + 2 * kVBytes;
  static constexpr int kOffQb = kOffA + kChunk * kAStride * 2;
  static constexpr int kOffO = kOffQb + kChunk * kQbStride * 4;
  static constexpr int kSmem = kOffO + 2 * kChunk * kOStride * 4;
  static_assert(kOffV % 16 == 0 && kOffA % 16 == 0 && kOffQb % 16 == 0 && kOffO % 16 == 0 &&
                (kOStride * 4) % 16 == 0 && (kVStride * 2) % 16 == 0, "16-byte aligned smem rows");
  static constexpr int64_t kStateFloats = int64_t(kWarps) * kAccTiles * 4 * 32;  // per (bhg, segment)
};

// ---------------------------------------------------------------------------------------------------------
// PTX helpers.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

// d += a . b for one m16n8k16 tile (a row-major 16x16, b col-major 16x8), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 x = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&x);
}
__device__ __forceinline__ uint32_t mul_bf16x2(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
  return *reinterpret_cast<uint32_t*>(&x);
}

constexpr uint32_t kBf16One = 0x3F80u;                 // 1.0 in the low half
constexpr uint32_t kBf16OneOne = 0x3F803F80u;          // (1.0, 1.0)
constexpr uint32_t kBf16QuarterQuarter = 0x3E803E80u;  // (0.25, 0.25)

// Internal feature p = 16 a + b  ->  phi index and internal/phi scale; returns -1 for padding.
__device__ __forceinline__ int phi_index(int a, int b, float* scale) {
  if (a < 16) {
    *scale = kSqrt32;
    return 17 + 16 * a + b;
  }
  if (a == 16) {
    *scale = 2.f;
    return 1 + b;
  }
  *scale = 1.f;
  return b == 0 ? 0 : -1;
}

// Where accumulator element st[j][r] of lane `lane` in warp (m, fh) lives: its S^T row n (value column, GV =
// ones row) and its phi index and scale (-1 for padding features).
__device__ __forceinline__ int state_coord(int fh, int m, int lane, int j, int r, int* n, float* scale) {
  const int nt = kAccTiles * fh + j;  // n8 feature tile 0..35
  *n = 16 * m + (lane >> 2) + 8 * (r >> 1);
  return phi_index(nt >> 1, 8 * (nt & 1) + 2 * (lane & 3) + (r & 1), scale);
}

// ---------------------------------------------------------------------------------------------------------
// Per-warp work on one chunk. FH selects the warp's half of the feature tiles (compile time, so that every
// register array index is a constant).
template <int MT, int GV, bool kOut, int FH>
__device__ __forceinline__ void warp_chunk(float (&st)[kAccTiles][4], float (&o)[8][4], const __nv_bfloat16* Qs,
                                           const __nv_bfloat16* Ks, const __nv_bfloat16* Vs,
                                           const __nv_bfloat16* As, const uint32_t* Qb, int m, int lane) {
  using C = Cfg<MT, GV>;
  const int g = lane >> 2, c = lane & 3, l8 = lane & 7, mi = lane >> 3;
  if constexpr (kOut) {
    // ---- inter-chunk: O^T += S^T (old state, bf16) . phi(Q)^T
    uint32_t qr[8][2];  // q fragments in the B layout (k = feature b, n = token)
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      uint32_t r[4];
      ldsm_x4(r, Qs + (16 * p + (mi >> 1) * 8 + l8) * kQKStride + (mi & 1) * 8);
      qr[2 * p][0] = r[0];
      qr[2 * p][1] = r[1];
      qr[2 * p + 1][0] = r[2];
      qr[2 * p + 1][1] = r[3];
    }
#pragma unroll
    for (int la = 0; la < kHalfTiles; ++la) {
      const int a = FH * kHalfTiles + la;
      uint32_t af[4] = {pack_bf16(st[2 * la][0], st[2 * la][1]), pack_bf16(st[2 * la][2], st[2 * la][3]),
                        pack_bf16(st[2 * la + 1][0], st[2 * la + 1][1]),
                        pack_bf16(st[2 * la + 1][2], st[2 * la + 1][3])};
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        uint32_t b0, b1;
        if (a < 16) {
          const uint32_t ql = Qb[(8 * it + g) * kQbStride + a];  // (q_a/32, q_a/32) of token 8 it + g
          b0 = mul_bf16x2(qr[it][0], ql);
          b1 = mul_bf16x2(qr[it][1], ql);
        } else if (a == 16) {
          b0 = mul_bf16x2(qr[it][0], kBf16QuarterQuarter);
          b1 = mul_bf16x2(qr[it][1], kBf16QuarterQuarter);
        } else {
          b0 = c == 0 ? kBf16One : 0u;
          b1 = 0u;
        }
        mma(o[it], af, b0, b1);
      }
    }
  }
  // ---- intra-chunk (O^T += V^T . A'^T) and state update (S^T += V^T . phi(K)), per 16-token step.
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t vf[4];
    ldsm_x4_t(vf, Vs + (16 * ks + (mi >> 1) * 8 + l8) * C::kVStride + 16 * m + (mi & 1) * 8);
    if constexpr (kOut) {
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        const bool mine = ((it >= 4 && it <= 6) ? 1 : 0) == FH;
        if (mine && ks <= it / 2) {
          uint32_t ab[2];
          const int ll = lane & 15;
          ldsm_x2(ab, As + (8 * it + (ll & 7)) * kAStride + 16 * ks + (ll >> 3) * 8);
          mma(o[it], vf, ab[0], ab[1]);
        }
      }
    }
    uint32_t kf[4];
    ldsm_x4_t(kf, Ks + (16 * ks + (mi & 1) * 8 + l8) * kQKStride + (mi >> 1) * 8);
#pragma unroll
    for (int la = 0; la < kHalfTiles; ++la) {
      const int a = FH * kHalfTiles + la;
      if (a < 16) {
        const int src = (a & 7) * 4 + c;
        const uint32_t kl0 = __shfl_sync(0xffffffffu, a < 8 ? kf[0] : kf[2], src);  // k_a at t = 2c, 2c+1
        const uint32_t kl1 = __shfl_sync(0xffffffffu, a < 8 ? kf[1] : kf[3], src);  // t = 2c+8, 2c+9
        mma(st[2 * la], vf, mul_bf16x2(kf[0], kl0), mul_bf16x2(kf[1], kl1));
        mma(st[2 * la + 1], vf, mul_bf16x2(kf[2], kl0), mul_bf16x2(kf[3], kl1));
      } else if (a == 16) {
        mma(st[2 * la], vf, kf[0], kf[1]);
        mma(st[2 * la + 1], vf, kf[2], kf[3]);
      } else {
        const uint32_t one = g == 0 ? kBf16OneOne : 0u;
        mma(st[2 * la], vf, one, one);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
template <int MT, int GV, bool kOut>
__global__ void __launch_bounds__(Cfg<MT, GV>::kThreads, 1) based_kernel(const Params p) {
  using C = Cfg<MT, GV>;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem + C::kOffQ);
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem + C::kOffK);
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(smem + C::kOffV);
  __nv_bfloat16* As = reinterpret_cast<__nv_bfloat16*>(smem + C::kOffA);
  uint32_t* Qb = reinterpret_cast<uint32_t*>(smem + C::kOffQb);
  float* Ob = reinterpret_cast<float*>(smem + C::kOffO);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m = warp >> 1, fh = warp & 1;
  const int g = lane >> 2, c = lane & 3;
  const int64_t bhg = blockIdx.x;
  const int seg = blockIdx.y;
  const int grp = static_cast<int>(bhg % p.G);
  const int64_t bh = bhg / p.G;
  const int64_t h = bh % p.H, b = bh / p.H;
  const int c0 = seg * p.cps;
  const int c1 = min(c0 + p.cps, p.nchunks);
  const int64_t col0 = int64_t(grp) * GV;

  // ---- initial state (internal scaling) + earlier segments' partial states.
  float st[kAccTiles][4];
#pragma unroll
  for (int j = 0; j < kAccTiles; ++j) {
#pragma unroll
    for (int r = 0; r < 4; ++r) st[j][r] = 0.f;
  }
  if constexpr (kOut) {
    if (p.kv0 != nullptr) {
#pragma unroll
      for (int j = 0; j < kAccTiles; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          int n;
          float scale;
          const int phi = state_coord(fh, m, lane, j, r, &n, &scale);
          float x = 0.f;
          if (phi >= 0 && n < GV) {
            x = p.kv0[(bh * kPhi + phi) * p.Dv + col0 + n] * scale;
          } else if (phi >= 0 && n == GV) {
            x = p.ks0[bh * kPhi + phi] * scale;
          }
          st[j][r] = x;
        }
      }
    }
    for (int s = 0; s < seg; ++s) {
      const float* src = p.scratch + (bhg * (p.NS - 1) + s) * C::kStateFloats + int64_t(warp) * kAccTiles * 4 * 32;
#pragma unroll
      for (int j = 0; j < kAccTiles; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) st[j][r] += __ldcg(src + (j * 4 + r) * 32 + lane);
      }
    }
  }
  float o[8][4];

  // ---- chunk loads (cp.async, 16 B): q, k rows of 32 B, v rows of GV*2 B. Tokens past L are zero-filled.
  constexpr int kQKUnits = (kOut ? 2 : 1) * kChunk * 2;  // (q and) k: 2 units per row
  constexpr int kVUnitsRow = GV / 8;
  constexpr int kVUnits = kChunk * kVUnitsRow;
  constexpr int kExtra = C::kRows - GV;  // S^T rows past the value columns: the ones row, then zeros
  auto issue_load = [&](int chunk, int buf) {
    const int64_t t0 = int64_t(chunk) * kChunk;
    for (int u = tid; u < kQKUnits; u += C::kThreads) {
      const bool is_k = !kOut || u >= 2 * kChunk;
      const int uu = kOut && is_k ? u - 2 * kChunk : u;
      const int row = uu >> 1, part = uu & 1;
      const int64_t tok = t0 + row;
      __nv_bfloat16* dst = (is_k ? Ks : Qs) + (buf * kChunk + row) * kQKStride + part * 8;
      if (tok < p.L) {
        cp_async16(dst, (is_k ? p.k : p.q) + ((b * p.L + tok) * p.H + h) * kFeat + part * 8);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    }
    const __nv_bfloat16* vsrc = p.v + ((b * p.L + t0) * p.H + h) * p.Dv + col0;  // [64 rows, stride H*Dv]
    const int64_t vrow = p.H * p.Dv;
    for (int u = tid; u < kVUnits; u += C::kThreads) {
      const int row = u / kVUnitsRow, part = u % kVUnitsRow;
      __nv_bfloat16* dst = Vs + (buf * kChunk + row) * C::kVStride + part * 8;
      if (t0 + row < p.L) {
        cp_async16(dst, vsrc + row * vrow + part * 8);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    }
    if (t0 + kChunk > p.L) {  // the last, partial chunk: padded tokens get no ones entry either
      for (int u = tid; u < kChunk * kExtra; u += C::kThreads) {
        const int row = u / kExtra;
        if (t0 + row >= p.L) Vs[(buf * kChunk + row) * C::kVStride + GV + u % kExtra] = __float2bfloat16(0.f);
      }
    }
    cp_async_commit();
  };

  // ---- normalise and store one chunk's outputs from the two partial O tiles (8 columns per step).
  auto store_outputs = [&](int chunk) {
    const int64_t t0 = int64_t(chunk) * kChunk;
    const int64_t rem = p.L - t0;
    const int valid = rem < kChunk ? static_cast<int>(rem) : kChunk;
    constexpr int kGroups8 = GV / 8;
    for (int u = tid; u < kChunk * kGroups8; u += C::kThreads) {
      const int t = u / kGroups8, q8 = u % kGroups8;
      if (t >= valid) break;
      const float* o0 = Ob + t * C::kOStride;
      const float* o1 = Ob + (kChunk + t) * C::kOStride;
      const float4 a0 = *reinterpret_cast<const float4*>(o0 + 8 * q8);
      const float4 a1 = *reinterpret_cast<const float4*>(o0 + 8 * q8 + 4);
      const float4 b0 = *reinterpret_cast<const float4*>(o1 + 8 * q8);
      const float4 b1 = *reinterpret_cast<const float4*>(o1 + 8 * q8 + 4);
      float y[8] = {a0.x + b0.x, a0.y + b0.y, a0.z + b0.z, a0.w + b0.w,
                    a1.x + b1.x, a1.y + b1.y, a1.z + b1.z, a1.w + b1.w};
      if (p.normalize) {
        const float inv = 1.f / (o0[GV] + o1[GV] + p.eps);
#pragma unroll
        for (int e = 0; e < 8; ++e) y[e] *= inv;
      }
      const uint4 packed = make_uint4(pack_bf16(y[0], y[1]), pack_bf16(y[2], y[3]), pack_bf16(y[4], y[5]),
                                      pack_bf16(y[6], y[7]));
      *reinterpret_cast<uint4*>(p.out + ((b * p.L + t0 + t) * p.H + h) * p.Dv + col0 + 8 * q8) = packed;
    }
  };

  // Rows past the value columns, in both buffers: 1 in the ones row (its state is k_state), 0 below it.
  for (int u = tid; u < 2 * kChunk * kExtra; u += C::kThreads) {
    const int row = u / kExtra, col = GV + u % kExtra;  // row runs over both buffers
    Vs[row * C::kVStride + col] = __float2bfloat16(col == GV ? 1.f : 0.f);
  }
  __syncthreads();  // before a partial first chunk zeroes some of these entries
  if (c0 < c1) issue_load(c0, 0);
  // Two barriers per chunk: S1 (chunk data landed; the previous chunk's readers and partial-O writers are
  // done), then S2 (A' and the broadcast q visible). The previous chunk's outputs are stored between them.
  for (int chunk = c0; chunk < c1; ++chunk) {
    const int buf = (chunk - c0) & 1;
    cp_async_wait_all();
    __syncthreads();  // S1
    if constexpr (kOut) {
      if (chunk > c0) store_outputs(chunk - 1);
    }
    if (chunk + 1 < c1) issue_load(chunk + 1, buf ^ 1);
    const __nv_bfloat16* Qc = Qs + buf * kChunk * kQKStride;
    const __nv_bfloat16* Kc = Ks + buf * kChunk * kQKStride;
    const __nv_bfloat16* Vc = Vs + buf * kChunk * C::kVStride;

    if constexpr (kOut) {
      // A' = causal (1 + s + s^2/2), s = q.k/4, in 16x16 blocks (i16 >= j16), spread over the warps.
      const int l8 = lane & 7, mi = lane >> 3;
      for (int blk = warp; blk < 10; blk += C::kWarps) {
        const int i16 = blk >= 6 ? 3 : blk >= 3 ? 2 : blk >= 1 ? 1 : 0;
        const int j16 = blk - i16 * (i16 + 1) / 2;
        uint32_t qa[4], kb[4];
        ldsm_x4(qa, Qc + (16 * i16 + (mi & 1) * 8 + l8) * kQKStride + (mi >> 1) * 8);
        ldsm_x4(kb, Kc + (16 * j16 + (mi >> 1) * 8 + l8) * kQKStride + (mi & 1) * 8);
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        mma(s[0], qa, kb[0], kb[1]);
        mma(s[1], qa, kb[2], kb[3]);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const int i = 16 * i16 + g + 8 * hr;
            float w[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int j = 16 * j16 + 8 * nt + 2 * c + e;
              const float x = 0.25f * s[nt][2 * hr + e];
              w[e] = j <= i ? 1.f + x + 0.5f * x * x : 0.f;
            }
            *reinterpret_cast<uint32_t*>(As + i * kAStride + 16 * j16 + 8 * nt + 2 * c) = pack_bf16(w[0], w[1]);
          }
        }
      }
      // Broadcast q_a / 32 pairs for the phi(Q) operand.
      for (int u = tid; u < kChunk * kFeat; u += C::kThreads) {
        const int row = u >> 4, a = u & 15;
        const __nv_bfloat16 x = __float2bfloat16(__bfloat162float(Qc[row * kQKStride + a]) * 0.03125f);
        __nv_bfloat162 xx = __halves2bfloat162(x, x);
        Qb[row * kQbStride + a] = *reinterpret_cast<uint32_t*>(&xx);
      }
      __syncthreads();  // S2
#pragma unroll
      for (int it = 0; it < 8; ++it) {
#pragma unroll
        for (int r = 0; r < 4; ++r) o[it][r] = 0.f;
      }
    }

    if (fh == 0) {
      warp_chunk<MT, GV, kOut, 0>(st, o, Qc, Kc, Vc, As, Qb, m, lane);
    } else {
      warp_chunk<MT, GV, kOut, 1>(st, o, Qc, Kc, Vc, As, Qb, m, lane);
    }

    if constexpr (kOut) {  // partial O^T of this warp's feature half -> Ob[fh][token][row]
      float* Of = Ob + fh * kChunk * C::kOStride;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int n = 16 * m + g + 8 * (r >> 1);
          const int i = 8 * it + 2 * c + (r & 1);
          Of[i * C::kOStride + n] = o[it][r];
        }
      }
    }
  }
  if constexpr (kOut) {
    if (c0 < c1) {
      __syncthreads();
      store_outputs(c1 - 1);
    }
  }

  // ---- write the state: partial segment sums (pass 1) or the final state (last segment of pass 2).
  if constexpr (!kOut) {
    float* dst = p.scratch + (bhg * (p.NS - 1) + seg) * C::kStateFloats + int64_t(warp) * kAccTiles * 4 * 32;
#pragma unroll
    for (int j = 0; j < kAccTiles; ++j) {
#pragma unroll
      for (int r = 0; r < 4; ++r) __stcg(dst + (j * 4 + r) * 32 + lane, st[j][r]);
    }
  } else {
    if (seg == p.NS - 1) {
#pragma unroll
      for (int j = 0; j < kAccTiles; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          int n;
          float scale;
          const int phi = state_coord(fh, m, lane, j, r, &n, &scale);
          if (phi < 0) continue;
          if (n < GV) {
            p.kv[(bh * kPhi + phi) * p.Dv + col0 + n] = st[j][r] / scale;
          } else if (n == GV && grp == 0) {
            p.ks[bh * kPhi + phi] = st[j][r] / scale;
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host side.
int num_sms() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) return 132;
  return n;
}

template <int MT, int GV>
ffi::Error launch(cudaStream_t stream, ffi::ScratchAllocator& scratch, Params p, int64_t batch) {
  using C = Cfg<MT, GV>;
  p.G = static_cast<int>(p.Dv / GV);
  p.nchunks = static_cast<int>((p.L + kChunk - 1) / kChunk);
  const int64_t base = batch * p.H * p.G;
  const int sms = num_sms();
  int ns = 1;
  if (base < sms) ns = static_cast<int>(std::min<int64_t>(p.nchunks, std::max<int64_t>(1, sms / base)));
  p.cps = (p.nchunks + ns - 1) / ns;
  p.NS = (p.nchunks + p.cps - 1) / p.cps;
  if (base > 0x7fffffffLL) return ffi::Error::InvalidArgument("based_attention: B*H*groups exceeds 2^31-1");
  p.scratch = nullptr;
  if (p.NS > 1) {
    const size_t bytes = size_t(base) * (p.NS - 1) * C::kStateFloats * sizeof(float);
    auto mem = scratch.Allocate(bytes, 16);  // XLA caps the alignment argument at 16
    if (!mem.has_value()) {
      return ffi::Error::Internal("based_attention: could not allocate " + std::to_string(bytes) +
                                  " bytes of scratch");
    }
    p.scratch = static_cast<float*>(*mem);
  }
  auto k_state = based_kernel<MT, GV, false>;
  auto k_out = based_kernel<MT, GV, true>;
  cudaFuncSetAttribute(k_state, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
  cudaFuncSetAttribute(k_out, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
  if (p.NS > 1) {
    k_state<<<dim3(static_cast<unsigned>(base), p.NS - 1), C::kThreads, C::kSmem, stream>>>(p);
  }
  k_out<<<dim3(static_cast<unsigned>(base), p.NS), C::kThreads, C::kSmem, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string("based_attention: CUDA launch failed: ") + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

ffi::Error forward(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                   ffi::AnyBuffer v, const ffi::AnyBuffer* kv0, const ffi::AnyBuffer* ks0, bool normalize,
                   float eps, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> kv,
                   ffi::Result<ffi::AnyBuffer> ks) {
  const auto qd = q.dimensions(), vd = v.dimensions();
  if (q.element_type() != ffi::BF16 || k.element_type() != ffi::BF16 || v.element_type() != ffi::BF16 ||
      out->element_type() != ffi::BF16) {
    return ffi::Error::InvalidArgument("based_attention: q, k, v and out must be bfloat16");
  }
  if (kv->element_type() != ffi::F32 || ks->element_type() != ffi::F32) {
    return ffi::Error::InvalidArgument("based_attention: kv and k_state outputs must be float32");
  }
  const size_t rank = qd.size();
  if (rank < 3 || vd.size() != rank || k.dimensions().size() != rank || qd[rank - 1] != kFeat) {
    return ffi::Error::InvalidArgument("based_attention: q, k must be [..., L, H, 16] and v [..., L, H, Dv]");
  }
  int64_t batch = 1;
  for (size_t i = 0; i + 3 < rank; ++i) batch *= qd[i];
  for (size_t i = 0; i + 1 < rank; ++i) {
    if (vd[i] != qd[i] || k.dimensions()[i] != qd[i]) {
      return ffi::Error::InvalidArgument("based_attention: q, k, v must share [..., L, H]");
    }
  }
  if (k.dimensions()[rank - 1] != kFeat) return ffi::Error::InvalidArgument("based_attention: k must end in 16");
  Params p{};
  p.L = qd[rank - 3];
  p.H = qd[rank - 2];
  p.Dv = vd[rank - 1];
  if (kv->element_count() != batch * p.H * kPhi * p.Dv || ks->element_count() != batch * p.H * kPhi ||
      out->element_count() != v.element_count()) {
    return ffi::Error::InvalidArgument("based_attention: output shapes do not match the inputs");
  }
  if (kv0 != nullptr) {
    if (kv0->element_type() != ffi::F32 || ks0->element_type() != ffi::F32 ||
        kv0->element_count() != kv->element_count() || ks0->element_count() != ks->element_count()) {
      return ffi::Error::InvalidArgument(
          "based_attention: initial state must be float32 kv [B, H, 273, Dv] and k_state [B, H, 273]");
    }
  }
  if (batch == 0 || p.L == 0 || p.H == 0) return ffi::Error::Success();
  p.q = static_cast<const __nv_bfloat16*>(q.untyped_data());
  p.k = static_cast<const __nv_bfloat16*>(k.untyped_data());
  p.v = static_cast<const __nv_bfloat16*>(v.untyped_data());
  p.kv0 = kv0 ? static_cast<const float*>(kv0->untyped_data()) : nullptr;
  p.ks0 = ks0 ? static_cast<const float*>(ks0->untyped_data()) : nullptr;
  p.out = static_cast<__nv_bfloat16*>(out->untyped_data());
  p.kv = static_cast<float*>(kv->untyped_data());
  p.ks = static_cast<float*>(ks->untyped_data());
  p.normalize = normalize ? 1 : 0;
  p.eps = eps;
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out)) {
    return ffi::Error::InvalidArgument("based_attention: q, k, v and out must be 16-byte aligned");
  }
  if (p.Dv % 64 == 0) return launch<5, 64>(stream, scratch, p, batch);
  if (p.Dv % 56 == 0) return launch<4, 56>(stream, scratch, p, batch);
  return ffi::Error::InvalidArgument("based_attention: Dv must be a multiple of 64 or 56 (64, 112, 128, ...); got " +
                                     std::to_string(p.Dv));
}

ffi::Error ForwardInit(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                       ffi::AnyBuffer v, ffi::AnyBuffer kv0, ffi::AnyBuffer ks0, bool normalize, float eps,
                       ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> kv,
                       ffi::Result<ffi::AnyBuffer> ks) {
  return forward(stream, std::move(scratch), q, k, v, &kv0, &ks0, normalize, eps, out, kv, ks);
}

ffi::Error ForwardNoInit(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                         ffi::AnyBuffer v, bool normalize, float eps, ffi::Result<ffi::AnyBuffer> out,
                         ffi::Result<ffi::AnyBuffer> kv, ffi::Result<ffi::AnyBuffer> ks) {
  return forward(stream, std::move(scratch), q, k, v, nullptr, nullptr, normalize, eps, out, kv, ks);
}

// Test entry: like ForwardInit, plus three inputs that XLA aliases to the outputs (input_output_aliases), so a
// test can fill the output buffers with NaN before the kernel runs and check that every element is written.
ffi::Error ForwardInto(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                       ffi::AnyBuffer v, ffi::AnyBuffer kv0, ffi::AnyBuffer ks0, ffi::AnyBuffer, ffi::AnyBuffer,
                       ffi::AnyBuffer, bool normalize, float eps, ffi::Result<ffi::AnyBuffer> out,
                       ffi::Result<ffi::AnyBuffer> kv, ffi::Result<ffi::AnyBuffer> ks) {
  return forward(stream, std::move(scratch), q, k, v, &kv0, &ks0, normalize, eps, out, kv, ks);
}

}  // namespace based_attention

namespace based_attention {

// Attributes and the three results: the end of every handler's binding.
template <typename Binding>
auto attrs_and_results(Binding binding) {
  return std::move(binding)
      .template Attr<bool>("normalize")
      .template Attr<float>("eps")
      .template Ret<ffi::AnyBuffer>()   // out [..., L, H, Dv] bf16
      .template Ret<ffi::AnyBuffer>()   // kv [..., H, 273, Dv] f32
      .template Ret<ffi::AnyBuffer>();  // k_state [..., H, 273] f32
}

}  // namespace based_attention

// q, k, v -> out, kv, k_state (zero initial state).
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionFwd, based_attention::ForwardNoInit,
                              based_attention::attrs_and_results(based_attention::bind_qkv()));

// q, k, v, kv0 [..., H, 273, Dv] f32, ks0 [..., H, 273] f32 -> out, kv, k_state.
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionFwdInit, based_attention::ForwardInit,
                              based_attention::attrs_and_results(
                                  based_attention::bind_qkv().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()));

// q, k, v, kv0, ks0, out_buffer, kv_buffer, ks_buffer -> out, kv, k_state (aliased to the last three inputs).
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionFwdInto, based_attention::ForwardInto,
                              based_attention::attrs_and_results(based_attention::bind_qkv()
                                                                     .Arg<ffi::AnyBuffer>()
                                                                     .Arg<ffi::AnyBuffer>()
                                                                     .Arg<ffi::AnyBuffer>()
                                                                     .Arg<ffi::AnyBuffer>()
                                                                     .Arg<ffi::AnyBuffer>()));
