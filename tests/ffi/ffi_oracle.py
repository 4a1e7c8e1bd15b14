"""Float64 NumPy oracle for the ffi tests: the quadratic definition of Based linear attention."""

import jax
import jax.numpy as jnp
import numpy as np


def phi64(x):
  """[..., 16] -> [..., 273] float64: [1, x/2, vec(x x^T)/(4 sqrt 2)]."""
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], 256)
  return np.concatenate([np.ones(x.shape[:-1] + (1,)), x / 2, outer / (4 * np.sqrt(2))], axis=-1)


def oracle(q, k, v, *, normalize, eps, kv0=None, ks0=None):
  """Quadratic float64 definition: (out [B, L, H, Dv], kv [B, H, 273, Dv], ks [B, H, 273])."""
  q, k, v = (np.asarray(jnp.asarray(x, jnp.float32), np.float64) for x in (q, k, v))
  length = q.shape[1]
  s = np.einsum("bihf,bjhf->bhij", q, k) / 4  # [B, H, L, L]
  a = (1 + s + s * s / 2) * np.tril(np.ones((length, length)))  # [B, H, L, L]
  num = np.einsum("bhij,bjhd->bihd", a, v)  # [B, L, H, Dv]
  den = a.sum(-1).transpose(0, 2, 1)  # [B, L, H]
  pk = phi64(k)  # [B, L, H, E]
  kv = np.einsum("bjhe,bjhd->bhed", pk, v)  # [B, H, E, Dv]
  ks = pk.sum(1)  # [B, H, E]
  if kv0 is not None:
    kv0, ks0 = np.asarray(kv0, np.float64), np.asarray(ks0, np.float64)
    pq = phi64(q)  # [B, L, H, E]
    num = num + np.einsum("bihe,bhed->bihd", pq, kv0)
    den = den + np.einsum("bihe,bhe->bih", pq, ks0)
    kv, ks = kv + kv0, ks + ks0
  out = num / (den[..., None] + eps) if normalize else num
  return out, kv, ks


def rel_err(x, ref):
  """||x - ref|| / ||ref|| in float64; fails on non-finite values."""
  x = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  assert np.all(np.isfinite(x)), "non-finite values (unwritten or poisoned elements)"
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def draw_inputs(seed, b, length, h, dv, *, with_state):
  """Random bf16 q, k, v and an initial state summed over a real random prefix of 37 tokens."""
  keys = jax.random.split(jax.random.key(seed), 6)
  q = jax.random.normal(keys[0], (b, length, h, 16), jnp.bfloat16)  # [B, L, H, F]
  k = jax.random.normal(keys[1], (b, length, h, 16), jnp.bfloat16)  # [B, L, H, F]
  v = jax.random.normal(keys[2], (b, length, h, dv), jnp.bfloat16)  # [B, L, H, Dv]
  if not with_state:
    return q, k, v, None
  kp = np.asarray(jax.random.normal(keys[3], (b, 37, h, 16)), np.float64)  # [B, P, H, F]
  vp = np.asarray(jax.random.normal(keys[4], (b, 37, h, dv)), np.float64)  # [B, P, H, Dv]
  pk = phi64(kp)  # [B, P, H, E]
  kv0 = np.einsum("bjhe,bjhd->bhed", pk, vp).astype(np.float32)  # [B, H, E, Dv]
  ks0 = pk.sum(1).astype(np.float32)  # [B, H, E]
  return q, k, v, (kv0, ks0)
