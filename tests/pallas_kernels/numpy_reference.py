"""Float64 NumPy oracle for Based linear attention, independent of JAX and of the kernel.

Chunked exactly (float64 sums): per chunk, out = tril(phi(Q) phi(K)^T) V + phi(Q) S, then
S += phi(K)^T V, with phi the contract's 273-feature map. Memory is linear in L.
"""

import numpy as np

from pallas_kernels.based_attention.features import phi_numpy


def linear_attention_f64(q, k, v, *, normalize: bool, eps: float, kv0=None, ks0=None,
                         chunk: int = 256):
  """q, k [B, L, H, 16], v [B, L, H, Dv] (any float) -> (out [B, L, H, Dv], kv [B, H, 273, Dv],
  ks [B, H, 273]) in float64."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, length, h, _ = q.shape
  dv = v.shape[-1]
  kv = np.zeros((b, h, 273, dv)) if kv0 is None else np.array(kv0, np.float64)
  ks = np.zeros((b, h, 273)) if ks0 is None else np.array(ks0, np.float64)
  out = np.empty((b, length, h, dv))
  for start in range(0, length, chunk):
    sl = slice(start, min(start + chunk, length))
    pq = phi_numpy(q[:, sl])                                   # [B, C, H, 273]
    pk = phi_numpy(k[:, sl])                                   # [B, C, H, 273]
    c = pq.shape[1]
    scores = np.einsum("bihe,bjhe->bhij", pq, pk, optimize=True)     # [B, H, C, C]
    scores = scores * np.tril(np.ones((c, c)))
    num = (np.einsum("bhij,bjhd->bihd", scores, v[:, sl], optimize=True)
           + np.einsum("bihe,bhed->bihd", pq, kv, optimize=True))      # [B, C, H, Dv]
    if normalize:
      den = (scores.sum(-1).transpose(0, 2, 1)
             + np.einsum("bihe,bhe->bih", pq, ks, optimize=True))     # [B, C, H]
      num = num / (den[..., None] + eps)
    out[:, sl] = num
    kv = kv + np.einsum("bjhe,bjhd->bhed", pk, v[:, sl], optimize=True)      # [B, H, 273, Dv]
    ks = ks + pk.sum(1)                                        # [B, H, 273]
  return out, kv, ks


def rel_err(x, ref) -> float:
  """||x - ref|| / ||ref|| in float64 (inf if x has NaN)."""
  x = np.asarray(x, np.float64)
  if not np.all(np.isfinite(x)):
    return float("inf")
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def random_inputs(rng, b: int, length: int, h: int, dv: int):
  """Fresh bf16 q, k ([B, L, H, 16], scale 0.5) and v ([B, L, H, Dv]) as JAX arrays."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  q = jnp.asarray(rng.standard_normal((b, length, h, 16), np.float32) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((b, length, h, 16), np.float32) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((b, length, h, dv), np.float32), jnp.bfloat16)
  return q, k, v


def prefill_state(rng, b: int, h: int, dv: int, length: int = 300):
  """A realistic initial state: (kv [B, H, 273, Dv], ks [B, H, 273]) of an earlier prefill."""
  k = rng.standard_normal((b, length, h, 16)) * 0.5
  v = rng.standard_normal((b, length, h, dv))
  _, kv, ks = linear_attention_f64(k, k, v, normalize=False, eps=0.0)
  return kv, ks


def random_case(rng, b: int, length: int, h: int, dv: int, with_state: bool):
  """(q, k, v, kv0, ks0, state): fresh inputs and, if asked, a prefill initial state (kv0, ks0 as
  float64 NumPy for the oracle, state as a float32 LinearAttentionState); else None x 3."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from based_jax.ops.state import LinearAttentionState  # pylint: disable=g-import-not-at-top

  q, k, v = random_inputs(rng, b, length, h, dv)
  if not with_state:
    return q, k, v, None, None, None
  kv0, ks0 = prefill_state(rng, b, h, dv)
  state = LinearAttentionState(jnp.asarray(kv0, jnp.float32), jnp.asarray(ks0, jnp.float32))
  return q, k, v, kv0, ks0, state
