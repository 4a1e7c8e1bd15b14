"""The linear-attention references and the dispatch point, against float64 NumPy."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import ops
from based_jax.ops import LinearAttentionState
from tests.float64_reference import linear_attention_f64, phi64

# (B, L, H, Dv): L=1 is a single decode-like token; 63/65 straddle the 64-token chunk; 200 spans
# several chunks with a ragged tail; Dv=7 is deliberately not a multiple of anything.
CASES = [(1, 1, 1, 8), (2, 7, 3, 16), (1, 63, 2, 8), (2, 65, 2, 7), (1, 200, 2, 12)]
XLA_IMPLS = ("reference", "chunked")


def _inputs(rng, b, length, h, dv, dtype=np.float32):
  q = rng.standard_normal((b, length, h, 16)).astype(dtype)
  k = rng.standard_normal((b, length, h, 16)).astype(dtype)
  v = rng.standard_normal((b, length, h, dv)).astype(dtype)
  return q, k, v


def _rel(got, want):
  got = np.asarray(got, np.float64)
  return np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)


def test_feature_map_inner_product_is_second_order_taylor():
  rng = np.random.default_rng()
  x, y = rng.standard_normal((2, 50, 16)).astype(np.float32)
  got = jnp.einsum("ne,ne->n", ops.taylor_feature_map(jnp.asarray(x)),
                   ops.taylor_feature_map(jnp.asarray(y)), precision="highest")
  s = np.einsum("nf,nf->n", x.astype(np.float64), y.astype(np.float64)) / 4.0
  np.testing.assert_allclose(np.asarray(got), 1.0 + s + s * s / 2.0, rtol=1e-5, atol=1e-5)
  assert ops.taylor_feature_map(jnp.zeros((3, 16))).shape == (3, ops.EXPANDED_DIM)


def test_feature_map_layout_matches_the_state_convention():
  rng = np.random.default_rng()
  x = rng.standard_normal((4, 16)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(ops.taylor_feature_map(jnp.asarray(x))), phi64(x),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", XLA_IMPLS)
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "numerator"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-L{}-H{}-Dv{}".format(*c))
def test_matches_float64(impl, normalize, case):
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, *case)
  want, want_kv, want_ks = linear_attention_f64(q, k, v, normalize=normalize, eps=1e-12)
  out, state = jax.jit(lambda q, k, v: ops.linear_attention(
      q, k, v, normalize=normalize, eps=1e-12, impl=impl))(q, k, v)
  assert out.shape == v.shape and out.dtype == jnp.float32
  assert _rel(out, want) <= 1e-5, f"{impl}: out rel err {_rel(out, want):.2e}"
  assert _rel(state.kv, want_kv) <= 1e-5
  assert _rel(state.k_state, want_ks) <= 1e-5
  assert state.kv.dtype == jnp.float32 and state.k_state.dtype == jnp.float32


@pytest.mark.parametrize("impl", XLA_IMPLS)
def test_initial_state_is_used(impl):
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 2, 37, 2, 8)
  # A state some earlier tokens could have produced, so denominators stay >= count / 2.
  k_prev = rng.standard_normal((2, 23, 2, 16))
  v_prev = rng.standard_normal((2, 23, 2, 8))
  kv0 = np.einsum("blhe,blhd->bhed", phi64(k_prev), v_prev).astype(np.float32)
  ks0 = phi64(k_prev).sum(1).astype(np.float32)
  want, want_kv, want_ks = linear_attention_f64(q, k, v, normalize=True, eps=1e-12, kv0=kv0, ks0=ks0)
  out, state = ops.linear_attention(q, k, v, normalize=True, impl=impl,
                                    initial_state=LinearAttentionState(kv0, ks0))
  assert _rel(out, want) <= 1e-5
  assert _rel(state.kv, want_kv) <= 1e-5 and _rel(state.k_state, want_ks) <= 1e-5


@pytest.mark.parametrize("impl", XLA_IMPLS)
@pytest.mark.parametrize("split", [1, 64, 99])
def test_prefill_in_two_pieces_equals_one_pass(impl, split):
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 2, 130, 2, 8)
  whole, whole_state = ops.linear_attention(q, k, v, normalize=True, impl=impl)
  first, state = ops.linear_attention(q[:, :split], k[:, :split], v[:, :split],
                                      normalize=True, impl=impl)
  second, final = ops.linear_attention(q[:, split:], k[:, split:], v[:, split:],
                                       normalize=True, impl=impl, initial_state=state)
  np.testing.assert_allclose(np.concatenate([first, second], 1), whole, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(final.kv, whole_state.kv, rtol=2e-5, atol=1e-4)
  np.testing.assert_allclose(final.k_state, whole_state.k_state, rtol=2e-5, atol=1e-4)


def test_recurrent_steps_equal_the_parallel_form():
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 2, 20, 3, 8)
  want, want_kv, _ = linear_attention_f64(q, k, v, normalize=True, eps=1e-12)
  state = LinearAttentionState.zeros(2, 3, 8)
  outs = []
  for t in range(20):
    o, state = ops.recurrent_step(q[:, t], k[:, t], v[:, t], state, normalize=True, eps=1e-12)
    outs.append(o)
  assert _rel(np.stack(outs, 1), want) <= 1e-5
  assert _rel(state.kv, want_kv) <= 1e-5


@pytest.mark.parametrize("impl", XLA_IMPLS)
def test_left_pad_state_makes_padding_invisible(impl):
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 2, 30, 2, 8)
  n_pad = np.array([0, 11])
  alone, alone_state = ops.linear_attention(q[1:, 11:], k[1:, 11:], v[1:, 11:],
                                            normalize=True, impl=impl)
  keep = (np.arange(30)[None, :] >= n_pad[:, None])[..., None, None]  # [B, L, 1, 1]
  out, state = ops.linear_attention(
      q, k * keep, v * keep, normalize=True, impl=impl,
      initial_state=ops.left_pad_initial_state(jnp.asarray(n_pad), 2, 8))
  np.testing.assert_allclose(out[1, 11:], alone[0], rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(state.k_state[1], alone_state.k_state[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(state.kv[1], alone_state.kv[0], rtol=1e-5, atol=1e-4)


def test_chunked_bf16_is_close_to_float64():
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 2, 150, 2, 16)
  want, _, _ = linear_attention_f64(q, k, v, normalize=True, eps=1e-12)
  bf = lambda x: jnp.asarray(x, jnp.bfloat16)
  out, state = ops.linear_attention(bf(q), bf(k), bf(v), normalize=True, impl="chunked")
  assert out.dtype == jnp.bfloat16 and state.kv.dtype == jnp.float32
  rel = np.linalg.norm(np.asarray(out, np.float64) - want) / np.linalg.norm(want)
  assert rel <= 1e-2, rel


def test_gradients_of_chunked_match_reference():
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 1, 70, 2, 8)
  ct = rng.standard_normal(v.shape).astype(np.float32)
  loss = lambda impl: lambda q, k, v: jnp.sum(
      ops.linear_attention(q, k, v, normalize=True, impl=impl)[0] * ct)
  got = jax.grad(loss("chunked"), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss("reference"), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    assert _rel(g, np.asarray(w, np.float64)) <= 1e-4


@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, match",
    [
        ((2, 5, 3), (2, 5, 3), (2, 5, 3), "q must have rank 4"),
        ((2, 5, 3, 8), (2, 5, 3, 8), (2, 5, 3, 8), "feature dim 16"),
        ((2, 5, 3, 16), (2, 6, 3, 16), (2, 5, 3, 8), "k must have the shape of q"),
        ((2, 5, 3, 16), (2, 5, 3, 16), (2, 5, 4, 8), "v must share B, L, H"),
        ((2, 0, 3, 16), (2, 0, 3, 16), (2, 0, 3, 8), "sequence length must be >= 1"),
    ],
)
def test_bad_shapes_name_the_argument(q_shape, k_shape, v_shape, match):
  with pytest.raises(ValueError, match=match):
    ops.linear_attention(jnp.zeros(q_shape), jnp.zeros(k_shape), jnp.zeros(v_shape),
                         normalize=True, impl="chunked")


def test_bad_state_and_dtype_and_impl_are_named():
  q = jnp.zeros((2, 5, 3, 16))
  v = jnp.zeros((2, 5, 3, 8))
  with pytest.raises(ValueError, match=r"initial_state.kv must have shape \(2, 3, 273, 8\)"):
    ops.linear_attention(q, q, v, normalize=True, initial_state=LinearAttentionState(
        jnp.zeros((2, 3, 272, 8)), jnp.zeros((2, 3, 273))))
  with pytest.raises(ValueError, match="initial_state.k_state must be float32"):
    ops.linear_attention(q, q, v, normalize=True, initial_state=LinearAttentionState(
        jnp.zeros((2, 3, 273, 8)), jnp.zeros((2, 3, 273), jnp.bfloat16)))
  with pytest.raises(ValueError, match="floating dtype"):
    ops.linear_attention(q.astype(jnp.int32), q, v, normalize=True)
  with pytest.raises(ValueError, match="impl must be one of"):
    ops.linear_attention(q, q, v, normalize=True, impl="triton")


def test_auto_on_cpu_uses_chunked_without_warning():
  if jax.default_backend() != "cpu":
    pytest.skip("checks the CPU default")
  rng = np.random.default_rng()
  q, k, v = _inputs(rng, 1, 9, 1, 8)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out, _ = ops.linear_attention(q, k, v, normalize=True, impl="auto")
  want, _, _ = linear_attention_f64(q, k, v, normalize=True, eps=1e-12)
  assert _rel(out, want) <= 1e-5


@pytest.mark.parametrize("impl", ["pallas", "ffi"])
def test_explicit_kernel_without_gpu_raises_with_reason(impl):
  if jax.default_backend() == "gpu":
    pytest.skip("checks the no-GPU error")
  q = jnp.zeros((1, 8, 1, 16), jnp.bfloat16)
  v = jnp.zeros((1, 8, 1, 64), jnp.bfloat16)
  with pytest.raises(RuntimeError, match=f"impl='{impl}'.*cannot run here"):
    ops.linear_attention(q, q, v, normalize=True, impl=impl)


def _fake_kernels(monkeypatch, unavailable=()):
  """Replaces the kernel packages by fakes that record their name and run the chunked path;
  the ones named in `unavailable` report themselves unavailable. Returns the call list."""
  from based_jax.ops import dispatch

  calls = []

  class FakeKernel:
    def __init__(self, name):
      self.name = name

    def unavailable_reason(self, q, k, v):
      return f"{self.name} unavailable (test)" if self.name in unavailable else None

    def linear_attention(self, q, k, v, **kw):
      calls.append(self.name)
      return ops.chunked_linear_attention(q, k, v, **kw)

  monkeypatch.setattr(dispatch, "_kernel_package", FakeKernel)
  return calls


def test_auto_prefers_the_kernel_that_measured_faster(monkeypatch):
  calls = _fake_kernels(monkeypatch)
  rng = np.random.default_rng()
  for batch, heads in ((1, 16), (1, 1), (4, 16)):   # pallas measured faster at every B
    q, k, v = _inputs(rng, batch, 5, heads, 8)
    ops.linear_attention(q, k, v, normalize=True, impl="auto")
    assert calls[-1] == "pallas", (batch, heads, calls)


def test_auto_falls_back_to_ffi_when_pallas_cannot_run(monkeypatch):
  calls = _fake_kernels(monkeypatch, unavailable=("pallas",))
  q, k, v = _inputs(np.random.default_rng(), 2, 5, 3, 8)
  ops.linear_attention(q, k, v, normalize=True, impl="auto")
  assert calls == ["ffi"]
