"""Random inputs for the ffi tests (the float64 oracle itself is tests/float64_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.float64_reference import phi64


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
