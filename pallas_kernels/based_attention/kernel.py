"""Mosaic GPU (Hopper) kernel for causal Based linear attention over one sequence segment.

One thread block (one warpgroup) owns one (head, segment, batch) and one block of value columns
`[col0, col0 + ncols)`. It walks its segment in 64-token chunks through a TMA pipeline and keeps
the running state `S [192, ncols]` and `KS [192, 16]` (all 16 columns equal the key sum) as fp32
wgmma accumulators in registers, in the symmetric feature layout `psi_k` of `features.py`.
Without normalization (`gram_sums`), KS is replaced by Gram rows `[64, 16]` = sum_t
[k_t, 1, ..., 1] k_t^T, from which the caller builds the key sums: 16 fewer registers per
thread, which the register-bound kernel turns into speed (docs/benchmarks.md, "Register pressure").

Per chunk, with Q, K [64, 16] and V [64, ncols] in shared memory:
  1. psi_q(Q) [64, 192] is built on the tensor cores: exact products X @ M with 0 / power-of-two
     matrices and one elementwise multiply per 64-feature group (`_build_features`), stored to
     SMEM as bf16.
  2. o = psi(Q) @ bf16(S) + P @ V,  den = psi(Q) @ bf16(KS) + P @ 1,  with the intra-chunk
     P = causal_mask(1 + s + s^2 / 2), s = Q K^T / 4, rounded to bf16 and staged in SMEM (the
     CPU interpreter accepts only SMEM A operands).
  3. psi_k(K) replaces psi_q(Q) in SMEM; S += psi(K)^T @ V, KS += psi(K)^T @ 1 (transposed operand)
     or, with gram_sums, Gram += [K | 1]^T @ K ([K | 1] staged in P's buffer).
  4. bf16 copies of S and KS go to SMEM for the next chunk; o (or o * 1 / (den + eps)) goes out
     by TMA.

KernelConfig.operand_staging "registers" builds psi_k(K)^T directly (transposed products) and
feeds it, the Gram left factor and P to the wgmmas from registers, skipping their round trip
through shared memory (steps 1-3 above keep psi_q in SMEM).

All wgmma operands use a 32-byte swizzle with (8, 16) tiles, which every operand here fits
(K = 16 for Q K^T and the feature products). Inside the chunk loop every scratch view is taken
through an opaque 0 (`fresh_at`, KernelConfig.fresh_views): computed before the loop, the ~22
64-bit wgmma descriptors were spilled by the register-bound kernel and reloaded every chunk.
The caller (`api.py`) pads L to a multiple of 64, splits the sequence into segments, combines
per-segment states and converts layouts.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.based_attention import features
from pallas_kernels.based_attention.config import CHUNK, OPERAND_STAGINGS

_F = features.FEATURE_DIM        # 16
_G = features.PSI_GROUPS         # 3 groups of 64 psi rows
_ONES_COLS = 16                  # width of the all-ones operand that yields key sums
_WGMMA = plgpu.Layout.WGMMA


def _tiled():
  """Transforms for every wgmma operand: (8, 16) bf16 tiles with a 32-byte swizzle."""
  return (plgpu.TilingTransform((8, 16)), plgpu.SwizzleTransform(32))


def _opaque_zero():
  """An int32 0 that LLVM and ptxas cannot see through: `lax.optimization_barrier`, which Mosaic
  GPU lowers to an empty inline asm with side effects.

  Scratch refs indexed with it inside the chunk loop get their addresses (and wgmma
  descriptors) computed there, where they are used, instead of once before the loop: ptxas keeps
  ~22 such 64-bit descriptors live across the loop, spills them and reloads them every chunk
  (docs/benchmarks.md, "Register pressure")."""
  return lax.optimization_barrier(jnp.int32(0))


def static_at(ref, i=0):
  """ref.at[i]: a scratch view whose address the compiler may compute once for the kernel."""
  return ref.at[i]


def fresh_at(ref, i=0):
  """ref.at[i] through an opaque 0: a view whose address is recomputed at its use."""
  return ref.at[_opaque_zero() + i]


def _mm(a, b, shape):
  """Returns a @ b as an fp32 [M, N] array (one wgmma, waited for)."""

  def body(acc_ref):
    plgpu.wgmma(acc_ref, a, b)
    return acc_ref[...]

  return pl.run_scoped(body, plgpu.ACC(shape, jnp.float32))


def _mm_pairs(*pairs):
  """[a @ b for (a, b) in pairs] as fp32 [64, 64] arrays: one wgmma per pair, one wait."""

  def body(*accs):
    for acc, (a, b) in zip(accs, pairs):
      plgpu.wgmma(acc, a, b)
    return tuple(acc[...] for acc in accs)

  return pl.run_scoped(body, *[plgpu.ACC((CHUNK, 64), jnp.float32) for _ in pairs])


def _build_key_features_t(k_smem, mats_smem, consume, at=static_at):
  """psi_k(K)^T, the transpose of _build_features(side="k"), group by group, from transposed
  products M^T @ K^T (A: a feature matrix read transposed, B: the K tile read transposed), so
  each group comes out as [64 features, 64 tokens]: the A operand of S += psi_k(K)^T @ V as it
  is, from shared memory or straight from registers (KernelConfig.operand_staging).

  consume(g, psi_t, left_t): called once per group with psi_t, the bf16 group g [64, 64];
  left_t is None for groups 0 and 1 and, for group 2, the bf16 transposed left factor
  [K | 1 ... 1]^T (exact in bf16), the A operand of the key Gram sums.
  """
  k_t = k_smem.T                                                          # [16, 64 tokens]
  mat_t = lambda m: at(mats_smem, m).T                                    # [64, 16]
  tiled_t, shifted = _mm_pairs((mat_t(features.MAT_TILE), k_t),
                               (mat_t(features.MAT_SHIFT0_K), k_t))      # [64, 64] each
  consume(0, (tiled_t * shifted).astype(jnp.bfloat16), None)
  shifted = _mm(mat_t(features.MAT_SHIFT1), k_t, (CHUNK, 64))             # [64, 64]
  consume(1, (tiled_t * shifted).astype(jnp.bfloat16), None)
  left, right = _mm_pairs((mat_t(features.MAT_LEFT2), k_t),
                          (mat_t(features.MAT_RIGHT2_K), k_t))            # [64, 64] each
  row = plgpu.broadcasted_iota(jnp.int32, (CHUNK, 64), 0, layout=_WGMMA)  # feature index
  left = left + jnp.where(row >= _F, 1.0, 0.0)
  right = right + jnp.where(row == 2 * _F, 1.0, 0.0)
  consume(2, (left * right).astype(jnp.bfloat16), left.astype(jnp.bfloat16))


def first_products(x_smem, mats_smem, side: str, at=static_at):
  """(X, M_tile, M_shift0) for `side`: the operands of _build_features' first two products."""
  shift0 = features.MAT_SHIFT0_Q if side == "q" else features.MAT_SHIFT0_K
  return x_smem, at(mats_smem, features.MAT_TILE), at(mats_smem, shift0)


def _build_features(x_smem, mats_smem, phi_smem, side: str, left_smem=None, at=static_at,
                    first=None):
  """psi_q(X) or psi_k(X) for a [64, 16] bf16 tile into phi_smem [3, 64, 64] bf16.

  Exact fp32 products with the 0 / power-of-two matrices of features.build_matrices(), then one
  rounding to bf16 (see features.py). left_smem: None, or a [64, 64] bf16 ref that receives
  group 2's left factor [X | 1 ... 1] (exact in bf16), the operand of the key Gram sums.
  at: how scratch views are taken (static_at or fresh_at). first: None, or the products of
  `first_products` (X @ M_tile, X @ M_shift0), already computed by the caller.
  """
  right2 = features.MAT_RIGHT2_Q if side == "q" else features.MAT_RIGHT2_K
  if first is None:
    x, mat_tile, mat_shift0 = first_products(x_smem, mats_smem, side, at)
    first = _mm_pairs((x, mat_tile), (x, mat_shift0))
  tiled_x, shifted = first                                                # [64, 64] each
  at(phi_smem, 0)[...] = (tiled_x * shifted).astype(jnp.bfloat16)
  shifted = _mm(x_smem, at(mats_smem, features.MAT_SHIFT1), (CHUNK, 64))  # [64, 64]
  at(phi_smem, 1)[...] = (tiled_x * shifted).astype(jnp.bfloat16)
  left, right = _mm_pairs((x_smem, at(mats_smem, features.MAT_LEFT2)),
                          (x_smem, at(mats_smem, right2)))                # [64, 64] each
  col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, 64), 1, layout=_WGMMA)  # [64, 64]
  left = left + jnp.where(col >= _F, 1.0, 0.0)
  right = right + jnp.where(col == 2 * _F, 1.0, 0.0)
  at(phi_smem, 2)[...] = (left * right).astype(jnp.bfloat16)
  if left_smem is not None:
    left_smem[...] = left.astype(jnp.bfloat16)
  plgpu.commit_smem()


def _build_features_two_waits(x_smem, mats_smem, phi_smem, side: str, k_smem=None,
                              left_smem=None, at=static_at):
  """_build_features with two waits instead of three: the three tile products of groups 0 and 1
  are issued together, then group 2's two products together with (q side, k_smem given) the
  intra-chunk scores Q K^T. Returns the bf16 taylor scores (see _taylor_scores) or None.

  Holds three [64, 64] fp32 accumulators at once (96 registers per thread) instead of two.
  left_smem, at: as in _build_features.
  """
  shift0 = features.MAT_SHIFT0_Q if side == "q" else features.MAT_SHIFT0_K
  right2 = features.MAT_RIGHT2_Q if side == "q" else features.MAT_RIGHT2_K
  acc = lambda: plgpu.ACC((CHUNK, 64), jnp.float32)

  def groups01(a_tile, a_shift0, a_shift1):
    for a, m in ((a_tile, features.MAT_TILE), (a_shift0, shift0), (a_shift1, features.MAT_SHIFT1)):
      plgpu.wgmma(a, x_smem, at(mats_smem, m))
    tiled_x = a_tile[...]                                                 # [64, 64]
    at(phi_smem, 0)[...] = (tiled_x * a_shift0[...]).astype(jnp.bfloat16)
    at(phi_smem, 1)[...] = (tiled_x * a_shift1[...]).astype(jnp.bfloat16)

  pl.run_scoped(groups01, acc(), acc(), acc())

  def group2(a_left, a_right, a_scores=None):
    plgpu.wgmma(a_left, x_smem, at(mats_smem, features.MAT_LEFT2))
    plgpu.wgmma(a_right, x_smem, at(mats_smem, right2))
    if a_scores is not None:
      plgpu.wgmma(a_scores, x_smem, k_smem.T)
    col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, 64), 1, layout=_WGMMA)  # [64, 64]
    left = a_left[...] + jnp.where(col >= _F, 1.0, 0.0)
    right = a_right[...] + jnp.where(col == 2 * _F, 1.0, 0.0)
    at(phi_smem, 2)[...] = (left * right).astype(jnp.bfloat16)
    if left_smem is not None:
      left_smem[...] = left.astype(jnp.bfloat16)
    if a_scores is None:
      return None
    return _taylor_from_scores(a_scores[...])

  accs = (acc(), acc()) + ((plgpu.ACC((CHUNK, CHUNK), jnp.float32),) if k_smem is not None else ())
  taylor = pl.run_scoped(group2, *accs)
  plgpu.commit_smem()
  return taylor


def _taylor_from_scores(qk):
  """Causally masked 1 + s + s^2/2 with s = qk / 4, from fp32 Q K^T [64 q, 64 k], as bf16."""
  scores = qk * 0.25                                                     # [64 q, 64 k]
  row = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 0, layout=_WGMMA)
  col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 1, layout=_WGMMA)
  taylor = 1.0 + scores + 0.5 * scores * scores
  return jnp.where(row >= col, taylor, 0.0).astype(jnp.bfloat16)


def _taylor_scores(q_smem, k_smem):
  """Causally masked 1 + s + s^2/2, s = Q K^T / 4, as bf16 [64 q, 64 k] (stored to SMEM)."""
  return _taylor_from_scores(_mm(q_smem, k_smem.T, (CHUNK, CHUNK)))     # [64 q, 64 k]


def _key_state_update_t(k_smem, v_smem, mats_smem, phi_smem, left_smem, ones_smem, s_accs,
                        ks_accs, gram_accs, *, need_ks: bool, use_gram: bool,
                        in_registers: bool, at=static_at):
  """Issues S_g += psi_k(K)_g^T @ V (and KS_g += psi_k(K)_g^T @ 1, Gram += left^T @ K) with
  psi_k^T built by _build_key_features_t. in_registers: each group's wgmmas take it from
  registers as soon as it exists (the next group's products wait for them); else the groups
  and left^T go to phi_smem / left_smem first and the wgmmas read them there."""

  def issue(g, psi_t, left_t):
    plgpu.wgmma(s_accs[g], psi_t, v_smem)
    if need_ks:
      plgpu.wgmma(ks_accs[g], psi_t, ones_smem)
    if use_gram and left_t is not None:
      plgpu.wgmma(gram_accs[0], left_t, k_smem)                         # [64, 16]

  def stage(g, psi_t, left_t):
    at(phi_smem, g)[...] = psi_t
    if use_gram and left_t is not None:
      left_smem[...] = left_t

  _build_key_features_t(k_smem, mats_smem, issue if in_registers else stage, at=at)
  if not in_registers:
    plgpu.commit_smem()
    for g in range(_G):
      issue(g, at(phi_smem, g), left_smem if g == _G - 1 else None)


def chunk_output(phi, s_bf16, ksb, p_smem, v_smem, ones_smem, *, ncols: int, normalize: bool,
                 eps: float, also=None):
  """o = sum_g phi[g] @ s_bf16[g] + P @ V, divided by den + eps when normalizing, with
  den = sum_g phi[g] @ ksb[g] + P @ 1: fp32 [64 tokens, ncols]. phi, s_bf16, ksb: 3 SMEM refs
  each (psi_q groups, bf16 state groups, bf16 key-sum groups; ksb unused without normalize).
  p_smem: P [64 q, 64 k] bf16, an SMEM ref or (operand_staging "registers") a register value.

  also: None, or (x_smem, mat_i, mat_j): two more products X @ M_i, X @ M_j (fp32 [64, 64])
  issued after the output's wgmmas and waited for with them (one wait for both chains); the
  result is then (o, (X @ M_i, X @ M_j))."""
  num_extra = 0 if also is None else 2

  def outputs(*accs):
    o_acc, den_acc = accs[0], (accs[1] if normalize else None)
    extra = accs[len(accs) - num_extra:]
    for g in range(_G):
      plgpu.wgmma(o_acc, phi[g], s_bf16[g])
      if normalize:
        plgpu.wgmma(den_acc, phi[g], ksb[g])
    plgpu.wgmma(o_acc, p_smem, v_smem)
    if normalize:
      plgpu.wgmma(den_acc, p_smem, ones_smem)
    if also is not None:
      x_smem, mat_i, mat_j = also
      plgpu.wgmma(extra[0], x_smem, mat_i)
      plgpu.wgmma(extra[1], x_smem, mat_j)
    return tuple(acc[...] for acc in accs)

  accs = [plgpu.ACC((CHUNK, ncols), jnp.float32)]
  if normalize:
    accs.append(plgpu.ACC((CHUNK, _ONES_COLS), jnp.float32))
  accs += [plgpu.ACC((CHUNK, 64), jnp.float32) for _ in range(num_extra)]
  results = pl.run_scoped(outputs, *accs)
  out = results[0]                                                       # [64, ncols]
  if normalize:
    den = results[1]                                                     # [64, 16]
    inv_den = 1.0 / (den.max(axis=1) + eps)                              # [64] (columns equal)
    out = out * lax.broadcast_in_dim(inv_den, out.shape, [0])            # 2 divides, not 32
  if also is None:
    return out
  return out, tuple(results[len(results) - num_extra:])


def segment_chunks(length: int, num_segments: int) -> tuple[int, int]:
  """(tokens, chunks) per segment; ValueError unless length = num_segments x k x 64, k >= 1."""
  seg_len = length // num_segments
  seg_chunks = seg_len // CHUNK
  if seg_chunks < 1 or seg_chunks * CHUNK * num_segments != length:
    raise ValueError(
        f"segment_call: q length {length} must be num_segments ({num_segments}) x a positive "
        f"multiple of {CHUNK}")
  return seg_len, seg_chunks


def result_types(q, *, num_segments: int, ncols: int, emit_output: bool, emit_state: bool,
                 emit_ks: bool, gram_sums: bool = False) -> tuple:
  """Output shapes of segment_call (see there), in order: o, s, ks or gram (those requested)."""
  batch, length, heads, _ = q.shape
  state_shape = (batch * heads * num_segments, _G, CHUNK)
  out_type = []
  if emit_output:
    out_type.append(jax.ShapeDtypeStruct((batch, length, heads, ncols), jnp.bfloat16))
  if emit_state:
    out_type.append(jax.ShapeDtypeStruct(state_shape + (ncols,), jnp.float32))
  if emit_ks and gram_sums:
    out_type.append(jax.ShapeDtypeStruct((state_shape[0], CHUNK, _F), jnp.float32))
  elif emit_ks:
    out_type.append(jax.ShapeDtypeStruct(state_shape + (_ONES_COLS,), jnp.float32))
  return tuple(out_type)


def split_refs(refs, *, load_init: bool, emit_output: bool, emit_state: bool, emit_ks: bool,
               num_init: int = 4):
  """(q, k, v, mats, init_refs or None, o or None, s or None, ks or None, scratch refs);
  num_init: how many initial-state arrays follow mats when load_init."""
  refs = list(refs)
  q_ref, k_ref, v_ref, mats_ref = refs[:4]
  del refs[:4]
  init_refs = None
  if load_init:
    init_refs = refs[:num_init]
    del refs[:num_init]
  o_ref = refs.pop(0) if emit_output else None
  s_ref = refs.pop(0) if emit_state else None
  ks_ref = refs.pop(0) if emit_ks else None
  return q_ref, k_ref, v_ref, mats_ref, init_refs, o_ref, s_ref, ks_ref, refs


def segment_call(q, k, v, mats, init=None, *, num_segments: int, col0: int, ncols: int,
                 normalize: bool, eps: float, emit_output: bool, emit_state: bool,
                 max_concurrent_steps: int, key_sums: bool = True, gram_sums: bool = False,
                 two_waits: bool = False, fresh_views: bool = False, overlap_output: bool = False,
                 operand_staging: str = "smem", interpret=None):
  """Runs the kernel over all (head, segment, batch) blocks for value columns [col0, col0+ncols).

  q, k: [B, Lp, H, 16] bf16, v: [B, Lp, H, Dv] bf16 with Lp = num_segments * seg_chunks * 64.
  mats: [7, 16, 64] bf16 (features.build_matrices()).
  init: None (start from zeros) or (s_hi, s_lo, ks_hi, ks_lo), the state each segment starts
    from in psi_k layout split into two bf16 parts (hi + lo carries ~16 mantissa bits):
    s_*: [B * H * num_segments, 3, 64, ncols], ks_*: [B * H * num_segments, 3, 64, 16] (the key
    sum repeated over 16 columns); block (b, h, seg) is row (b * H + h) * num_segments + seg.
    The accumulators start at hi + lo (added on the tensor cores as I @ hi + I @ lo). When the
    kernel carries no psi key sums (normalize=False with gram_sums or without key_sums), init
    is (s_hi, s_lo) alone.
  key_sums: whether emit_state also returns the key sums (else the caller computes them).
  gram_sums: (normalize=False only) return the key sums as Gram rows instead: gram
    [B * H * nseg, 64, 16] f32 = sum_t left(k_t) k_t^T with left(k) = [k, 1, ..., 1] (rows
    0..15: sum k k^T, rows 16..63: sum k), NOT including the initial state. One [64, 16]
    accumulator and one wgmma per chunk instead of three of each: fewer registers per thread.
  two_waits: build each side's psi in two tensor-core waits instead of three, the q side's
    second one shared with the intra-chunk scores (_build_features_two_waits).
  fresh_views: inside the chunk loop, take every scratch view through an opaque 0 (fresh_at),
    so that addresses and wgmma descriptors are computed at their use, not held (and spilled)
    across the loop.
  overlap_output: issue the k side's first two feature products with the output's wgmmas and
    wait for both at once (one tensor-core wait less per chunk, 64 more live registers at it).
  operand_staging: how psi_k(K), the Gram left factor and the intra-chunk P reach the tensor
    cores: "smem" (psi_k [tokens, features] and P stored to shared memory, psi_k read
    transposed), "smem_t" (psi_k^T and the left factor^T built by _build_key_features_t and
    stored to shared memory: the interpretable mirror of "registers"), "registers" (psi_k^T,
    the left factor^T and P fed to the wgmmas from registers: no shared-memory store and read
    of them; the CPU interpreter takes only shared-memory A operands), "p_registers" (only P
    from registers, the keys as in "smem": 16 live registers at the output, none elsewhere).
  Returns a tuple of: o [B, Lp, H, ncols] bf16 if emit_output, then, if emit_state, the
  accumulated state (init included) s [B * H * nseg, 3, 64, ncols] and, if key_sums,
  ks [B * H * nseg, 3, 64, 16] f32 (all 16 columns of ks equal) or, with gram_sums, gram
  (see above). (TMA takes at most 5 strided dimensions, so states are addressed by one flat
  block index.)
  """
  heads = q.shape[2]
  seg_len, seg_chunks = segment_chunks(q.shape[1], num_segments)
  load_init = init is not None
  emit_ks = emit_state and key_sums
  if gram_sums and normalize:
    raise ValueError("segment_call: gram_sums needs normalize=False (the denominator needs the "
                     "psi key sums)")
  use_gram = emit_ks and gram_sums
  # psi key sums feed the denominator and (unless they come as Gram rows) the final state
  need_ks = normalize or (emit_ks and not use_gram)
  if overlap_output and two_waits:
    raise ValueError("segment_call: overlap_output needs the three-wait feature construction")
  if operand_staging not in OPERAND_STAGINGS:
    raise ValueError(f"segment_call: operand_staging must be one of {OPERAND_STAGINGS}; got "
                     f"{operand_staging!r}")
  keys_t = operand_staging in ("smem_t", "registers")
  p_in_registers = operand_staging in ("registers", "p_registers")
  if operand_staging != "smem" and (two_waits or overlap_output):
    raise ValueError(f"segment_call: operand_staging={operand_staging!r} needs the three-wait "
                     "feature construction without overlap_output")
  overlap_output = overlap_output and emit_output
  out_type = result_types(q, num_segments=num_segments, ncols=ncols, emit_output=emit_output,
                          emit_state=emit_state, emit_ks=emit_ks, gram_sums=gram_sums)
  if load_init and len(init) != (4 if need_ks else 2):
    want = "(s_hi, s_lo, ks_hi, ks_lo)" if need_ks else "(s_hi, s_lo)"
    raise ValueError(f"segment_call: init must be {want} here (normalize={normalize}); got "
                     f"{len(init)} arrays")

  def body(*refs):
    q_ref, k_ref, v_ref, mats_ref, init_refs, o_ref, s_ref, ks_ref, refs = split_refs(
        refs, load_init=load_init, emit_output=emit_output, emit_state=emit_state,
        emit_ks=emit_ks, num_init=len(init) if load_init else 0)
    (mats_smem, phi_smem, p_all, sb_smem, ksb_smem, ones_all, o_all, barriers) = refs
    p_smem, ones_smem = p_all.at[0], ones_all.at[0]          # outside the chunk loop

    h = lax.axis_index("h")
    seg = lax.axis_index("seg")
    b = lax.axis_index("b")
    block = (b * heads + h) * num_segments + seg

    plgpu.copy_gmem_to_smem(mats_ref, mats_smem, barriers.at[0])
    ones_smem[...] = jnp.ones((CHUNK, _ONES_COLS), jnp.bfloat16)
    if load_init:
      row = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 0, layout=_WGMMA)
      col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 1, layout=_WGMMA)
      p_smem[...] = jnp.where(row == col, 1.0, 0.0).astype(jnp.bfloat16)   # identity
    plgpu.commit_smem()
    plgpu.barrier_wait(barriers.at[0])

    def run(*accs):
      s_accs = accs[:_G]
      ks_accs = accs[_G:2 * _G] if need_ks else ()
      gram_accs = accs[-1:] if use_gram else ()
      if load_init:
        pl.run_scoped(
            functools.partial(_load_initial_state, init_refs, block, s_accs, ks_accs, p_smem,
                              barriers),
            plgpu.SMEM((CHUNK, ncols), jnp.bfloat16, transforms=_tiled()),
            plgpu.SMEM((CHUNK, ncols), jnp.bfloat16, transforms=_tiled()),
            plgpu.SMEM((CHUNK, _ONES_COLS), jnp.bfloat16, transforms=_tiled()),
            plgpu.SMEM((CHUNK, _ONES_COLS), jnp.bfloat16, transforms=_tiled()))

      def store_bf16_state(s_accs, ks_accs, at=static_at):
        for g in range(_G):
          at(sb_smem, g)[...] = s_accs[g][...].astype(jnp.bfloat16)
          if normalize:        # the bf16 key sums only feed the denominator
            at(ksb_smem, g)[...] = ks_accs[g][...].astype(jnp.bfloat16)
        plgpu.commit_smem()

      if emit_output:
        store_bf16_state(s_accs, ks_accs)

      def step(idx, *refs):
        # The accumulators travel as the pipeline carry (Mosaic GPU threads them through the loop).
        *refs, (s_accs, ks_accs, gram_accs) = refs
        at = fresh_at if fresh_views else static_at
        k_first = None
        if emit_output:
          q_smem, k_smem, v_smem = refs
          if two_waits:
            at(p_all)[...] = _build_features_two_waits(q_smem, mats_smem, phi_smem, "q", k_smem,
                                                       at=at)
            p_operand = at(p_all)
          elif p_in_registers:
            _build_features(q_smem, mats_smem, phi_smem, "q", at=at)
            p_operand = _taylor_scores(q_smem, k_smem)                # bf16 [64, 64] registers
          else:
            _build_features(q_smem, mats_smem, phi_smem, "q", at=at)
            at(p_all)[...] = _taylor_scores(q_smem, k_smem)
            p_operand = at(p_all)
          plgpu.commit_smem()

          # With overlap_output the k side's first two feature products run with the outputs.
          also = first_products(k_smem, mats_smem, "k", at) if overlap_output else None
          out = chunk_output(
              [at(phi_smem, g) for g in range(_G)], [at(sb_smem, g) for g in range(_G)],
              [at(ksb_smem, g) for g in range(_G)], p_operand, v_smem, at(ones_all),
              ncols=ncols, normalize=normalize, eps=eps, also=also)     # [64, ncols] f32
          if overlap_output:
            out, k_first = out
          # The output tile leaves through our own buffer: the pipeline's predicated output
          # copies are not supported by the CPU interpreter.
          plgpu.wait_smem_to_gmem(0, wait_read_only=True)
          at(o_all)[...] = out.astype(jnp.bfloat16)
          plgpu.commit_smem()
          plgpu.copy_smem_to_gmem(at(o_all), o_gmem.at[pl.ds(idx[0] * CHUNK, CHUNK)])
        else:
          k_smem, v_smem = refs

        if keys_t:
          _key_state_update_t(k_smem, v_smem, mats_smem, phi_smem, at(p_all), at(ones_all),
                              s_accs, ks_accs, gram_accs, need_ks=need_ks, use_gram=use_gram,
                              in_registers=p_in_registers, at=at)
        else:
          # With Gram sums, group 2's left factor goes to p_smem (free once the outputs are done).
          left_smem = at(p_all) if use_gram else None
          if two_waits:
            _build_features_two_waits(k_smem, mats_smem, phi_smem, "k", left_smem=left_smem,
                                      at=at)
          else:
            _build_features(k_smem, mats_smem, phi_smem, "k", left_smem=left_smem, at=at,
                            first=k_first)
          for g in range(_G):
            plgpu.wgmma(s_accs[g], at(phi_smem, g).T, v_smem)
            if need_ks:
              plgpu.wgmma(ks_accs[g], at(phi_smem, g).T, at(ones_all))
          if use_gram:
            plgpu.wgmma(gram_accs[0], at(p_all).T, k_smem)             # [64, 16]
        if emit_output:
          store_bf16_state(s_accs, ks_accs, at)
        else:
          plgpu.wgmma_wait(0)
        return s_accs, ks_accs, gram_accs

      pipeline = plgpu.emit_pipeline(
          step, grid=(seg_chunks,), in_specs=in_specs,
          max_concurrent_steps=max_concurrent_steps, init_carry=(s_accs, ks_accs, gram_accs))
      s_accs, ks_accs, gram_accs = pipeline(*in_refs)
      plgpu.wait_smem_to_gmem(0)
      if emit_state:
        pl.run_scoped(
            functools.partial(_store_state, s_accs, ks_accs if emit_ks else (),
                              s_ref.at[block], None if ks_ref is None else ks_ref.at[block],
                              gram_accs),
            plgpu.SMEM((CHUNK, ncols), jnp.float32),
            plgpu.SMEM((CHUNK, _ONES_COLS), jnp.float32))

    rows = pl.ds(seg * seg_len, seg_len)
    feat_spec = plgpu.BlockSpec((CHUNK, _F), lambda i: (i, 0), transforms=_tiled())
    val_spec = plgpu.BlockSpec((CHUNK, ncols), lambda i: (i, 0), transforms=_tiled())
    in_refs = [k_ref.at[b, rows, h], v_ref.at[b, rows, h, pl.ds(col0, ncols)]]
    in_specs = [feat_spec, val_spec]
    o_gmem = None
    if emit_output:
      in_refs.insert(0, q_ref.at[b, rows, h])
      in_specs.insert(0, feat_spec)
      o_gmem = o_ref.at[b, rows, h]                                   # [seg_len, ncols]

    pl.run_scoped(
        run,
        *[plgpu.ACC((CHUNK, ncols), jnp.float32) for _ in range(_G)],
        *[plgpu.ACC((CHUNK, _ONES_COLS), jnp.float32) for _ in range(_G if need_ks else 0)],
        *[plgpu.ACC((CHUNK, _F), jnp.float32) for _ in range(1 if use_gram else 0)])

  scratch = (
      plgpu.SMEM((features.NUM_MATS, _F, 64), jnp.bfloat16, transforms=_tiled()),  # matrices
      plgpu.SMEM((_G, CHUNK, 64), jnp.bfloat16, transforms=_tiled()),      # psi(Q) / psi(K)
      plgpu.SMEM((1, CHUNK, CHUNK), jnp.bfloat16, transforms=_tiled()),    # intra-chunk P
      plgpu.SMEM((_G, CHUNK, ncols), jnp.bfloat16, transforms=_tiled()),   # bf16(S)
      plgpu.SMEM((_G, CHUNK, _ONES_COLS), jnp.bfloat16, transforms=_tiled()),  # bf16(KS)
      plgpu.SMEM((1, CHUNK, _ONES_COLS), jnp.bfloat16, transforms=_tiled()),  # all ones
      plgpu.SMEM((1, CHUNK, ncols), jnp.bfloat16, transforms=_tiled()),    # output tile
      plgpu.Barrier(num_barriers=5),
  )
  return launch(body, q, k, v, mats, init, out_type=out_type, scratch=scratch,
                num_segments=num_segments, interpret=interpret)


def launch(body, q, k, v, mats, init, *, out_type, scratch, num_segments: int, interpret,
           num_threads: int | None = None):
  """Runs `body` on the grid (h, seg, b) (and `num_threads` warpgroups named "wg" per block)
  over q, k, v, mats and, when init is not None, its four initial-state arrays."""
  batch, _, heads, _ = q.shape
  threads = {} if num_threads is None else {"num_threads": num_threads, "thread_name": "wg"}
  call = plgpu.kernel(
      body,
      out_type=out_type,
      scratch_types=scratch,
      grid=(heads, num_segments, batch),
      grid_names=("h", "seg", "b"),
      compiler_params=plgpu.CompilerParams(),
      interpret=interpret,
      **threads,
  )
  return call(q, k, v, mats, *(() if init is None else init))


def _load_initial_state(init_refs, block, s_accs, ks_accs, identity_smem, barriers,
                        s_hi, s_lo, ks_hi, ks_lo):
  """Adds I @ hi + I @ lo of each group's initial state into the zeroed accumulators."""
  num = 4 if ks_accs else 2       # key sums are skipped when nothing needs them
  stages = (s_hi, s_lo, ks_hi, ks_lo)[:num]
  for g in range(_G):
    for i, (src, dst) in enumerate(zip(init_refs[:num], stages)):
      plgpu.copy_gmem_to_smem(src.at[block, g], dst, barriers.at[1 + i])
    for i in range(num):
      plgpu.barrier_wait(barriers.at[1 + i])
    plgpu.wgmma(s_accs[g], identity_smem, s_hi)
    plgpu.wgmma(s_accs[g], identity_smem, s_lo)
    if ks_accs:
      plgpu.wgmma(ks_accs[g], identity_smem, ks_hi)
      plgpu.wgmma(ks_accs[g], identity_smem, ks_lo)
    plgpu.wgmma_wait(0)      # the stages are overwritten by the next group's copies


def _store_state(s_accs, ks_accs, s_gmem, ks_gmem, gram_accs, stage_s, stage_ks):
  """Copies the fp32 state accumulators to GMEM [3, 64, n], one group at a time (ks_accs may
  be empty: then only s is stored), then the Gram accumulator [64, 16] to ks_gmem if given."""
  for g in range(_G):
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)
    stage_s[...] = s_accs[g][...]
    if ks_accs:
      stage_ks[...] = ks_accs[g][...]
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(stage_s, s_gmem.at[g])
    if ks_accs:
      plgpu.copy_smem_to_gmem(stage_ks, ks_gmem.at[g])
  if gram_accs:
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)
    stage_ks[...] = gram_accs[0][...]
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(stage_ks, ks_gmem)
  plgpu.wait_smem_to_gmem(0)
