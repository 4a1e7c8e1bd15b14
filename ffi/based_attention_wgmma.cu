// Based causal linear attention for H100/H200 on wgmma (sm_90a), behind the XLA FFI: the second kernel of
// libbased_attention.so, selected from Python with ffi.linear_attention(..., kernel="wgmma").
//
// Same function as based_attention.cu (see its header for the math); this one follows the design of the Pallas
// Mosaic-GPU kernel (pallas_kernels/based_attention/kernel.py), which meets the speed targets on the H200:
//   * Symmetric features psi (161 live of 192 rows, 3 groups of 64) instead of the 273 phi features:
//       rows 16 d + a, d = 0..8: x_a x_{(a+d)%16} times 1/4 (queries) or 1/4, 1/8 for d = 0, 8 (keys);
//       rows 144 + b: x_b / 2; row 160: 1; rows 161..191: 0.    psi_q(q).psi_k(k) = phi(q).phi(k).
//     The state is kept as S = sum psi_k(k_t) [v_t, 1, 0...]^T, i.e. [192, GV + 8] per value-column group;
//     column GV is the key sum (the denominator's state), the other 7 extra columns are zero. The Python side
//     converts initial/final states between this layout and the 273-feature layout (ffi/psi_layout.py).
//   * One CTA = one warpgroup (128 threads) per (batch, head, value-column group, sequence segment). It walks
//     its segment in 64-token chunks. The state S lives in registers as three m64n(GV+8) wgmma accumulators
//     (3 x 36 fp32 per thread for GV = 64).
//   * Per chunk (every product is one or more wgmma.mma_async with both operands in shared memory):
//       psi_q(Q) [64, 192]  = (Q M_i) * (Q M_j) elementwise: 5 m64n64k16 products with constant 0 / power-of-two
//                             matrices (exact in fp32), one bf16 rounding, stored to smem (once per chunk, for
//                             the whole warpgroup: no per-warp rebuild).
//       P [64, 64]          = causal(1 + s + s^2/2), s = Q K^T / 4 (one m64n64k16).
//       O [64, GV + 8]      = psi_q(Q) bf16(S) + P [V, 1, 0]: 12 + 4 wgmmas; column GV is the denominator.
//       psi_k(K)^T [192,64] = (M_i^T K^T) * (M_j^T K^T): the same constant matrices as the A operand, so the
//                             transposed keys come out of the tensor cores directly (no smem transpose).
//       S_g += psi_k(K)^T_g [V, 1, 0]: 3 x 4 wgmmas into the state accumulators.
//       bf16(S)^T is written to smem for the next chunk's output product.
//   * Every smem operand is K-major with a 32-byte swizzle in (8 rows x 16 bf16) atoms of 256 bytes (the layout
//     that Mosaic GPU uses for K = 16 operands): descriptor LBO unused, SBO = 256 (atoms of consecutive rows are
//     contiguous), and the next 16-wide K slice starts `mn_atoms` atoms further on.
//   * Loads: cp.async 16-byte copies one chunk ahead (double-buffered): q, k straight into their swizzled
//     operand tiles, v into a padded row-major stage that ldmatrix.trans turns into [V, 1, 0]^T (K-major B).
//     Tokens past L are zero-filled and get 0 in the ones column, so they add nothing to any state.
//   * Sequence split (small batches): pass 1 (kOut = false) computes segments' partial states into scratch,
//     a prefix kernel turns them (plus the initial state) into each segment's starting state, pass 2 writes
//     the outputs and, in the last segment, the final state.
//   * All global offsets are int64.
//   * Per chunk (pass 2): 2 barriers for the loads and [V, 1, 0]^T, psi_q in 3 tensor-core waits (Q K^T joins
//     the last), a barrier, the output product (1 wait), the k side's first products under the output stores,
//     a barrier, psi_k^T in 2 more waits, a barrier, the state update (1 wait). About 246 registers per thread,
//     ~109 KiB of shared memory per CTA: two CTAs per SM.
//   * The FFI attribute register_operands (kernel="wgmma" in Python; "wgmma_smem" sets it false) feeds P and
//     psi_k(K)^T to the wgmmas from registers (A fragments packed from the fp32 products) instead of shared
//     memory: no psi_k^T / P stores and two barriers less per chunk, like the Pallas kernel's
//     operand_staging="registers". Its only new convention is the register A fragment (checked by the self-test).
//   * Sequence segments: the FFI attribute `segments` (> 0) replaces plan_segments' automatic count (0), for
//     measurements (ffi.linear_attention(..., segments=...)); the kernels themselves do not change.
//   * The Gram variant (attribute gram_sums, kernel="wgmma_gram" with normalize=False; register operands only):
//     no ones column, so N = GV in the output and state products (m64n64 instead of m64n72 for GV = 64). The key
//     sums, which only the final state needs without normalisation, come from a fourth accumulator instead:
//     Gram [64 j, 16] += (M_left2^T K^T + [j >= 16]) K, i.e. rows j < 16: sum k_j k^T and rows 16..63: sum k^T,
//     with the left factor that psi group 2 already computes (packed as register A fragments) and K^T [16, 64]
//     built in smem by ldmatrix.trans next to [V]^T (4 m64n16k16 per chunk, in the state update's batch). Pass 1
//     leaves each segment's partial Gram rows after its partial state in the scratch slot, the prefix kernel sums
//     them like the state, and the last segment of pass 2 writes rows 0..16 as the third result [B, H, 17, 16];
//     Python rebuilds k_state from them and the length (psi_layout.key_sums_from_gram) and adds the initial one.
//     The default kernels compile to the same machine code as before these two options: `python -m
//     ffi.sass_identity 6af8159 --rename EEEvNS_6ParamsE=ELb0EEEvNS_6ParamsE` finds every kernel's .text identical.
//
// Status: written without a GPU in session 11, then run on an H200 in the same session (s11f in
// docs/benchmarks.md): the self-test and every gpu-marked test passed on the first run; L 8192, H 16, Dv 64,
// normalize=True, CUPTI median of 20: B = 1 / 16 / 256 0.0860 / 0.6132 / 9.6502 ms with register operands,
// 0.0901 / 0.6516 / 9.9944 ms with shared-memory ones (the mma.sync kernel: 0.1497 / 1.2586 / 19.7171 ms).
// The descriptor fields follow the PTX ISA's matrix-descriptor table (K-major, 32-byte swizzle: LBO unused = 1,
// SBO = offset between 8-row groups, base offset 0 for 256-byte-aligned atoms); the index arithmetic of the
// chunk loop is emulated on CPU by tests/ffi/test_ffi_wgmma_emulation.py; BasedWgmmaSelfTest (ffi.diagnose)
// checks the hardware conventions alone on the GPU.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "ffi_common.cuh"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace based_wgmma {

using based_ffi::aligned16;
using based_ffi::bind_qkv;

constexpr int kChunk = 64;       // tokens per chunk (wgmma M)
constexpr int kFeat = 16;        // q/k feature dim
constexpr int kPsi = 192;        // psi rows: 3 groups of 64
constexpr int kThreads = 128;    // one warpgroup
constexpr int kAtom = 256;       // bytes of one swizzled 8 x 16 bf16 atom
constexpr int kMatBytes = 2048;  // one constant matrix [64, 16] bf16
constexpr int kVStride = 72;     // bf16 per row of the raw V stage (144 B rows: conflict-free ldmatrix)

// Constant matrices (features.py's build_matrices, stored transposed as [64 j][16 a] K-major).
enum Mat { kTile = 0, kShift0Q, kShift1, kLeft2, kRight2Q, kShift0K, kRight2K, kNumMats };

struct Params {
  const __nv_bfloat16* q;  // [B, L, H, 16]
  const __nv_bfloat16* k;  // [B, L, H, 16]
  const __nv_bfloat16* v;  // [B, L, H, Dv]
  const float* kv0;        // [B, H, 192, Dv] psi layout, or null
  const float* ks0;        // [B, H, 192] psi layout, or null
  __nv_bfloat16* out;      // [B, L, H, Dv]
  float* kv;               // [B, H, 192, Dv] psi layout
  float* ks;               // [B, H, 192] psi layout; Gram variant: [B, H, 17, 16] Gram rows (sum k k^T; sum k)
  float* scratch;          // [B*H*G, NS, slot] segment start states (slot: 192 x N, + 64 x 16 Gram), or null
  int64_t L, H, Dv;
  int G;        // value-column groups (Dv / GV)
  int NS;       // sequence segments
  int cps;      // chunks per segment
  int nchunks;  // ceil(L / 64)
  int normalize;
  float eps;
};

// Shared-memory layout (byte offsets from a 1024-aligned base). N = GV + 8 columns of [V, 1, 0], or, in the
// Gram variant (kGram), N = GV columns of V plus a K^T operand [16, 64 tokens] for the Gram sums at the end.
template <int GV, bool kGram = false>
struct Smem {
  static constexpr int N = kGram ? GV : GV + 8;
  static constexpr int NA = N / 8;                                   // 8-row atoms along N
  static constexpr int kMats = 0;                                    // 7 x [64, 16]
  static constexpr int kQ = kMats + kNumMats * kMatBytes;            // 2 buffers x [64, 16]
  static constexpr int kK = kQ + 2 * kMatBytes;                      // 2 buffers x [64, 16]
  static constexpr int kVrawBytes = kChunk * kVStride * 2;
  static constexpr int kVraw = kK + 2 * kMatBytes;                   // 2 buffers x [64, 72] row-major
  static constexpr int kVt = kVraw + 2 * kVrawBytes;                 // [N, 64 tokens]
  static constexpr int kPsiBuf = kVt + NA * 4 * kAtom;               // psi_q [64, 192] / psi_k^T [192, 64]
  static constexpr int kP = kPsiBuf + 96 * kAtom;                    // [64, 64]
  static constexpr int kSb = kP + 32 * kAtom;                        // bf16(S)^T [N, 192]
  static constexpr int kKt = kSb + NA * 12 * kAtom;                  // kGram: K^T [16, 64 tokens]
  static constexpr int kBytes = kKt + (kGram ? 8 * kAtom : 0);
  static constexpr int kAlloc = kBytes + 1024;                       // room to align the base
  // Rows of N floats in one scratch slot (b, h, value group, segment): the state [192, N], then (kGram) the Gram
  // rows [64, 16] flattened into ceil(1024 / N) more rows. kSlotRows = kPsi in the default kernels.
  static constexpr int kGramRows = kGram ? (64 * kFeat + N - 1) / N : 0;
  static constexpr int kSlotRows = kPsi + kGramRows;
  static_assert(kVrawBytes % kAtom == 0, "atom-aligned buffers");
};

// ---------------------------------------------------------------------------------------------------------
// PTX helpers.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of element (r, c) in a K-major bf16 operand of `mn_atoms` 8-row atoms per 16-column K slice,
// 32-byte swizzle: inside a 256-byte atom, 16-byte chunk (c / 8) % 2 of row r is XORed with (r % 8) / 4.
__device__ __forceinline__ uint32_t tile_off(int r, int c, int mn_atoms) {
  const int rr = r & 7;
  return static_cast<uint32_t>(((c >> 4) * mn_atoms + (r >> 3)) * kAtom + rr * 32 +
                               ((((c >> 3) & 1) ^ (rr >> 2)) << 4) + (c & 7) * 2);
}

// wgmma shared-memory matrix descriptor: start address >> 4 (bits 0-13), leading byte offset >> 4 (bits 16-29;
// unused for swizzled K-major operands, set to 1), stride byte offset >> 4 (bits 32-45: 256 B between atoms of
// consecutive 8-row groups), base offset 0 (atoms are 256-byte aligned), swizzle mode 3 = 32 B (bits 62-63).
__device__ __forceinline__ uint64_t make_desc(uint32_t saddr) {
  return static_cast<uint64_t>((saddr & 0x3FFFFu) >> 4) | (uint64_t(1) << 16) | (uint64_t(kAtom >> 4) << 32) |
         (uint64_t(3) << 62);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Generic-proxy smem writes (st.shared, cp.async) -> visible to wgmma (async proxy); then a barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void st_u32(uint32_t addr, uint32_t x) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(x) : "memory");
}
__device__ __forceinline__ void st_u16(uint32_t addr, uint16_t x) {
  asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"(x) : "memory");
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 x = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&x);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// Pins accumulator registers at this point of the program: reads after a wgmma wait cannot be hoisted above
// it, and writes before a wgmma fence cannot sink below it.
template <int R>
__device__ __forceinline__ void pin(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// The same for packed A fragments: their producing instructions stay before the wgmma fence.
template <int R>
__device__ __forceinline__ void pin(uint32_t (&a)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(a[i])::"memory");
}

// d (+)= A . B for one K = 16 slice: A [64, 16] and B [N, 16] (K-major) described in shared memory, bf16 in,
// fp32 accumulate. kAcc = 0 overwrites d. Accumulator fragment (per thread, N/2 floats): element 4 j + 2 h + e
// is row 16 warp + lane / 4 + 8 h, column 8 j + 2 (lane % 4) + e.
template <int kAcc>
__device__ __forceinline__ void wgmma_m64n64(float (&d)[32], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "n"(kAcc));
}

template <int kAcc>
__device__ __forceinline__ void wgmma_m64n72(float (&d)[36], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, %36, %37, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "l"(da), "l"(db), "n"(kAcc));
}

// N = 56: the Gram-sum variant's products for 56-column value groups (Dv = 112), no ones column.
template <int kAcc>
__device__ __forceinline__ void wgmma_m64n56(float (&d)[28], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %30, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n56k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, "
      "%14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27}, %28, %29, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27])
      : "l"(da), "l"(db), "n"(kAcc));
}

template <int N, int kAcc>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], uint64_t da, uint64_t db) {
  if constexpr (N == 64) {
    wgmma_m64n64<kAcc>(d, da, db);
  } else if constexpr (N == 56) {
    wgmma_m64n56<kAcc>(d, da, db);
  } else {
    static_assert(N == 72, "wgmma shapes used here: m64n56k16, m64n64k16, m64n72k16");
    wgmma_m64n72<kAcc>(d, da, db);
  }
}

// The same with A from registers (the m64k16 A fragment: per warp its 16 rows, a[0] = (row, k 2c..2c+1),
// a[1] = (row + 8, k 2c..), a[2] = (row, k 8 + 2c..), a[3] = (row + 8, k 8 + 2c..), c = lane % 4, row = 16 warp +
// lane / 4): the layout an m64n16 slice of an fp32 accumulator has once packed to bf16 pairs (pack_a_slice).
template <int kAcc>
__device__ __forceinline__ void wgmma_m64n64_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(kAcc));
}

template <int kAcc>
__device__ __forceinline__ void wgmma_m64n72_rs(float (&d)[36], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, {%36, %37, %38, %39}, %40, p, 1, 1, "
      "0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(kAcc));
}

template <int kAcc>
__device__ __forceinline__ void wgmma_m64n56_rs(float (&d)[28], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %33, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n56k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, "
      "%14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27}, {%28, %29, %30, %31}, %32, p, 1, 1, "
      "0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(kAcc));
}

// The Gram-sum accumulator's product: [64 features, 64 tokens] (registers) x K [64 tokens, 16] -> [64, 16].
template <int kAcc>
__device__ __forceinline__ void wgmma_m64n16_rs(float (&d)[8], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(kAcc));
}

template <int N, int kAcc>
__device__ __forceinline__ void wgmma_bf16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db) {
  if constexpr (N == 64) {
    wgmma_m64n64_rs<kAcc>(d, a, db);
  } else if constexpr (N == 56) {
    wgmma_m64n56_rs<kAcc>(d, a, db);
  } else if constexpr (N == 16) {
    wgmma_m64n16_rs<kAcc>(d, a, db);
  } else {
    static_assert(N == 72, "wgmma shapes used here: m64n{16,56,64,72}k16");
    wgmma_m64n72_rs<kAcc>(d, a, db);
  }
}

// K slice ks (columns 16 ks .. 16 ks + 15) of a [64, 64] fp32 fragment as a bf16 A fragment.
__device__ __forceinline__ void pack_a_slice(const float (&x)[32], int ks, uint32_t (&a)[4]) {
  a[0] = pack_bf16(x[8 * ks + 0], x[8 * ks + 1]);
  a[1] = pack_bf16(x[8 * ks + 2], x[8 * ks + 3]);
  a[2] = pack_bf16(x[8 * ks + 4], x[8 * ks + 5]);
  a[3] = pack_bf16(x[8 * ks + 6], x[8 * ks + 7]);
}

// ---------------------------------------------------------------------------------------------------------
// Constant matrices: entry (a, j) of matrix m (x @ M picks x_a into column j with a power-of-two weight).
__device__ __forceinline__ float mat_entry(int m, int a, int j) {
  const int jj = j & 15, d0 = j >> 4, d1 = 4 + (j >> 4);
  switch (m) {
    case kTile: return a == jj ? 1.f : 0.f;
    case kShift0Q: return a == ((jj + d0) & 15) ? 0.25f : 0.f;
    case kShift0K: return a == ((jj + d0) & 15) ? (d0 == 0 ? 0.125f : 0.25f) : 0.f;
    case kShift1: return a == ((jj + d1) & 15) ? 0.25f : 0.f;
    case kLeft2: return (j < 16 && a == j) ? 1.f : 0.f;
    case kRight2Q:
      if (j < 16) return a == ((j + 8) & 15) ? 0.25f : 0.f;
      return (j < 32 && a == j - 16) ? 0.5f : 0.f;
    default:  // kRight2K
      if (j < 16) return a == ((j + 8) & 15) ? 0.125f : 0.f;
      return (j < 32 && a == j - 16) ? 0.5f : 0.f;
  }
}

// Stores M_m^T [64 j, 16 a] for all seven matrices (K-major: a contiguous).
__device__ void fill_matrices(uint32_t mats, int tid) {
  for (int u = tid; u < kNumMats * 64 * 8; u += kThreads) {
    const int m = u / 512, j = (u / 8) % 64, a = 2 * (u % 8);
    st_u32(mats + m * kMatBytes + tile_off(j, a, 8), pack_bf16(mat_entry(m, a, j), mat_entry(m, a + 1, j)));
  }
}

// psi group g from two [64, 64] products, in fragment order: g < 2: T * R; g = 2: (T + [j >= 16]) *
// (R + [j == 32]), with j the feature index (column of the q-side products, row of the transposed k-side ones).
template <bool kTransposed>
__device__ __forceinline__ void psi_values(int g, const float (&t)[32], const float (&r)[32], int warp, int lane,
                                           float (&x)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    float a = t[i], b = r[i];
    if (g == 2) {
      const int j = kTransposed ? row : col;
      a += j >= kFeat ? 1.f : 0.f;
      b += j == 2 * kFeat ? 1.f : 0.f;
    }
    x[i] = a * b;
  }
}

// Stores psi group g: kTransposed (k side): rows are features, columns tokens, into psi_k^T [192, 64]; else into
// psi_q [64, 192].
template <bool kTransposed>
__device__ __forceinline__ void store_psi_group(uint32_t psi, int g, const float (&t)[32], const float (&r)[32],
                                                int warp, int lane) {
  float x[32];
  psi_values<kTransposed>(g, t, r, warp, lane, x);
#pragma unroll
  for (int i = 0; i < 32; i += 2) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3);
    const uint32_t off = kTransposed ? tile_off(64 * g + row, col, 24) : tile_off(row, 64 * g + col, 8);
    st_u32(psi + off, pack_bf16(x[i], x[i + 1]));
  }
}

// P = causal(1 + s + s^2/2), s = (Q K^T) / 4, from the fp32 scores [64 q, 64 k], in fragment order.
__device__ __forceinline__ void taylor_values(const float (&sc)[32], int warp, int lane, float (&x)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    const float s = 0.25f * sc[i];
    x[i] = col <= row ? 1.f + s + 0.5f * s * s : 0.f;
  }
}

// P as bf16 [64 q, 64 k] into shared memory.
__device__ __forceinline__ void store_taylor(uint32_t pbuf, const float (&sc)[32], int warp, int lane) {
  float x[32];
  taylor_values(sc, warp, lane, x);
#pragma unroll
  for (int i = 0; i < 32; i += 2) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3);
    st_u32(pbuf + tile_off(row, col, 8), pack_bf16(x[i], x[i + 1]));
  }
}

// One [64, 64] feature product of a [64, 16] tile X with constant matrix m: X M_m (q side, kTransposed false:
// A = X, B = M_m^T) or (X M_m)^T (k side: A = M_m^T, B = X, so the keys come out transposed).
template <bool kTransposed>
__device__ __forceinline__ void feature_product(float (&acc)[32], uint32_t mats, uint64_t dx, int m) {
  const uint64_t dm = make_desc(mats + m * kMatBytes);
  if (kTransposed) {
    wgmma_bf16<64, 0>(acc, dm, dx);
  } else {
    wgmma_bf16<64, 0>(acc, dx, dm);
  }
}

// Issues (commits, does not wait for) the first two products of a side, T = X M_tile and R = X M_shift0.
template <bool kTransposed>
__device__ __forceinline__ void issue_first_products(float (&t)[32], float (&r)[32], uint32_t mats, uint32_t x) {
  const uint64_t dx = make_desc(x);
  pin(t);
  pin(r);
  wgmma_fence();
  feature_product<kTransposed>(t, mats, dx, kTile);
  feature_product<kTransposed>(r, mats, dx, kTransposed ? kShift0K : kShift0Q);
  wgmma_commit();
}

// Finishes psi of the tile after issue_first_products: waits, stores group 0 to the psi buffer, then groups 1
// and 2 (two more tensor-core waits). kSync: a CTA barrier before the first store (the psi buffer may still be
// read by other warps' products). sc: with kScores, Q K^T [64, 64] (x = Q, dk = K) joins the last batch.
template <bool kTransposed, bool kSync, bool kScores>
__device__ __forceinline__ void finish_features(float (&t)[32], float (&r)[32], uint32_t mats, uint32_t x,
                                                uint32_t psi, int warp, int lane, float (&sc)[32], uint64_t dk) {
  const uint64_t dx = make_desc(x);
  wgmma_wait0();
  pin(t);
  pin(r);
  if (kSync) __syncthreads();
  store_psi_group<kTransposed>(psi, 0, t, r, warp, lane);
  wgmma_fence();
  feature_product<kTransposed>(r, mats, dx, kShift1);
  wgmma_commit();
  wgmma_wait0();
  pin(r);
  store_psi_group<kTransposed>(psi, 1, t, r, warp, lane);
  pin(t);
  if (kScores) pin(sc);
  wgmma_fence();
  feature_product<kTransposed>(t, mats, dx, kLeft2);
  feature_product<kTransposed>(r, mats, dx, kTransposed ? kRight2K : kRight2Q);
  if (kScores) wgmma_bf16<64, 0>(sc, dx, dk);
  wgmma_commit();
  wgmma_wait0();
  pin(t);
  pin(r);
  if (kScores) pin(sc);
  store_psi_group<kTransposed>(psi, 2, t, r, warp, lane);
}

// Group 2's left factor alone, (M_left2^T K^T + [j >= 16]) [64 j, 64 tokens] in fragment order: rows j < 16 are
// the keys k_j, rows 16..63 ones (zero-filled tokens past L have k = 0, so they add nothing below).
__device__ __forceinline__ void gram_left_values(const float (&t)[32], int warp, int lane, float (&x)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    x[i] = t[i] + (row >= kFeat ? 1.f : 0.f);
  }
}

// S_g += psi_k(K)^T_g [V, 1, 0] with psi_k(K)^T fed from registers: each group's transposed products
// (M^T K^T, fp32 [64 features, 64 tokens]) are multiplied, packed into A fragments and consumed by the state
// wgmmas at once, while the next group's products run; nothing goes through shared memory.
// kGram: also gram [64 j, 16] += left [64 j, 64 tokens] K [64 tokens, 16] (K^T at ktt, K-major), i.e. rows
// j < 16: sum k_j k^T, rows 16..63: sum k^T: the key sums of the psi state, rebuilt in Python. Issued in every
// CTA (a conditional wgmma makes ptxas serialise the pipeline); only the CTAs that need the sums store them.
template <int N, bool kGram = false>
__device__ __forceinline__ void key_update_registers(float (&s)[3][N / 2], uint32_t mats, uint32_t kt, uint32_t vt,
                                                     int warp, int lane, float (&gram)[8], uint32_t ktt) {
  constexpr int NA = N / 8;
  const uint64_t dk = make_desc(kt);
  auto dm = [&](int m) { return make_desc(mats + m * kMatBytes); };
  float t[32], r[32];
  pin(t);
  pin(r);
  wgmma_fence();
  wgmma_bf16<64, 0>(t, dm(kTile), dk);
  wgmma_bf16<64, 0>(r, dm(kShift0K), dk);
  wgmma_commit();
  wgmma_wait0();
  pin(t);
  pin(r);
#pragma unroll
  for (int g = 0; g < 3; ++g) {
    uint32_t a[4][4];
    uint32_t left[4][4];  // kGram, g = 2: the Gram product's A operand
    {
      float x[32];
      psi_values<true>(g, t, r, warp, lane, x);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) pack_a_slice(x, ks, a[ks]);
      if (kGram && g == 2) {
        gram_left_values(t, warp, lane, x);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) pack_a_slice(x, ks, left[ks]);
      }
    }
    pin(s[g]);
    if (!(kGram && g == 2)) {  // kGram: t and r are dead after group 2's values, fewer live registers
      pin(t);
      pin(r);
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) pin(a[ks]);
    if (kGram && g == 2) {
      pin(gram);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) pin(left[ks]);
    }
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) wgmma_bf16_rs<N, 1>(s[g], a[ks], make_desc(vt + ks * NA * kAtom));
    if (kGram && g == 2) {
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) wgmma_bf16_rs<16, 1>(gram, left[ks], make_desc(ktt + ks * 2 * kAtom));
    }
    if (g == 0) wgmma_bf16<64, 0>(r, dm(kShift1), dk);
    if (g == 1) {
      wgmma_bf16<64, 0>(t, dm(kLeft2), dk);
      wgmma_bf16<64, 0>(r, dm(kRight2K), dk);
    }
    wgmma_commit();
    wgmma_wait0();
    pin(s[g]);
    if (!(kGram && g == 2)) {
      pin(t);
      pin(r);
    }
    if (kGram && g == 2) pin(gram);
  }
}

// K^T [16 features, 64 tokens] (K-major, 2 atoms per 16-token slice) at ktt from the swizzled k tile [64, 16] at
// kt: the Gram product's B operand. One ldmatrix.x4.trans per warp (16 blocks of 8 tokens x 8 features), each
// lane getting a token pair of one feature, a 4-byte slot of the operand (as in build_vt).
__device__ __forceinline__ void build_kt(uint32_t kt, uint32_t ktt, int warp, int lane) {
  const int id = 4 * warp + (lane >> 3);  // 8x8 block: tokens 8 (id % 8).., features 8 (id / 8)..
  uint32_t r[4];
  ldsm_x4_t(r, kt + tile_off(8 * (id & 7) + (lane & 7), 8 * (id >> 3), 8));
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int idm = 4 * warp + m;
    const int f = 8 * (idm >> 3) + (lane >> 2), t = 8 * (idm & 7) + 2 * (lane & 3);
    st_u32(ktt + tile_off(f, t, 2), r[m]);
  }
}

// ---------------------------------------------------------------------------------------------------------
template <int GV, bool kOut, bool kRegA, bool kGram>
__global__ void __launch_bounds__(kThreads) wgmma_kernel(const Params p) {
  static_assert(!kGram || kRegA, "the Gram variant feeds psi_k(K)^T from registers");
  using L = Smem<GV, kGram>;
  constexpr int N = L::N, NR = N / 2, NA = L::NA;
  constexpr int kRows = L::kSlotRows;  // scratch slot: [kRows, N]
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;  // swizzle atoms need aligned addresses
  const uint32_t mats = base + L::kMats, vt = base + L::kVt, psi = base + L::kPsiBuf;
  const uint32_t pbuf = base + L::kP, sb = base + L::kSb;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t bhg = blockIdx.x;
  const int seg = blockIdx.y;
  const int grp = static_cast<int>(bhg % p.G);
  const int64_t bh = bhg / p.G;
  const int64_t h = bh % p.H, b = bh / p.H;
  const int64_t col0 = int64_t(grp) * GV;
  const int c0 = seg * p.cps;
  const int c1 = min(c0 + p.cps, p.nchunks);
  // Gram sums (every CTA of the Gram variant computes them): pass 1 stores every segment's partial sums for the
  // prefix kernel; in pass 2 only the last segment of value group 0 starts from their prefix and stores the total.
  const bool use_gram = kGram && grp == 0 && (!kOut || seg == p.NS - 1);
  const uint32_t ktt = base + L::kKt;

  fill_matrices(mats, tid);

  // ---- the state accumulators S_g [64 features, N], g = 0..2: this segment's starting state (pass 2) or 0.
  float s[3][NR];
  const float* start = (kOut && p.scratch) ? p.scratch + (bhg * p.NS + seg) * int64_t(kRows * N) : nullptr;
#pragma unroll
  for (int g = 0; g < 3; ++g) {
#pragma unroll
    for (int i = 0; i < NR; i += 2) {
      const int f = 64 * g + 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
      const int n = 8 * (i >> 2) + 2 * (lane & 3);
      float2 x = make_float2(0.f, 0.f);
      if (start != nullptr) x = __ldcg(reinterpret_cast<const float2*>(start + f * N + n));
      s[g][i] = x.x;
      s[g][i + 1] = x.y;
    }
  }

  // Gram rows [64 j, 16] (kGram): this segment's start (pass 2, last segment) or 0; fragment element i is row
  // 16 warp + lane / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (lane % 4) + i % 2.
  float gram[8];  // unused (never read) in the default kernels
  if constexpr (kGram) {
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      const int j = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1), c = 8 * (i >> 2) + 2 * (lane & 3);
      float2 x = make_float2(0.f, 0.f);
      if (use_gram && start != nullptr) x = __ldcg(reinterpret_cast<const float2*>(start + kPsi * N + j * kFeat + c));
      gram[i] = x.x;
      gram[i + 1] = x.y;
    }
  }

  // bf16(S)^T [N, 192] for the output product (K-major: features contiguous).
  auto store_state_bf16 = [&]() {
#pragma unroll
    for (int g = 0; g < 3; ++g) {
#pragma unroll
      for (int i = 0; i < NR; ++i) {
        const int f = 64 * g + 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
        const int n = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
        const __nv_bfloat16 x = __float2bfloat16(s[g][i]);
        st_u16(sb + tile_off(n, f, NA), *reinterpret_cast<const uint16_t*>(&x));
      }
    }
  };
  if (kOut) store_state_bf16();

  // ---- cp.async loads of one chunk: q (pass 2), k into swizzled [64, 16] tiles, v into the padded stage.
  auto issue_load = [&](int chunk, int buf) {
    const int64_t t0 = int64_t(chunk) * kChunk;
    {
      const int row = tid >> 1, half = tid & 1;
      const int64_t tok = t0 + row;
      const bool ok = tok < p.L;
      const int64_t src = ((b * p.L + (ok ? tok : 0)) * p.H + h) * kFeat + 8 * half;
      const uint32_t dst = tile_off(row, 8 * half, 8) + buf * kMatBytes;
      cp_async16(base + L::kK + dst, p.k + src, ok ? 16 : 0);
      if (kOut) cp_async16(base + L::kQ + dst, p.q + src, ok ? 16 : 0);
    }
    constexpr int kUnitsRow = GV / 8;
    for (int u = tid; u < kChunk * kUnitsRow; u += kThreads) {
      const int row = u / kUnitsRow, part = u % kUnitsRow;
      const int64_t tok = t0 + row;
      const bool ok = tok < p.L;
      const int64_t src = ((b * p.L + (ok ? tok : 0)) * p.H + h) * p.Dv + col0 + 8 * part;
      cp_async16(base + L::kVraw + buf * L::kVrawBytes + row * (kVStride * 2) + part * 16, p.v + src, ok ? 16 : 0);
    }
    cp_async_commit();
  };

  // ---- [V, 1, 0]^T [N, 64 tokens] from the raw stage: ldmatrix.trans hands each lane a token pair of one
  // value column, which is exactly a 4-byte slot of the K-major operand.
  auto build_vt = [&](int buf, int64_t t0) {
    const uint32_t raw = base + L::kVraw + buf * L::kVrawBytes;
    constexpr int kMats8 = 8 * (GV / 8);  // 8x8 blocks (token block, column block)
    for (int q4 = warp; q4 < kMats8 / 4; q4 += 4) {
      const int id = 4 * q4 + (lane >> 3);
      uint32_t r[4];
      ldsm_x4_t(r, raw + (8 * (id & 7) + (lane & 7)) * (kVStride * 2) + (id >> 3) * 16);
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const int idm = 4 * q4 + m;
        const int n = 8 * (idm >> 3) + (lane >> 2), t = 8 * (idm & 7) + 2 * (lane & 3);
        st_u32(vt + tile_off(n, t, NA), r[m]);
      }
    }
    if constexpr (!kGram) {
      for (int u = tid; u < 8 * 32; u += kThreads) {  // rows GV..N-1: the ones row (valid tokens), zeros
        const int n = GV + u / 32, t = 2 * (u % 32);
        const bool ones = n == GV;
        st_u32(vt + tile_off(n, t, NA),
               pack_bf16(ones && t0 + t < p.L ? 1.f : 0.f, ones && t0 + t + 1 < p.L ? 1.f : 0.f));
      }
    }
  };

  // ---- normalise and store the output tile O [64 tokens, N] (column GV is the denominator).
  auto store_output = [&](const float(&o)[NR], int64_t t0) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float inv = 1.f;  // the Gram variant runs with normalize=False only: no denominator column
      if constexpr (!kGram) {
        const float den = __shfl_sync(0xffffffffu, o[4 * (GV / 8) + 2 * hh], lane & ~3);
        inv = p.normalize ? 1.f / (den + p.eps) : 1.f;
      }
      const int64_t tok = t0 + 16 * warp + (lane >> 2) + 8 * hh;
      if (tok < p.L) {
        __nv_bfloat16* dst = p.out + ((b * p.L + tok) * p.H + h) * p.Dv + col0 + 2 * (lane & 3);
#pragma unroll
        for (int j = 0; j < GV / 8; ++j) {
          *reinterpret_cast<uint32_t*>(dst + 8 * j) = pack_bf16(o[4 * j + 2 * hh] * inv, o[4 * j + 2 * hh + 1] * inv);
        }
      }
    }
  };

  if (c0 < c1) issue_load(c0, 0);
  for (int chunk = c0; chunk < c1; ++chunk) {
    const int buf = (chunk - c0) & 1;
    const int64_t t0 = int64_t(chunk) * kChunk;
    const uint32_t qt = base + L::kQ + buf * kMatBytes, kt = base + L::kK + buf * kMatBytes;
    cp_async_wait_all();
    __syncthreads();  // this chunk's loads landed everywhere; the previous chunk's readers are done
    if (chunk + 1 < c1) issue_load(chunk + 1, buf ^ 1);
    build_vt(buf, t0);
    if (kGram) build_kt(kt, ktt, warp, lane);
    fence_proxy_async();
    __syncthreads();

    if constexpr (kOut) {
      // psi_q(Q) and the intra-chunk P.
      float t[32], r[32];
      float sc[32];  // Q K^T (joins the last feature batch), then P
      issue_first_products<false>(t, r, mats, qt);
      finish_features<false, false, true>(t, r, mats, qt, psi, warp, lane, sc, make_desc(kt));
      uint32_t pa[4][4];  // kRegA: P as A fragments
      if constexpr (kRegA) {
        float x[32];
        taylor_values(sc, warp, lane, x);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) pack_a_slice(x, ks, pa[ks]);
      } else {
        store_taylor(pbuf, sc, warp, lane);
      }
      fence_proxy_async();
      __syncthreads();
      // O = psi_q(Q) bf16(S) + P [V, 1, 0].
      float o[NR];
      pin(o);
      if constexpr (kRegA) {
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) pin(pa[ks]);
      }
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 12; ++ks) {
        const uint64_t da = make_desc(psi + ks * 8 * kAtom), db = make_desc(sb + ks * NA * kAtom);
        if (ks == 0) {
          wgmma_bf16<N, 0>(o, da, db);
        } else {
          wgmma_bf16<N, 1>(o, da, db);
        }
      }
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        if constexpr (kRegA) {
          wgmma_bf16_rs<N, 1>(o, pa[ks], make_desc(vt + ks * NA * kAtom));
        } else {
          wgmma_bf16<N, 1>(o, make_desc(pbuf + ks * 8 * kAtom), make_desc(vt + ks * NA * kAtom));
        }
      }
      wgmma_commit();
      wgmma_wait0();
      pin(o);
      if constexpr (kRegA) {
        store_output(o, t0);
      } else {
        // The k side's first products (registers only) run under the output stores; psi_k^T then overwrites
        // psi_q, after a barrier: every warp must be past the product that reads it.
        issue_first_products<true>(t, r, mats, kt);
        store_output(o, t0);
        finish_features<true, true, false>(t, r, mats, kt, psi, warp, lane, sc, 0);
      }
    }

    if constexpr (kRegA) {
      key_update_registers<N, kGram>(s, mats, kt, vt, warp, lane, gram, ktt);
    } else {
      if constexpr (!kOut) {
        float t[32], r[32], unused[32];
        issue_first_products<true>(t, r, mats, kt);
        finish_features<true, false, false>(t, r, mats, kt, psi, warp, lane, unused, 0);
      }
      // S_g += psi_k(K)^T_g [V, 1, 0] from shared memory.
      fence_proxy_async();
      __syncthreads();
#pragma unroll
      for (int g = 0; g < 3; ++g) pin(s[g]);
      wgmma_fence();
#pragma unroll
      for (int g = 0; g < 3; ++g) {
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          wgmma_bf16<N, 1>(s[g], make_desc(psi + (ks * 24 + 8 * g) * kAtom), make_desc(vt + ks * NA * kAtom));
        }
      }
      wgmma_commit();
      wgmma_wait0();
#pragma unroll
      for (int g = 0; g < 3; ++g) pin(s[g]);
    }
    if (kOut) store_state_bf16();
  }

  // ---- the state: a segment's partial sum (pass 1, into the scratch slot of the next segment) or the final
  // state (last segment of pass 2), from the accumulator fragments.
  if (!kOut || seg == p.NS - 1) {
#pragma unroll
    for (int g = 0; g < 3; ++g) {
#pragma unroll
      for (int i = 0; i < NR; i += 2) {
        const int f = 64 * g + 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
        const int n = 8 * (i >> 2) + 2 * (lane & 3);
        if (!kOut) {
          float* dst = p.scratch + ((bhg * p.NS + seg + 1) * kRows + f) * int64_t(N) + n;
          __stcg(reinterpret_cast<float2*>(dst), make_float2(s[g][i], s[g][i + 1]));
        } else if (n < GV) {
          *reinterpret_cast<float2*>(p.kv + (bh * kPsi + f) * p.Dv + col0 + n) = make_float2(s[g][i], s[g][i + 1]);
        } else if (!kGram && n == GV && grp == 0) {
          p.ks[bh * kPsi + f] = s[g][i];
        }
      }
    }
  }
  // ---- kGram: the Gram rows: pass 1 writes them into the next segment's scratch slot (every group, so that the
  // prefix kernel sums only written values); the last segment of pass 2 (group 0) stores rows 0..16 (rows 17..63
  // repeat row 16).
  if constexpr (kGram) {
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      const int j = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1), c = 8 * (i >> 2) + 2 * (lane & 3);
      if (!kOut) {
        float* dst = p.scratch + (bhg * p.NS + seg + 1) * int64_t(kRows * N) + kPsi * N + j * kFeat + c;
        __stcg(reinterpret_cast<float2*>(dst), make_float2(gram[i], gram[i + 1]));
      } else if (use_gram && j <= kFeat) {
        *reinterpret_cast<float2*>(p.ks + (bh * (kFeat + 1) + j) * kFeat + c) = make_float2(gram[i], gram[i + 1]);
      }
    }
  }
}

// Segment starting states: scratch[bhg, 0] = initial state (or 0), scratch[bhg, s] = scratch[bhg, s - 1] +
// the partial sum of segment s - 1 that pass 1 left there. One thread per (bhg, slot element): feature and column
// of the state, or (kGram) one Gram entry, which starts at 0 (the initial key sums are added in Python).
template <int GV, bool kGram>
__global__ void prefix_kernel(const Params p, int64_t count) {
  constexpr int N = Smem<GV, kGram>::N;
  constexpr int kRows = Smem<GV, kGram>::kSlotRows;  // scratch slot: [kRows, N]
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= count) return;
  const int64_t e = idx % (kRows * N), bhg = idx / (kRows * N);
  const int f = static_cast<int>(e / N), n = static_cast<int>(e % N);  // f >= 192: a Gram entry
  const int grp = static_cast<int>(bhg % p.G);
  const int64_t bh = bhg / p.G;
  float acc = 0.f;
  if (p.kv0 != nullptr && (!kGram || f < kPsi)) {
    if (n < GV) {
      acc = p.kv0[(bh * kPsi + f) * p.Dv + int64_t(grp) * GV + n];
    } else if (n == GV) {
      acc = p.ks0[bh * kPsi + f];
    }
  }
  float* slot = p.scratch + bhg * p.NS * int64_t(kRows * N) + e;
  constexpr int64_t kSlot = int64_t(kRows) * N;
  slot[0] = acc;
  for (int s0 = 1; s0 < p.NS; s0 += 8) {  // eight independent loads in flight, then the running sum
    float x[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = s0 + j < p.NS ? __ldcg(slot + (s0 + j) * kSlot) : 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      acc += x[j];
      if (s0 + j < p.NS) slot[(s0 + j) * kSlot] = acc;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Self-test of the conventions the kernel rests on (descriptor, 32-byte swizzle, accumulator fragment order,
// K stepping, N = 72, A from registers), one warpgroup: d1 = a1 b1^T with a1 [64, 16], b1 [64, 16] (one
// m64n64k16), d2 = a2 b2^T with a2 [64, 64], b2 [72, 64] (four m64n72k16 K slices), operands staged with
// tile_off like the kernel's, and d3 = the same product with a2 fed from registers (pack_a_slice of a2 read in
// accumulator-fragment order). ffi.diagnose compares them with NumPy: if these are wrong, so is the kernel.
__global__ void __launch_bounds__(kThreads) selftest_kernel(const __nv_bfloat16* a1, const __nv_bfloat16* b1,
                                                            const __nv_bfloat16* a2, const __nv_bfloat16* b2,
                                                            float* d1, float* d2, float* d3) {
  __shared__ __align__(1024) unsigned char buf[4 * kMatBytes + 8 * 4 * kAtom + 9 * 4 * kAtom];
  const uint32_t sa1 = smem_u32(buf), sb1 = sa1 + kMatBytes, sa2 = sa1 + 2 * kMatBytes;
  const uint32_t sb2 = sa2 + 8 * 4 * kAtom;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  auto stage = [&](uint32_t dst, const __nv_bfloat16* src, int rows, int cols) {
    for (int u = tid; u < rows * cols / 2; u += kThreads) {
      const int r = (2 * u) / cols, c = (2 * u) % cols;
      const uint32_t x = *reinterpret_cast<const uint32_t*>(src + r * cols + c);
      st_u32(dst + tile_off(r, c, rows / 8), x);
    }
  };
  stage(sa1, a1, 64, 16);
  stage(sb1, b1, 64, 16);
  stage(sa2, a2, 64, 64);
  stage(sb2, b2, 72, 64);
  fence_proxy_async();
  __syncthreads();
  float acc1[32], acc2[36], acc3[36], x[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) {  // a2 in accumulator-fragment order
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    x[i] = __bfloat162float(a2[row * 64 + col]);
  }
  uint32_t a3[4][4];
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) pack_a_slice(x, ks, a3[ks]);
  pin(acc1);
  pin(acc2);
  pin(acc3);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) pin(a3[ks]);
  wgmma_fence();
  wgmma_bf16<64, 0>(acc1, make_desc(sa1), make_desc(sb1));
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    if (ks == 0) {
      wgmma_bf16<72, 0>(acc2, make_desc(sa2 + ks * 8 * kAtom), make_desc(sb2 + ks * 9 * kAtom));
    } else {
      wgmma_bf16<72, 1>(acc2, make_desc(sa2 + ks * 8 * kAtom), make_desc(sb2 + ks * 9 * kAtom));
    }
  }
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    if (ks == 0) {
      wgmma_bf16_rs<72, 0>(acc3, a3[ks], make_desc(sb2 + ks * 9 * kAtom));
    } else {
      wgmma_bf16_rs<72, 1>(acc3, a3[ks], make_desc(sb2 + ks * 9 * kAtom));
    }
  }
  wgmma_commit();
  wgmma_wait0();
  pin(acc1);
  pin(acc2);
  pin(acc3);
#pragma unroll
  for (int i = 0; i < 36; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    if (i < 32) d1[row * 64 + col] = acc1[i];
    d2[row * 72 + col] = acc2[i];
    d3[row * 72 + col] = acc3[i];
  }
}

// Self-test of what the Gram variant adds, one warpgroup: a [64, 64] (A), b56 [56, 64], kk [64 tokens, 16],
// b64 [64, 64]: d4 = a b56^T (four m64n56k16 K slices, A in smem), d5 = a kk (K^T built by build_kt from a k tile
// staged like the kernel's, A from registers, four m64n16k16), d6 = a b64^T (m64n64k16, A from registers).
__global__ void __launch_bounds__(kThreads) selftest_gram_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b56,
                                                                 const __nv_bfloat16* kk, const __nv_bfloat16* b64,
                                                                 float* d4, float* d5, float* d6) {
  __shared__ __align__(1024) unsigned char buf[(32 + 28 + 8 + 8 + 32) * kAtom];
  const uint32_t sa = smem_u32(buf), sb56 = sa + 32 * kAtom, sk = sb56 + 28 * kAtom, skt = sk + 8 * kAtom;
  const uint32_t sb64 = skt + 8 * kAtom;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  auto stage = [&](uint32_t dst, const __nv_bfloat16* src, int rows, int cols) {  // K-major, tile_off layout
    for (int u = tid; u < rows * cols / 2; u += kThreads) {
      const int r = (2 * u) / cols, c = (2 * u) % cols;
      st_u32(dst + tile_off(r, c, rows / 8), *reinterpret_cast<const uint32_t*>(src + r * cols + c));
    }
  };
  stage(sa, a, 64, 64);
  stage(sb56, b56, 56, 64);
  stage(sk, kk, 64, 16);  // the k tile: [64 tokens, 16], as the kernel's cp.async leaves it
  stage(sb64, b64, 64, 64);
  __syncthreads();
  build_kt(sk, skt, warp, lane);
  fence_proxy_async();
  __syncthreads();
  float acc4[28], acc5[8], acc6[32], x[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) {  // a in accumulator-fragment order
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    x[i] = __bfloat162float(a[row * 64 + col]);
  }
  uint32_t ar[4][4];
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) pack_a_slice(x, ks, ar[ks]);
  pin(acc4);
  pin(acc5);
  pin(acc6);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) pin(ar[ks]);
  wgmma_fence();
  wgmma_bf16<56, 0>(acc4, make_desc(sa), make_desc(sb56));
  wgmma_bf16_rs<16, 0>(acc5, ar[0], make_desc(skt));
  wgmma_bf16_rs<64, 0>(acc6, ar[0], make_desc(sb64));
#pragma unroll
  for (int ks = 1; ks < 4; ++ks) {
    wgmma_bf16<56, 1>(acc4, make_desc(sa + ks * 8 * kAtom), make_desc(sb56 + ks * 7 * kAtom));
    wgmma_bf16_rs<16, 1>(acc5, ar[ks], make_desc(skt + ks * 2 * kAtom));
    wgmma_bf16_rs<64, 1>(acc6, ar[ks], make_desc(sb64 + ks * 8 * kAtom));
  }
  wgmma_commit();
  wgmma_wait0();
  pin(acc4);
  pin(acc5);
  pin(acc6);
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1);
    const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    if (i < 28) d4[row * 56 + col] = acc4[i];
    if (i < 8) d5[row * 16 + col] = acc5[i];
    d6[row * 64 + col] = acc6[i];
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

// Segments: `segments` if > 0 (at most one per chunk), else split the sequence until B*H*G*NS fills two CTAs per
// SM, keeping >= 4 chunks per segment. Equal segments of cps chunks: NS can come out below the request (33 chunks
// in 16 segments: 11 of 3 chunks).
void plan_segments(Params& p, int64_t blocks, int segments) {
  const int64_t slots = 2 * int64_t(num_sms());
  int ns = 1;
  if (segments > 0) {
    ns = std::min(segments, p.nchunks);
  } else if (blocks < slots) {
    ns = static_cast<int>(std::min<int64_t>(slots / blocks, std::max(1, p.nchunks / 4)));
    ns = std::max(ns, 1);
  }
  p.cps = (p.nchunks + ns - 1) / ns;
  p.NS = (p.nchunks + p.cps - 1) / p.cps;
}

ffi::Error check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string("based_attention_wgmma: ") + what + ": " + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

template <int GV, bool kRegA, bool kGram>
ffi::Error launch(cudaStream_t stream, ffi::ScratchAllocator& scratch, Params p, int64_t batch, int segments) {
  using L = Smem<GV, kGram>;
  constexpr int N = L::N;
  p.G = static_cast<int>(p.Dv / GV);
  p.nchunks = static_cast<int>((p.L + kChunk - 1) / kChunk);
  const int64_t blocks = batch * p.H * p.G;
  if (blocks > 0x7fffffffLL) return ffi::Error::InvalidArgument("based_attention_wgmma: B*H*groups exceeds 2^31-1");
  plan_segments(p, blocks, segments);
  if (p.NS > 65535) return ffi::Error::InvalidArgument("based_attention_wgmma: more than 65535 segments");
  p.scratch = nullptr;
  const bool need_start = p.NS > 1 || p.kv0 != nullptr;
  const int64_t count = blocks * L::kSlotRows * N;  // prefix-kernel threads
  if (need_start) {
    const size_t bytes = size_t(blocks) * p.NS * L::kSlotRows * N * sizeof(float);
    auto mem = scratch.Allocate(bytes, 16);
    if (!mem.has_value()) {
      return ffi::Error::Internal("based_attention_wgmma: could not allocate " + std::to_string(bytes) +
                                  " bytes of scratch");
    }
    p.scratch = static_cast<float*>(*mem);
  }
  auto k_state = wgmma_kernel<GV, false, kRegA, kGram>;
  auto k_out = wgmma_kernel<GV, true, kRegA, kGram>;
  cudaFuncSetAttribute(k_state, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kAlloc);
  cudaFuncSetAttribute(k_out, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kAlloc);
  if (p.NS > 1) {
    k_state<<<dim3(static_cast<unsigned>(blocks), p.NS - 1), kThreads, L::kAlloc, stream>>>(p);
    if (auto err = check_launch("segment-state kernel"); err.failure()) return err;
  }
  if (need_start) {
    const int64_t grid = (count + 255) / 256;
    if (grid > 0x7fffffffLL) return ffi::Error::InvalidArgument("based_attention_wgmma: state too large");
    prefix_kernel<GV, kGram><<<static_cast<unsigned>(grid), 256, 0, stream>>>(p, count);
    if (auto err = check_launch("prefix kernel"); err.failure()) return err;
  }
  k_out<<<dim3(static_cast<unsigned>(blocks), p.NS), kThreads, L::kAlloc, stream>>>(p);
  return check_launch("output kernel");
}

// The FFI attributes of one call (see attrs_and_results).
struct Options {
  bool normalize;
  float eps;
  bool register_operands;
  int32_t segments;  // 0: automatic
  bool gram_sums;    // third result = Gram rows [..., H, 17, 16] instead of k_state [..., H, 192]
};

template <int GV>
ffi::Error launch_variant(cudaStream_t stream, ffi::ScratchAllocator& scratch, const Params& p, int64_t batch,
                          const Options& opt) {
  if (opt.gram_sums) return launch<GV, true, true>(stream, scratch, p, batch, opt.segments);
  if (opt.register_operands) return launch<GV, true, false>(stream, scratch, p, batch, opt.segments);
  return launch<GV, false, false>(stream, scratch, p, batch, opt.segments);
}

ffi::Error forward(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                   ffi::AnyBuffer v, const ffi::AnyBuffer* kv0, const ffi::AnyBuffer* ks0, const Options& opt,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> kv, ffi::Result<ffi::AnyBuffer> ks) {
  if (opt.segments < 0) return ffi::Error::InvalidArgument("based_attention_wgmma: segments must be >= 0");
  if (opt.gram_sums && (opt.normalize || !opt.register_operands)) {
    return ffi::Error::InvalidArgument(
        "based_attention_wgmma: gram_sums needs normalize=False and register_operands=True");
  }
  const auto qd = q.dimensions(), vd = v.dimensions();
  if (q.element_type() != ffi::BF16 || k.element_type() != ffi::BF16 || v.element_type() != ffi::BF16 ||
      out->element_type() != ffi::BF16) {
    return ffi::Error::InvalidArgument("based_attention_wgmma: q, k, v and out must be bfloat16");
  }
  if (kv->element_type() != ffi::F32 || ks->element_type() != ffi::F32) {
    return ffi::Error::InvalidArgument("based_attention_wgmma: kv and k_state outputs must be float32");
  }
  const size_t rank = qd.size();
  if (rank < 3 || vd.size() != rank || k.dimensions().size() != rank || qd[rank - 1] != kFeat ||
      k.dimensions()[rank - 1] != kFeat) {
    return ffi::Error::InvalidArgument("based_attention_wgmma: q, k must be [..., L, H, 16] and v [..., L, H, Dv]");
  }
  int64_t batch = 1;
  for (size_t i = 0; i + 3 < rank; ++i) batch *= qd[i];
  for (size_t i = 0; i + 1 < rank; ++i) {
    if (vd[i] != qd[i] || k.dimensions()[i] != qd[i]) {
      return ffi::Error::InvalidArgument("based_attention_wgmma: q, k, v must share [..., L, H]");
    }
  }
  Params p{};
  p.L = qd[rank - 3];
  p.H = qd[rank - 2];
  p.Dv = vd[rank - 1];
  const int64_t ks_count = batch * p.H * (opt.gram_sums ? (kFeat + 1) * kFeat : kPsi);
  if (kv->element_count() != batch * p.H * kPsi * p.Dv || ks->element_count() != ks_count ||
      out->element_count() != v.element_count()) {
    return ffi::Error::InvalidArgument(
        "based_attention_wgmma: outputs must be out [..., L, H, Dv], kv [..., H, 192, Dv], k_state [..., H, 192] "
        "(gram_sums: Gram rows [..., H, 17, 16])");
  }
  if (kv0 != nullptr) {
    if (kv0->element_type() != ffi::F32 || ks0->element_type() != ffi::F32 ||
        kv0->element_count() != kv->element_count() || ks0->element_count() != batch * p.H * kPsi) {
      return ffi::Error::InvalidArgument(
          "based_attention_wgmma: initial state must be float32 kv [B, H, 192, Dv] and k_state [B, H, 192]");
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
  p.normalize = opt.normalize ? 1 : 0;
  p.eps = opt.eps;
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out) || !aligned16(p.kv)) {
    return ffi::Error::InvalidArgument("based_attention_wgmma: q, k, v, out and kv must be 16-byte aligned");
  }
  if (p.Dv % 64 == 0) return launch_variant<64>(stream, scratch, p, batch, opt);
  if (p.Dv % 56 == 0) return launch_variant<56>(stream, scratch, p, batch, opt);
  return ffi::Error::InvalidArgument("based_attention_wgmma: Dv must be a multiple of 64 or 56; got " +
                                     std::to_string(p.Dv));
}

ffi::Error ForwardInit(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                       ffi::AnyBuffer v, ffi::AnyBuffer kv0, ffi::AnyBuffer ks0, bool normalize, float eps,
                       bool register_operands, int32_t segments, bool gram_sums, ffi::Result<ffi::AnyBuffer> out,
                       ffi::Result<ffi::AnyBuffer> kv, ffi::Result<ffi::AnyBuffer> ks) {
  const Options opt{normalize, eps, register_operands, segments, gram_sums};
  return forward(stream, std::move(scratch), q, k, v, &kv0, &ks0, opt, out, kv, ks);
}

ffi::Error ForwardNoInit(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                         ffi::AnyBuffer v, bool normalize, float eps, bool register_operands, int32_t segments,
                         bool gram_sums, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> kv,
                         ffi::Result<ffi::AnyBuffer> ks) {
  const Options opt{normalize, eps, register_operands, segments, gram_sums};
  return forward(stream, std::move(scratch), q, k, v, nullptr, nullptr, opt, out, kv, ks);
}

// Test entry: like ForwardInit plus three inputs aliased to the outputs (NaN-poisoned by the tests).
ffi::Error ForwardInto(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q, ffi::AnyBuffer k,
                       ffi::AnyBuffer v, ffi::AnyBuffer kv0, ffi::AnyBuffer ks0, ffi::AnyBuffer, ffi::AnyBuffer,
                       ffi::AnyBuffer, bool normalize, float eps, bool register_operands, int32_t segments,
                       bool gram_sums, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> kv,
                       ffi::Result<ffi::AnyBuffer> ks) {
  const Options opt{normalize, eps, register_operands, segments, gram_sums};
  return forward(stream, std::move(scratch), q, k, v, &kv0, &ks0, opt, out, kv, ks);
}

ffi::Error SelfTest(cudaStream_t stream, ffi::AnyBuffer a1, ffi::AnyBuffer b1, ffi::AnyBuffer a2,
                    ffi::AnyBuffer b2, ffi::Result<ffi::AnyBuffer> d1, ffi::Result<ffi::AnyBuffer> d2,
                    ffi::Result<ffi::AnyBuffer> d3) {
  for (const ffi::AnyBuffer* x : {&a1, &b1, &a2, &b2}) {
    if (x->element_type() != ffi::BF16) return ffi::Error::InvalidArgument("wgmma self-test: inputs must be bf16");
  }
  if (a1.element_count() != 64 * 16 || b1.element_count() != 64 * 16 || a2.element_count() != 64 * 64 ||
      b2.element_count() != 72 * 64 || d1->element_count() != 64 * 64 || d2->element_count() != 64 * 72 ||
      d3->element_count() != 64 * 72 || d1->element_type() != ffi::F32 || d2->element_type() != ffi::F32 ||
      d3->element_type() != ffi::F32) {
    return ffi::Error::InvalidArgument(
        "wgmma self-test: a1 [64, 16], b1 [64, 16], a2 [64, 64], b2 [72, 64] -> d1 [64, 64], d2, d3 [64, 72] f32");
  }
  selftest_kernel<<<1, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(a1.untyped_data()), static_cast<const __nv_bfloat16*>(b1.untyped_data()),
      static_cast<const __nv_bfloat16*>(a2.untyped_data()), static_cast<const __nv_bfloat16*>(b2.untyped_data()),
      static_cast<float*>(d1->untyped_data()), static_cast<float*>(d2->untyped_data()),
      static_cast<float*>(d3->untyped_data()));
  return check_launch("self-test kernel");
}

ffi::Error SelfTestGram(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer b56, ffi::AnyBuffer kk,
                        ffi::AnyBuffer b64, ffi::Result<ffi::AnyBuffer> d4, ffi::Result<ffi::AnyBuffer> d5,
                        ffi::Result<ffi::AnyBuffer> d6) {
  for (const ffi::AnyBuffer* x : {&a, &b56, &kk, &b64}) {
    if (x->element_type() != ffi::BF16) return ffi::Error::InvalidArgument("gram self-test: inputs must be bf16");
  }
  if (a.element_count() != 64 * 64 || b56.element_count() != 56 * 64 || kk.element_count() != 64 * 16 ||
      b64.element_count() != 64 * 64 || d4->element_count() != 64 * 56 || d5->element_count() != 64 * 16 ||
      d6->element_count() != 64 * 64 || d4->element_type() != ffi::F32 || d5->element_type() != ffi::F32 ||
      d6->element_type() != ffi::F32) {
    return ffi::Error::InvalidArgument(
        "gram self-test: a [64, 64], b56 [56, 64], kk [64, 16], b64 [64, 64] -> d4 [64, 56], d5 [64, 16], "
        "d6 [64, 64] f32");
  }
  selftest_gram_kernel<<<1, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(a.untyped_data()), static_cast<const __nv_bfloat16*>(b56.untyped_data()),
      static_cast<const __nv_bfloat16*>(kk.untyped_data()), static_cast<const __nv_bfloat16*>(b64.untyped_data()),
      static_cast<float*>(d4->untyped_data()), static_cast<float*>(d5->untyped_data()),
      static_cast<float*>(d6->untyped_data()));
  return check_launch("gram self-test kernel");
}

// Attributes and the three results: the end of every handler's binding.
template <typename Binding>
auto attrs_and_results(Binding binding) {
  return std::move(binding)
      .template Attr<bool>("normalize")
      .template Attr<float>("eps")
      .template Attr<bool>("register_operands")  // P and psi_k(K)^T fed to the wgmmas from registers
      .template Attr<int32_t>("segments")        // sequence segments; 0: automatic (plan_segments)
      .template Attr<bool>("gram_sums")          // normalize=False: key sums as Gram rows, N = GV products
      .template Ret<ffi::AnyBuffer>()   // out [..., L, H, Dv] bf16
      .template Ret<ffi::AnyBuffer>()   // kv [..., H, 192, Dv] f32 (psi layout)
      .template Ret<ffi::AnyBuffer>();  // k_state [..., H, 192] f32 (psi layout); gram_sums: [..., H, 17, 16]
}

}  // namespace based_wgmma

// q, k, v -> out, kv_psi, k_state_psi (zero initial state).
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionWgmmaFwd, based_wgmma::ForwardNoInit,
                              based_wgmma::attrs_and_results(based_wgmma::bind_qkv()));

// q, k, v, kv0_psi [..., H, 192, Dv] f32, ks0_psi [..., H, 192] f32 -> out, kv_psi, k_state_psi.
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionWgmmaFwdInit, based_wgmma::ForwardInit,
                              based_wgmma::attrs_and_results(
                                  based_wgmma::bind_qkv().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()));

// q, k, v, kv0_psi, ks0_psi, out_buffer, kv_buffer, ks_buffer -> out, kv_psi, k_state_psi (aliased).
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedLinearAttentionWgmmaFwdInto, based_wgmma::ForwardInto,
                              based_wgmma::attrs_and_results(based_wgmma::bind_qkv()
                                                                 .Arg<ffi::AnyBuffer>()
                                                                 .Arg<ffi::AnyBuffer>()
                                                                 .Arg<ffi::AnyBuffer>()
                                                                 .Arg<ffi::AnyBuffer>()
                                                                 .Arg<ffi::AnyBuffer>()));

// a1 [64, 16], b1 [64, 16], a2 [64, 64], b2 [72, 64] bf16 -> d1 = a1 b1^T [64, 64], d2 = d3 = a2 b2^T [64, 72]
// f32 (d3 with a2 from registers).
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedWgmmaSelfTest, based_wgmma::SelfTest,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

// a [64, 64], b56 [56, 64], kk [64, 16], b64 [64, 64] bf16 -> d4 = a b56^T [64, 56], d5 = a kk [64, 16] (K^T via
// build_kt, A from registers), d6 = a b64^T [64, 64] (A from registers) f32: the Gram variant's conventions.
XLA_FFI_DEFINE_HANDLER_SYMBOL(BasedWgmmaSelfTestGram, based_wgmma::SelfTestGram,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
