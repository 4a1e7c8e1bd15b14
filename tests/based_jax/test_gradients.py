"""Gradients through every linear-attention path and through the model loss.

Oracles: (1) float64 NumPy central differences of an independent float64 forward (no JAX), element
by element on a tiny case; (2) `jax.grad` of the quadratic reference for the chunked path, the
model loss, and (on a Hopper GPU) the Pallas and FFI kernels (custom_vjp). fp32 bound: relative
error <= 1e-4 of the largest gradient entry.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from based_jax import ops
from based_jax.config import BasedConfig
from based_jax.model import BasedLM
from based_jax.ops import LinearAttentionState
from based_jax.training import loop
from tests.float64_reference import linear_attention_f64

FP32_REL = 1e-4
# (B, L, H, Dv): L=1 single token; 65 = one chunk + 1 with an odd Dv; 130 = two chunks + a tail.
CASES = [(1, 1, 2, 8), (1, 65, 3, 5), (2, 130, 2, 16)]


def _inputs(rng, b, length, h, dv):
  q = rng.standard_normal((b, length, h, 16)).astype(np.float32)
  k = rng.standard_normal((b, length, h, 16)).astype(np.float32)
  v = rng.standard_normal((b, length, h, dv)).astype(np.float32)
  # A positive initial state (as after real tokens) keeps the denominator away from 0.
  kv0 = (0.1 * rng.standard_normal((b, h, 273, dv))).astype(np.float32)
  ks0 = np.zeros((b, h, 273), np.float32)
  ks0[..., 0] = 3.0
  return q, k, v, kv0, ks0


def _cotangents(rng, b, length, h, dv):
  return (rng.standard_normal((b, length, h, dv)), rng.standard_normal((b, h, 273, dv)),
          rng.standard_normal((b, h, 273)))


def _jax_loss(impl, normalize, cts):
  g_out, g_kv, g_ks = (jnp.asarray(c, jnp.float32) for c in cts)

  def loss(q, k, v, kv0, ks0):
    out, state = ops.linear_attention(q, k, v, normalize=normalize, eps=1e-12,
                                      initial_state=LinearAttentionState(kv0, ks0), impl=impl)
    return (jnp.sum(out.astype(jnp.float32) * g_out) + jnp.sum(state.kv * g_kv)
            + jnp.sum(state.k_state * g_ks))

  return loss


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.mark.parametrize("normalize", [True, False], ids=["variantA", "variantB"])
def test_reference_grad_matches_float64_finite_differences(normalize):
  """Every entry of d loss / d (q, k, v, kv0, ks0) against central differences in float64."""
  rng = np.random.default_rng()
  b, length, h, dv = 1, 4, 1, 3
  args = _inputs(rng, b, length, h, dv)
  cts = _cotangents(rng, b, length, h, dv)
  got = jax.jit(jax.grad(_jax_loss("reference", normalize, cts), argnums=(0, 1, 2, 3, 4)))(*args)

  def loss64(*xs):
    q, k, v, kv0, ks0 = xs
    out, kv, ks = linear_attention_f64(q, k, v, normalize=normalize, eps=1e-12, kv0=kv0, ks0=ks0)
    return np.sum(out * cts[0]) + np.sum(kv * cts[1]) + np.sum(ks * cts[2])

  x64 = [np.asarray(a, np.float64) for a in args]
  step = 1e-6
  for i, (g, x) in enumerate(zip(got, x64)):
    want = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      plus = [y.copy() for y in x64]
      minus = [y.copy() for y in x64]
      plus[i][idx] += step
      minus[i][idx] -= step
      want[idx] = (loss64(*plus) - loss64(*minus)) / (2 * step)
    assert np.abs(want).max() > 0  # the check is not vacuous
    assert _rel(g, want) <= FP32_REL, (i, _rel(g, want))


@pytest.mark.parametrize("normalize", [True, False], ids=["variantA", "variantB"])
@pytest.mark.parametrize("b, length, h, dv", CASES, ids=[f"B{c[0]}-L{c[1]}-H{c[2]}-Dv{c[3]}"
                                                         for c in CASES])
def test_chunked_grad_matches_reference(b, length, h, dv, normalize):
  """Gradients w.r.t. inputs and initial state, with cotangents on the output and the state."""
  rng = np.random.default_rng()
  args = _inputs(rng, b, length, h, dv)
  cts = _cotangents(rng, b, length, h, dv)
  got = jax.jit(jax.grad(_jax_loss("chunked", normalize, cts), argnums=(0, 1, 2, 3, 4)))(*args)
  want = jax.jit(jax.grad(_jax_loss("reference", normalize, cts), argnums=(0, 1, 2, 3, 4)))(*args)
  for name, g, w in zip(("q", "k", "v", "kv0", "ks0"), got, want):
    assert np.isfinite(np.asarray(g)).all(), name
    assert _rel(g, w) <= FP32_REL, (name, _rel(g, w))


def _tiny_model_inputs(rng, length):
  cfg = BasedConfig.tiny(n_embd=32, n_head=2, n_layer=3, vocab_size=53, window_size=6,
                         la_layers=(1,), swa_layers=(2,))
  ids = rng.integers(0, cfg.vocab_size, size=(2, length)).astype(np.int32)
  targets = rng.integers(0, cfg.vocab_size, size=(2, length)).astype(np.int32)
  weights = (rng.random((2, length)) < 0.7).astype(np.float32)
  return cfg, {"input_ids": ids, "targets": targets, "weights": weights}


def test_model_loss_grad_chunked_matches_reference():
  """jax.grad of the training loss of a conv + LA + SWA model, every parameter leaf."""
  rng = np.random.default_rng()
  cfg, batch = _tiny_model_inputs(rng, 70)  # two 64-token chunks, the second ragged
  key = jax.random.PRNGKey(int(rng.integers(1 << 30)))
  params = jax.jit(BasedLM(cfg, la_impl="reference").init)(key, batch["input_ids"])["params"]

  def grads(impl):
    model = BasedLM(cfg, dtype=jnp.float32, la_impl=impl)
    return jax.jit(jax.grad(lambda p: loop.loss_and_metrics(model, p, batch)[0]))(params)

  got, want = grads("chunked"), grads("reference")
  flat_got = jax.tree_util.tree_leaves_with_path(got)
  flat_want = jax.tree_util.tree_leaves(want)
  la_grad_seen = False
  for (path, g), w in zip(flat_got, flat_want):
    name = jax.tree_util.keystr(path)
    assert np.isfinite(np.asarray(g)).all(), name
    if np.abs(np.asarray(w)).max() == 0:  # e.g. padded vocab rows
      assert np.abs(np.asarray(g)).max() == 0, name
      continue
    la_grad_seen |= "proj_q" in name
    assert _rel(g, w) <= FP32_REL, (name, _rel(g, w))
  assert la_grad_seen


def test_model_loss_grad_matches_finite_difference_direction():
  """Directional derivative of the fp32 model loss vs a float64-evaluated central difference."""
  rng = np.random.default_rng()
  cfg, batch = _tiny_model_inputs(rng, 20)
  model = BasedLM(cfg, dtype=jnp.float32, la_impl="chunked")
  params = jax.jit(model.init)(jax.random.PRNGKey(1), batch["input_ids"])["params"]
  loss = jax.jit(lambda p: loop.loss_and_metrics(model, p, batch)[0])
  grad = jax.jit(jax.grad(lambda p: loop.loss_and_metrics(model, p, batch)[0]))(params)
  # Unit direction: half along the gradient (a large slope, so fp32 rounding of the loss is
  # negligible), half random (so every parameter is perturbed).
  gnorm = float(optax.tree.norm(grad))
  noise = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  nnorm = float(optax.tree.norm(noise))
  direction = jax.tree_util.tree_map(lambda g, n: g / gnorm + n / nnorm, grad, noise)
  dnorm = float(optax.tree.norm(direction))
  direction = jax.tree_util.tree_map(lambda d: d / dnorm, direction)
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * np.asarray(d, np.float64)))
                 for g, d in zip(jax.tree_util.tree_leaves(grad),
                                 jax.tree_util.tree_leaves(direction)))
  # fp32 forward: use a step that keeps rounding noise (~1e-7 * |loss| / h) small vs the slope.
  h = 1e-2  # parameters move by 1e-2 in global norm
  shifted = lambda s: float(loss(jax.tree_util.tree_map(lambda p, d: p + s * d, params,
                                                        direction)))
  # Richardson extrapolation of two central differences cancels the h^2 term.
  d1 = (shifted(h) - shifted(-h)) / (2 * h)
  d2 = (shifted(h / 2) - shifted(-h / 2)) / h
  numeric = (4 * d2 - d1) / 3
  assert abs(analytic) > 1.0
  assert abs(analytic - numeric) <= 1e-3 * abs(analytic), (analytic, numeric)


def _kernel_grad_check(impl):
  """bf16 kernel grads vs the fp32 reference on the same bf16-rounded inputs.

  The kernels' backward is XLA (custom_vjp); the bound follows style rule 11: the kernel's error
  must be within 1.5x the error of the bf16 XLA reference (plus a small floor).
  """
  rng = np.random.default_rng()
  b, length, h, dv = 2, 200, 4, 64  # L not a multiple of the 64-token tile
  q, k, v, kv0, ks0 = _inputs(rng, b, length, h, dv)
  q, k = 0.5 * q, 0.5 * k
  cts = _cotangents(rng, b, length, h, dv)
  bf = lambda x: jnp.asarray(x, jnp.bfloat16)
  args16 = (bf(q), bf(k), bf(v), jnp.asarray(kv0), jnp.asarray(ks0))
  args32 = tuple(jnp.asarray(a, jnp.float32) for a in args16)
  reason = ops.unavailable_reason(impl, *args16[:3])
  assert reason is None, reason  # on a Hopper GPU the kernel must run
  for normalize in (True, False):
    grad = lambda name: jax.jit(jax.grad(_jax_loss(name, normalize, cts), argnums=(0, 1, 2, 3, 4)))
    got, bf_ref, want = grad(impl)(*args16), grad("reference")(*args16), grad("reference")(*args32)
    for name, g, r, w in zip(("q", "k", "v", "kv0", "ks0"), got, bf_ref, want):
      g, r, w = (np.asarray(jnp.asarray(x, jnp.float32), np.float64) for x in (g, r, w))
      assert np.isfinite(g).all(), (impl, name)
      rms = lambda x: float(np.sqrt(np.mean(x * x)))
      scale = rms(w)
      assert rms(g - w) <= 1.5 * rms(r - w) + 1e-3 * scale, (impl, normalize, name,
                                                             rms(g - w), rms(r - w), scale)


@pytest.mark.gpu
def test_pallas_grad_matches_reference():
  _kernel_grad_check("pallas")


@pytest.mark.gpu
def test_ffi_grad_matches_reference():
  _kernel_grad_check("ffi")
