"""Pure-JAX mirror of the Pallas kernel (`kernel.segment_call`): same arguments, same outputs.

It follows the kernel step for step in XLA ops (psi features from the same matrices, bf16
rounding of psi, of the intra-chunk scores P and of the running state where the kernel rounds
them, fp32 accumulation), so `api.forward(..., backend="reference")` runs the whole wrapper
(padding, segment planning and combine, column blocks, state layouts) on any backend. The
oracle for both is the float64 NumPy code in tests/pallas_kernels/numpy_reference.py.
"""

import jax
import jax.numpy as jnp

from pallas_kernels.based_attention import features
from pallas_kernels.based_attention.config import CHUNK

_HI = jax.lax.Precision.HIGHEST


def left2(x, mats):
  """Group 2's left factor [x, 1, ..., 1] [..., 64] of x [..., 16] f32 (also the kernel's Gram
  operand)."""
  m = mats[features.MAT_LEFT2].astype(jnp.float32)                        # [16, 64]
  return jnp.einsum("...f,fj->...j", x, m, precision=_HI) + (jnp.arange(64) >= 16)


def psi(x, mats, side: str):
  """psi_q (side "q") or psi_k (side "k") of x [..., 16] f32 built from mats [7, 16, 64]."""
  m = mats.astype(jnp.float32)
  shift0 = features.MAT_SHIFT0_Q if side == "q" else features.MAT_SHIFT0_K
  right2 = features.MAT_RIGHT2_Q if side == "q" else features.MAT_RIGHT2_K
  mm = lambda i: jnp.einsum("...f,fj->...j", x, m[i], precision=_HI)      # [..., 64]
  j = jnp.arange(64)
  tile = mm(features.MAT_TILE)
  g0 = tile * mm(shift0)
  g1 = tile * mm(features.MAT_SHIFT1)
  g2 = left2(x, mats) * (mm(right2) + (j == 32))
  return jnp.concatenate([g0, g1, g2], axis=-1)                           # [..., 192]


def segment_call(q, k, v, mats, init=None, *, num_segments: int, col0: int, ncols: int,
                 normalize: bool, eps: float, emit_output: bool, emit_state: bool,
                 max_concurrent_steps: int = 2, key_sums: bool = True, gram_sums: bool = False,
                 two_waits: bool = False, interpret=None):
  """Same contract as kernel.segment_call (see there for shapes)."""
  del max_concurrent_steps, two_waits, interpret
  b, length, h, _ = q.shape
  nseg = num_segments
  nc = length // (nseg * CHUNK)
  f32, bf16 = jnp.float32, jnp.bfloat16

  def chunks(x):          # [B, Lp, H, D] -> [B, H, S, N, C, D]
    x = x.reshape(b, nseg, nc, CHUNK, h, x.shape[-1])
    return x.transpose(0, 4, 1, 2, 3, 5)

  qc = chunks(q).astype(f32)                                              # [B, H, S, N, C, 16]
  kc = chunks(k).astype(f32)                                              # [B, H, S, N, C, 16]
  vc = chunks(v[..., col0:col0 + ncols])                                  # [B, H, S, N, C, n]
  psi_k = psi(kc, mats, "k").astype(bf16)                                 # [B, H, S, N, C, 192]
  d_s = jnp.einsum("bhsncf,bhsncd->bhsnfd", psi_k, vc,
                   preferred_element_type=f32)                            # [B, H, S, N, 192, n]
  d_ks = jnp.sum(psi_k.astype(f32), axis=4)                               # [B, H, S, N, 192]

  if init is None:
    s0 = jnp.zeros((b, h, nseg, features.PSI_DIM, ncols), f32)
    ks0 = jnp.zeros((b, h, nseg, features.PSI_DIM), f32)
  else:
    s_hi, s_lo = init[:2]
    s0 = (s_hi.astype(f32) + s_lo.astype(f32)).reshape(b, h, nseg, features.PSI_DIM, ncols)
    ks0 = jnp.zeros((b, h, nseg, features.PSI_DIM), f32)
    if len(init) == 4:              # (s_hi, s_lo) alone when no psi key sums are carried
      ks_hi, ks_lo = init[2:]
      ks0 = (ks_hi.astype(f32) + ks_lo.astype(f32))[..., 0].reshape(b, h, nseg, features.PSI_DIM)

  incl_s = jnp.cumsum(d_s, axis=3)                                        # [B, H, S, N, 192, n]
  incl_ks = jnp.cumsum(d_ks, axis=3)                                      # [B, H, S, N, 192]
  results = []
  if emit_output:
    before_s = (s0[:, :, :, None] + incl_s - d_s).astype(bf16)           # [B, H, S, N, 192, n]
    before_ks = (ks0[:, :, :, None] + incl_ks - d_ks).astype(bf16)       # [B, H, S, N, 192]
    psi_q = psi(qc, mats, "q").astype(bf16)                               # [B, H, S, N, C, 192]
    scores = jnp.einsum("bhsnif,bhsnjf->bhsnij", qc.astype(bf16), kc.astype(bf16),
                        preferred_element_type=f32) * 0.25                # [B, H, S, N, C, C]
    causal = jnp.tril(jnp.ones((CHUNK, CHUNK), bool))
    p = jnp.where(causal, 1.0 + scores + 0.5 * scores * scores, 0.0).astype(bf16)
    out = (jnp.einsum("bhsncf,bhsnfd->bhsncd", psi_q, before_s, preferred_element_type=f32)
           + jnp.einsum("bhsnij,bhsnjd->bhsnid", p, vc, preferred_element_type=f32))
    if normalize:
      den = (jnp.einsum("bhsncf,bhsnf->bhsnc", psi_q, before_ks, preferred_element_type=f32)
             + jnp.sum(p.astype(f32), axis=-1))                           # [B, H, S, N, C]
      out = out / (den[..., None] + eps)
    out = out.astype(bf16).transpose(0, 2, 3, 4, 1, 5)                    # [B, S, N, C, H, n]
    results.append(out.reshape(b, length, h, ncols))
  if emit_state:
    end_s = s0 + incl_s[:, :, :, -1]                                      # [B, H, S, 192, n]
    end_ks = ks0 + incl_ks[:, :, :, -1]                                   # [B, H, S, 192]
    results.append(end_s.reshape(b * h * nseg, features.PSI_GROUPS, CHUNK, ncols))
    if key_sums and gram_sums:        # sum_t [k_t, 1, ..., 1] k_t^T, initial state not included
      gram = jnp.einsum("bhsncj,bhsncf->bhsjf", left2(kc, mats), kc,
                        precision=_HI)                                    # [B, H, S, 64, 16]
      results.append(gram.reshape(b * h * nseg, CHUNK, 16))
    elif key_sums:
      end_ks = jnp.broadcast_to(end_ks[..., None], end_ks.shape + (16,))  # [B, H, S, 192, 16]
      results.append(end_ks.reshape(b * h * nseg, features.PSI_GROUPS, CHUNK, 16))
  return tuple(results)
