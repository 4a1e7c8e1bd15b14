"""Selective scan: the sequential reference, the chunked parallel scan and the one-step update
vs a float64 NumPy loop written here from the recurrence; memory stays O(L)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from based_jax.mamba import ssm


def numpy_scan(u, delta, a, b, c, d, h0=None):
  """float64 loop: h_t = exp(delta_t a) h_{t-1} + delta_t b_t u_t; y_t = c_t . h_t + d u_t."""
  u, delta, a, b, c, d = (np.asarray(x, np.float64) for x in (u, delta, a, b, c, d))
  bsz, length, ch = u.shape
  h = np.zeros((bsz, ch, a.shape[1])) if h0 is None else np.array(h0, np.float64)
  y = np.zeros((bsz, length, ch))
  for t in range(length):
    for i in range(bsz):
      h[i] = np.exp(delta[i, t][:, None] * a) * h[i] + np.outer(delta[i, t] * u[i, t], b[i, t])
      y[i, t] = h[i] @ c[i, t] + d * u[i, t]
  return y, h


def random_inputs(rng, bsz, length, ch, n):
  u = rng.standard_normal((bsz, length, ch)).astype(np.float32)
  delta = np.log1p(np.exp(rng.standard_normal((bsz, length, ch)) - 2)).astype(np.float32)
  a = -np.exp(rng.uniform(0, 2.5, (ch, n))).astype(np.float32)
  b = rng.standard_normal((bsz, length, n)).astype(np.float32)
  c = rng.standard_normal((bsz, length, n)).astype(np.float32)
  d = rng.standard_normal(ch).astype(np.float32)
  return u, delta, a, b, c, d


def rel(got, want):
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("length,chunk", [(1, 64), (7, 4), (37, 8), (64, 16), (65, 64)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunked_and_reference_match_numpy(length, chunk, with_h0):
  rng = np.random.default_rng()
  args = random_inputs(rng, 2, length, 5, 3)
  h0 = rng.standard_normal((2, 5, 3)).astype(np.float32) if with_h0 else None
  want_y, want_h = numpy_scan(*args, h0)
  jargs = [jnp.asarray(x) for x in args]
  jh0 = None if h0 is None else jnp.asarray(h0)
  y_ref, h_ref = ssm.selective_scan_reference(*jargs, jh0)
  y_chk, h_chk = ssm.selective_scan_chunked(*jargs, jh0, chunk=chunk)
  for name, got, want in (("ref y", y_ref, want_y), ("ref h", h_ref, want_h),
                          ("chunked y", y_chk, want_y), ("chunked h", h_chk, want_h)):
    assert got.dtype == jnp.float32
    assert got.shape == want.shape, name
    assert rel(got, want) < 2e-6, f"{name}: {rel(got, want):.2e}"


def test_steps_continue_a_prefix_scan():
  rng = np.random.default_rng()
  u, delta, a, b, c, d = random_inputs(rng, 3, 21, 4, 6)
  want_y, want_h = numpy_scan(u, delta, a, b, c, d)
  _, h = ssm.selective_scan_chunked(*(jnp.asarray(x) for x in (u[:, :9], delta[:, :9], a,
                                                                b[:, :9], c[:, :9], d)), chunk=4)
  step = jax.jit(ssm.selective_scan_step)
  for t in range(9, 21):
    y, h = step(jnp.asarray(u[:, t]), jnp.asarray(delta[:, t]), jnp.asarray(a),
                                   jnp.asarray(b[:, t]), jnp.asarray(c[:, t]), jnp.asarray(d), h)
    assert rel(y, want_y[:, t]) < 2e-6, t
  assert rel(h, want_h) < 2e-6


def test_zero_delta_leaves_state_and_adds_nothing():
  """delta = 0 steps (left padding) are invisible to the state."""
  rng = np.random.default_rng()
  u, delta, a, b, c, d = random_inputs(rng, 1, 12, 3, 2)
  delta[:, :5] = 0.0
  _, h_full = ssm.selective_scan_chunked(*(jnp.asarray(x) for x in (u, delta, a, b, c, d)), chunk=4)
  _, want = numpy_scan(u[:, 5:], delta[:, 5:], a, b[:, 5:], c[:, 5:], d)
  assert rel(h_full, want) < 2e-6


def test_chunked_never_materialises_the_whole_state_sequence():
  """At L = 4096 no intermediate of the chunked scan is as large as [B, L, C, N]."""
  bsz, length, ch, n = 1, 4096, 32, 16
  shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in
            ((bsz, length, ch), (bsz, length, ch), (ch, n), (bsz, length, n), (bsz, length, n),
             (ch,))]
  jaxpr = jax.make_jaxpr(lambda *x: ssm.selective_scan_chunked(*x, chunk=64))(*shapes)
  sizes = []

  def walk(jp):
    for eqn in jp.eqns:
      sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jaxpr.jaxpr)
  assert max(sizes) < bsz * length * ch * n // 8, max(sizes)


def test_bad_shapes_and_impl_raise_named_errors():
  rng = np.random.default_rng(0)
  u, delta, a, b, c, d = (jnp.asarray(x) for x in random_inputs(rng, 1, 4, 3, 2))
  with pytest.raises(ValueError, match=r"delta must have shape \(1, 4, 3\)"):
    ssm.selective_scan_chunked(u, delta[:, :3], a, b, c, d)
  with pytest.raises(ValueError, match="h0 must have shape"):
    ssm.selective_scan_reference(u, delta, a, b, c, d, jnp.zeros((1, 3, 5)))
  with pytest.raises(ValueError, match="u must have shape"):
    ssm.selective_scan_reference(u[0], delta, a, b, c, d)
  with pytest.raises(ValueError, match="chunk must be a positive int"):
    ssm.selective_scan_chunked(u, delta, a, b, c, d, chunk=0)
  with pytest.raises(ValueError, match="impl must be"):
    ssm.selective_scan(u, delta, a, b, c, d, impl="pallas")
