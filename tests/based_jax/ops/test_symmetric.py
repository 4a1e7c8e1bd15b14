"""The symmetric 153-feature form of the Taylor map and state (based_jax.ops.symmetric) against
float64 NumPy: the same attention as the 273-feature definition, exact state conversions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import ops


def _phi273_f64(x):
  """The contract's map in float64 NumPy: [1, x / 2, x_a x_b / (4 sqrt 2)] (a-major)."""
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], 256)
  return np.concatenate([np.ones(x.shape[:-1] + (1,)), x / 2, outer / (4 * np.sqrt(2))], -1)


def test_feature_map_gives_the_taylor_kernel():
  rng = np.random.default_rng()
  q, k = rng.standard_normal((2, 5, 7, 16))
  s = (q * k).sum(-1) / 4                                                   # [5, 7]
  phi = lambda x: np.asarray(ops.symmetric_feature_map(jnp.asarray(x, jnp.float32)), np.float64)
  got = np.einsum("...e,...e->...", phi(q), phi(k))                        # [5, 7]
  np.testing.assert_allclose(got, 1 + s + s * s / 2, rtol=1e-5, atol=1e-5)
  assert ops.symmetric_feature_map(jnp.zeros((3, 16))).shape == (3, ops.SYMMETRIC_DIM) == (3, 153)


def test_state_conversion_keeps_every_readout_and_round_trips_sums():
  rng = np.random.default_rng()
  s273 = rng.standard_normal((2, 3, 273, 5))                  # any state, symmetric or not
  ks273 = rng.standard_normal((2, 3, 273))
  sym = ops.to_symmetric_state(ops.LinearAttentionState(jnp.asarray(s273, jnp.float32),
                                                        jnp.asarray(ks273, jnp.float32)))
  assert sym.kv.shape == (2, 3, 153, 5) and sym.k_state.shape == (2, 3, 153)
  q = rng.standard_normal((2, 3, 16))
  phi_sym = np.asarray(ops.symmetric_feature_map(jnp.asarray(q, jnp.float32)), np.float64)
  np.testing.assert_allclose(np.einsum("bhe,bhed->bhd", phi_sym, np.asarray(sym.kv, np.float64)),
                             np.einsum("bhe,bhed->bhd", _phi273_f64(q), s273), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(np.einsum("bhe,bhe->bh", phi_sym, np.asarray(sym.k_state)),
                             np.einsum("bhe,bhe->bh", _phi273_f64(q), ks273), rtol=1e-4,
                             atol=1e-4)
  # A state that is a sum of phi(k) v^T (what every implementation returns) comes back exactly.
  k, v = rng.standard_normal((2, 3, 40, 16)), rng.standard_normal((2, 3, 40, 5))
  kv = np.einsum("bhte,bhtd->bhed", _phi273_f64(k), v)
  ks = _phi273_f64(k).sum(2)
  back = ops.from_symmetric_state(ops.to_symmetric_state(
      ops.LinearAttentionState(jnp.asarray(kv, jnp.float32), jnp.asarray(ks, jnp.float32))))
  np.testing.assert_allclose(np.asarray(back.kv), kv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(back.k_state), ks, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_recurrent_steps_on_the_symmetric_state_match_the_full_state(normalize):
  rng = np.random.default_rng()
  b, h, dv, steps = 2, 3, 8, 70
  q, k = (jnp.asarray(rng.standard_normal((steps, b, h, 16)) * 0.5, jnp.float32) for _ in "qk")
  v = jnp.asarray(rng.standard_normal((steps, b, h, dv)), jnp.float32)
  full = ops.left_pad_initial_state(jnp.array([0, 3]), h, dv)    # a state with a k_state offset
  full = ops.LinearAttentionState(full.kv + jnp.asarray(np.einsum(
      "bhe,bhd->bhed", _phi273_f64(rng.standard_normal((b, h, 16))), rng.standard_normal(
          (b, h, dv))), jnp.float32), full.k_state + 5.0)
  sym = ops.to_symmetric_state(full)
  step = jax.jit(lambda q, k, v, s: ops.recurrent_step(q, k, v, s, normalize=normalize, eps=1e-6))
  for t in range(steps):
    out_full, full = step(q[t], k[t], v[t], full)
    out_sym, sym = step(q[t], k[t], v[t], sym)
    np.testing.assert_allclose(np.asarray(out_sym), np.asarray(out_full), rtol=2e-4, atol=2e-4)
  back = ops.from_symmetric_state(sym)
  np.testing.assert_allclose(np.asarray(back.kv), np.asarray(full.kv), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(np.asarray(back.k_state), np.asarray(full.k_state), rtol=1e-5,
                             atol=1e-3)


def test_named_errors():
  with pytest.raises(ValueError, match="feature dim must be 16"):
    ops.symmetric_feature_map(jnp.zeros((2, 8)))
  with pytest.raises(ValueError, match=r"to_symmetric_state: expected kv \[..., 273, Dv\]"):
    ops.to_symmetric_state(ops.LinearAttentionState(jnp.zeros((1, 1, 153, 4)),
                                                    jnp.zeros((1, 1, 153))))
  with pytest.raises(ValueError, match=r"from_symmetric_state: expected kv \[..., 153, Dv\]"):
    ops.from_symmetric_state(ops.LinearAttentionState.zeros(1, 1, 4))
  bad = ops.LinearAttentionState(jnp.zeros((1, 1, 200, 4)), jnp.zeros((1, 1, 200)))
  with pytest.raises(ValueError, match="273 or 153 feature rows"):
    ops.recurrent_step(jnp.zeros((1, 1, 16)), jnp.zeros((1, 1, 16)), jnp.zeros((1, 1, 4)), bad,
                       normalize=True, eps=1e-6)
