"""Random inputs and initial states for the Pallas kernel tests; the float64 oracle they are
compared to is tests/float64_reference.py."""

import numpy as np

from tests.float64_reference import linear_attention_f64


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
