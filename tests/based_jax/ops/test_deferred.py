"""Deferred state writes (based_jax.ops.deferred) against a float64 NumPy recurrence and against
recurrent_step: the same outputs, and the state each iteration writes is recurrent_step's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import ops


def _phi273_f64(x):
  """The contract's map in float64 NumPy: [1, x / 2, x_a x_b / (4 sqrt 2)] (a-major)."""
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], 256)
  return np.concatenate([np.ones(x.shape[:-1] + (1,)), x / 2, outer / (4 * np.sqrt(2))], -1)


def _inputs(rng, steps, b=2, h=3, dv=8):
  q, k = (rng.standard_normal((steps, b, h, 16)) * 0.5 for _ in "qk")
  v = rng.standard_normal((steps, b, h, dv))
  kv0 = np.einsum("bhe,bhd->bhed", _phi273_f64(rng.standard_normal((b, h, 16))),
                  rng.standard_normal((b, h, dv)))                   # a real prefix state
  ks0 = _phi273_f64(rng.standard_normal((b, h, 16))) + 2.0
  return q, k, v, kv0, ks0


def _reference_f64(q, k, v, kv0, ks0, normalize, eps):
  """Per-step outputs of the recurrence in float64: [T, B, H, Dv]."""
  kv, ks, outs = kv0.copy(), ks0.copy(), []
  for t in range(q.shape[0]):
    phi_q, phi_k = _phi273_f64(q[t]), _phi273_f64(k[t])
    kv = kv + phi_k[..., :, None] * v[t][..., None, :]
    ks = ks + phi_k
    num = np.einsum("bhe,bhed->bhd", phi_q, kv)
    den = np.einsum("bhe,bhe->bh", phi_q, ks)
    outs.append(num / (den[..., None] + eps) if normalize else num)
  return np.stack(outs)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("layout", ["full", "symmetric"])
@pytest.mark.parametrize("unroll", [1, 2, 4])
def test_deferred_steps_match_the_recurrence(normalize, layout, unroll):
  """Three iterations of `unroll` steps: every output within float32 rounding of the float64
  recurrence, and the state after each iteration equal to recurrent_step's, step for step."""
  rng = np.random.default_rng()
  steps = 3 * unroll
  q, k, v, kv0, ks0 = _inputs(rng, steps)
  state = ops.LinearAttentionState(jnp.asarray(kv0, jnp.float32), jnp.asarray(ks0, jnp.float32))
  if layout == "symmetric":
    state = ops.to_symmetric_state(state)
  deferred = ops.defer_writes(state, unroll - 1)
  plain = state
  step = jax.jit(lambda q, k, v, s: ops.recurrent_step(q, k, v, s, normalize=normalize, eps=1e-6))
  deferred_step = jax.jit(lambda q, k, v, s: ops.deferred_recurrent_step(
      q, k, v, s, normalize=normalize, eps=1e-6))
  want = _reference_f64(q, k, v, kv0, ks0, normalize, 1e-6)
  as32 = lambda x: jnp.asarray(x, jnp.float32)
  for t in range(steps):
    out, deferred = deferred_step(as32(q[t]), as32(k[t]), as32(v[t]), deferred)
    _, plain = step(as32(q[t]), as32(k[t]), as32(v[t]), plain)
    np.testing.assert_allclose(np.asarray(out, np.float64), want[t], rtol=2e-4, atol=2e-4)
    assert deferred.filled == (t + 1) % unroll
    if deferred.filled == 0:   # written this step: recurrent_step's state
      np.testing.assert_allclose(np.asarray(deferred.state.kv), np.asarray(plain.kv), rtol=1e-6,
                                 atol=1e-6)
      np.testing.assert_allclose(np.asarray(deferred.state.k_state),
                                 np.asarray(plain.k_state), rtol=1e-6, atol=1e-6)


def test_deferred_state_is_only_read_between_writes():
  """Before the iteration's last step the state arrays are the ones it started from."""
  rng = np.random.default_rng()
  q, k, v, kv0, ks0 = _inputs(rng, 3)
  state = ops.LinearAttentionState(jnp.asarray(kv0, jnp.float32), jnp.asarray(ks0, jnp.float32))
  deferred = ops.defer_writes(state, 2)
  as32 = lambda x: jnp.asarray(x, jnp.float32)
  for t in range(2):
    _, deferred = ops.deferred_recurrent_step(as32(q[t]), as32(k[t]), as32(v[t]), deferred,
                                              normalize=True, eps=1e-6)
    assert deferred.state.kv is state.kv and deferred.state.k_state is state.k_state
  np.testing.assert_array_equal(np.asarray(deferred.pending_k), np.moveaxis(
      np.asarray(as32(k[:2])), 0, 2))
  _, deferred = ops.deferred_recurrent_step(as32(q[2]), as32(k[2]), as32(v[2]), deferred,
                                            normalize=True, eps=1e-6)
  assert deferred.filled == 0 and deferred.state.kv is not state.kv


def test_named_errors():
  state = ops.LinearAttentionState(jnp.zeros((1, 1, 100, 4)), jnp.zeros((1, 1, 100)))
  with pytest.raises(ValueError, match="deferred_recurrent_step: state.kv must have 273 or 153"):
    ops.deferred_recurrent_step(jnp.zeros((1, 1, 16)), jnp.zeros((1, 1, 16)), jnp.zeros((1, 1, 4)),
                                ops.defer_writes(state, 1), normalize=True, eps=1e-6)
  with pytest.raises(ValueError, match="capacity must be an int >= 0"):
    ops.defer_writes(state, -1)
