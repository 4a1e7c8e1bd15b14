"""The Pallas kernel on a Hopper GPU against a float64 NumPy oracle (gpu-marked; H200 in CI-less
runs through the device tool). Fresh random inputs each run; outputs are checked for NaN and per
row, so an unwritten tile fails; one case has more than 2^31 output elements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from based_jax.ops.chunked import chunked_linear_attention
from based_jax.ops.state import LinearAttentionState
from tests.float64_reference import linear_attention_f64, rel_err
from tests.pallas_kernels.numpy_reference import prefill_state, random_case, random_inputs

pytestmark = pytest.mark.gpu
TOL = 1e-2



_run = jax.jit(lambda q, k, v, state, normalize: pallas_kernels.linear_attention(
    q, k, v, normalize=normalize, eps=1e-6, initial_state=state), static_argnums=4)


def _check(out, final, ref):
  ref_out, ref_kv, ref_ks = ref
  out = np.asarray(out, np.float64)
  assert np.all(np.isfinite(out)), "NaN/inf in the output (unwritten tile?)"
  assert rel_err(out, ref_out) <= TOL
  rows = np.linalg.norm(out - ref_out, axis=-1) / (np.linalg.norm(ref_out, axis=-1) + 1e-30)
  assert float(rows.max()) <= 5 * TOL, f"worst token error {rows.max():.3g}"
  assert rel_err(final.kv, ref_kv) <= TOL
  assert rel_err(final.k_state, ref_ks) <= TOL


def test_available_on_hopper():
  rng = np.random.default_rng()
  assert pallas_kernels.unavailable_reason(*random_inputs(rng, 1, 64, 1, 64)) is None


@pytest.mark.parametrize("b,length,h,dv,normalize,with_state", [
    (1, 1, 16, 64, True, False),
    (1, 63, 16, 112, False, False),
    (1, 65, 16, 64, False, True),
    (1, 1000, 16, 112, True, True),
    (1, 8192, 16, 64, True, False),
    (2, 8192, 16, 64, False, True),
    (1, 131072, 2, 64, True, False),
])
def test_matches_float64(b, length, h, dv, normalize, with_state):
  rng = np.random.default_rng()
  q, k, v, kv0, ks0, state = random_case(rng, b, length, h, dv, with_state)
  out, final = _run(q, k, v, state, normalize)
  _check(out, final, linear_attention_f64(q, k, v, normalize=normalize, eps=1e-6, kv0=kv0,
                                          ks0=ks0))


@pytest.mark.parametrize("staging", ["smem", "p_registers", "smem_t"])  # "registers": the default
@pytest.mark.parametrize("b,length,h,dv,normalize,with_state", [
    (1, 65, 16, 64, False, True),
    (1, 1000, 16, 112, True, True),
    (2, 8192, 16, 64, False, False),
    (1, 4097, 4, 64, True, False),
])
def test_operand_staging_matches_float64(staging, b, length, h, dv, normalize, with_state):
  """The non-default KernelConfig.operand_staging choices (the default, "registers", runs in
  test_matches_float64): the session-5 shared-memory path, P alone from registers, and the
  shared-memory mirror of the register path."""
  from pallas_kernels import based_attention as ba

  rng = np.random.default_rng()
  q, k, v, kv0, ks0, state = random_case(rng, b, length, h, dv, with_state)
  config = ba.KernelConfig(operand_staging=staging)
  out, final = jax.jit(lambda q, k, v, state: ba.linear_attention(
      q, k, v, normalize=normalize, eps=1e-6, initial_state=state, config=config))(q, k, v, state)
  _check(out, final, linear_attention_f64(q, k, v, normalize=normalize, eps=1e-6, kv0=kv0,
                                          ks0=ks0))


def test_deterministic():
  """Same inputs twice -> bitwise the same output (a race would usually show here)."""
  rng = np.random.default_rng()
  q, k, v = random_inputs(rng, 3, 4096, 16, 64)
  a, sa = _run(q, k, v, None, True)
  b, sb = _run(q, k, v, None, True)
  assert np.array_equal(np.asarray(a), np.asarray(b))
  assert np.array_equal(np.asarray(sa.kv), np.asarray(sb.kv))


def test_more_than_2_pow_31_output_elements():
  b, length, h, dv = 132, 16384, 16, 64          # 2.2e9 output elements
  assert b * length * h * dv > 2**31
  key = jax.random.key(np.random.default_rng().integers(1 << 30))
  kq, kk, kv_ = jax.random.split(key, 3)
  q = (jax.random.normal(kq, (b, length, h, 16), jnp.float32) * 0.5).astype(jnp.bfloat16)
  k = (jax.random.normal(kk, (b, length, h, 16), jnp.float32) * 0.5).astype(jnp.bfloat16)
  v = jax.random.normal(kv_, (b, length, h, dv), jnp.bfloat16)
  out, final = _run(q, k, v, None, False)
  assert not bool(jnp.isnan(out).any())
  for bi, hi in ((0, 0), (b - 1, h - 1), (b - 1, 0)):
    sl = lambda x: np.asarray(x[bi:bi + 1, :, hi:hi + 1])
    ref = linear_attention_f64(sl(q), sl(k), sl(v), normalize=False, eps=1e-6)
    got_out = np.asarray(out[bi:bi + 1, :, hi:hi + 1])
    got_state = LinearAttentionState(final.kv[bi:bi + 1, hi:hi + 1],
                                     final.k_state[bi:bi + 1, hi:hi + 1])
    _check(got_out, got_state, ref)


def test_grad_matches_xla_path():
  rng = np.random.default_rng()
  q, k, v = random_inputs(rng, 1, 1000, 2, 64)
  kv0, ks0 = (jnp.asarray(x, jnp.float32) for x in prefill_state(rng, 1, 2, 64))
  w = jnp.asarray(rng.standard_normal((1, 1000, 2, 64)), jnp.float32)

  def loss(fn, q, k, v, kv0, ks0):
    out, state = fn(q, k, v, normalize=True, eps=1e-6,
                    initial_state=LinearAttentionState(kv0, ks0))
    return jnp.sum(out.astype(jnp.float32) * w) + 1e-3 * jnp.sum(state.kv)

  args = (q, k, v, kv0, ks0)
  got = jax.jit(jax.grad(lambda *a: loss(pallas_kernels.linear_attention, *a),
                         argnums=(0, 1, 2, 3, 4)))(*args)
  want = jax.jit(jax.grad(lambda *a: loss(chunked_linear_attention, *a),
                          argnums=(0, 1, 2, 3, 4)))(*args)
  for g, r in zip(got, want):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    assert np.all(np.isfinite(g)) and np.linalg.norm(r) > 0
    assert np.linalg.norm(g - r) <= 1e-2 * np.linalg.norm(r)
