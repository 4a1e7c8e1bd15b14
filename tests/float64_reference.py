"""The float64 NumPy oracle of Based linear attention that every test of the hot path compares to.

Written from the math (docs/design.md), independent of JAX and of every implementation under test:
  phi(x) = [1, x / 2, vec(x x^T) / (4 sqrt 2)]        (273 features, 16-dim x)
  out_i  = sum_{j <= i} (1 + s_ij + s_ij^2 / 2) v_j + phi(q_i) . kv0,   s_ij = q_i . k_j / 4
  den_i  = sum_{j <= i} (1 + s_ij + s_ij^2 / 2)     + phi(q_i) . ks0
  out_i / (den_i + eps) if normalize;  kv = kv0 + sum_j phi(k_j) v_j^T;  ks = ks0 + sum_j phi(k_j)
Within a chunk the Taylor kernel is used directly (no feature map); across chunks the running
state in the 273-feature layout, so memory is linear in L for long sequences.
"""

import numpy as np

EXPANDED = 273


def phi64(x):
  """[..., 16] -> [..., 273] float64, written out term by term."""
  x = np.asarray(x).astype(np.float64)
  f = x.shape[-1]
  quad = np.einsum("...i,...j->...ij", x, x).reshape(*x.shape[:-1], f * f)  # [..., F*F]
  return np.concatenate([np.ones((*x.shape[:-1], 1)), x / 2, quad / (4 * np.sqrt(2))], axis=-1)


def linear_attention_f64(q, k, v, *, normalize: bool, eps: float, kv0=None, ks0=None,
                         chunk: int = 256):
  """q, k [B, L, H, 16], v [B, L, H, Dv] (any float dtype NumPy can read) -> float64
  (out [B, L, H, Dv], kv [B, H, 273, Dv], ks [B, H, 273])."""
  q, k, v = (np.asarray(x).astype(np.float64) for x in (q, k, v))   # JAX bf16 arrays too
  b, length, h, _ = q.shape
  dv = v.shape[-1]
  kv = np.zeros((b, h, EXPANDED, dv)) if kv0 is None else np.array(kv0, np.float64)
  ks = np.zeros((b, h, EXPANDED)) if ks0 is None else np.array(ks0, np.float64)
  out = np.empty((b, length, h, dv))
  for start in range(0, length, chunk):
    sl = slice(start, min(start + chunk, length))
    s = np.einsum("bihf,bjhf->bhij", q[:, sl], k[:, sl]) / 4.0               # [B, H, C, C]
    a = np.tril(1.0 + s + 0.5 * s * s)                                        # [B, H, C, C]
    pq, pk = phi64(q[:, sl]), phi64(k[:, sl])                                 # [B, C, H, 273]
    num = (np.einsum("bhij,bjhd->bihd", a, v[:, sl])
           + np.einsum("bihe,bhed->bihd", pq, kv))                            # [B, C, H, Dv]
    if normalize:
      den = a.sum(-1).transpose(0, 2, 1) + np.einsum("bihe,bhe->bih", pq, ks)  # [B, C, H]
      num = num / (den[..., None] + eps)
    out[:, sl] = num
    kv = kv + np.einsum("bjhe,bjhd->bhed", pk, v[:, sl])                      # [B, H, 273, Dv]
    ks = ks + pk.sum(1)                                                       # [B, H, 273]
  return out, kv, ks


def rel_err(x, ref) -> float:
  """||x - ref|| / ||ref|| in float64; inf when x holds NaN or inf (unwritten or poisoned)."""
  x = np.asarray(x).astype(np.float64)
  if not np.all(np.isfinite(x)):
    return float("inf")
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
