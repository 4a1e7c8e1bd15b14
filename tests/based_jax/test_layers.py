"""Leaf layers and mixers against float64 NumPy written from the math (based_model.md §3)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax.config import BasedConfig
from based_jax.layers import RMSNorm, SwiGLU, apply_rotary, rotary_cos_sin
from based_jax.mixers import (MHA, BaseConv, LinearAttention, SlidingWindowAttention,
                              banded_attention, causal_attention, causal_depthwise_conv,
                              causal_depthwise_conv_ring, flash_causal_attention,
                              fused_attention, window_attention)
from tests.float64_reference import linear_attention_f64

F32 = dict(rtol=2e-5, atol=2e-5)


def _rng(seed):
  return np.random.default_rng(seed)


def jinit(mod, seed, *args):
  """Init under jit (eager op-by-op compilation is slow on CPU)."""
  return jax.jit(mod.init)(jax.random.key(seed), *args)["params"]


@functools.lru_cache(maxsize=None)
def _jitted_apply(mod):
  return jax.jit(mod.apply)


def japply(mod, params, *args):
  return _jitted_apply(mod)({"params": params}, *args)


def _np(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


# ---- float64 NumPy oracles -------------------------------------------------------------------


def np_rmsnorm(x, w, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def np_silu(x):
  return x / (1.0 + np.exp(-x))


def np_rope(x, positions, rotary_dim, base):
  """Rotate pairs (i, i + R/2) by angle p * base^(-2i/R), via explicit 2x2 rotations."""
  out = x.copy()
  half = rotary_dim // 2
  b, length = positions.shape
  for bi in range(b):
    for t in range(length):
      for i in range(half):
        ang = positions[bi, t] * base ** (-2.0 * i / rotary_dim)
        c, s = math.cos(ang), math.sin(ang)
        x1, x2 = x[bi, t, :, i], x[bi, t, :, i + half]
        out[bi, t, :, i] = c * x1 - s * x2
        out[bi, t, :, i + half] = s * x1 + c * x2
  return out


def np_masked_attention(q, k, v, scale, allowed):
  """Dense softmax attention; allowed: [B, Lq, Lk] bool (each query row has >= 1 key)."""
  s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
  s = np.where(allowed[:, None], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p = p / p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


def window_allowed(length, w, key_valid=None):
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  allowed = (j <= i) & (j >= i - w)  # [L, L]
  batch = 1 if key_valid is None else key_valid.shape[0]
  allowed = np.broadcast_to(allowed, (batch,) + allowed.shape)  # [B, L, L]
  if key_valid is not None:
    allowed = allowed & key_valid[:, None, :]
  return allowed


# ---- tests -----------------------------------------------------------------------------------


def test_rmsnorm_vs_numpy():
  r = _rng(0)
  x = r.standard_normal((2, 7, 48)).astype(np.float32) * 3
  mod = RMSNorm(1e-5)
  params = {"weight": jnp.asarray(r.standard_normal(48).astype(np.float32))}
  got = japply(mod, params, jnp.asarray(x))
  want = np_rmsnorm(x.astype(np.float64), _np(params)["weight"], 1e-5)
  np.testing.assert_allclose(np.asarray(got), want, **F32)
  # bf16 input: fp32 compute, bf16 output.
  got16 = japply(mod, params, jnp.asarray(x, jnp.bfloat16))
  assert got16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got16, np.float64), want, rtol=2e-2, atol=2e-2)


def test_swiglu_vs_numpy():
  r = _rng(1)
  x = jnp.asarray(r.standard_normal((2, 5, 32)).astype(np.float32))
  mod = SwiGLU(hidden=24)
  params = jinit(mod, 0, x)
  assert params["fc1"]["kernel"].shape == (32, 48) and params["fc2"]["kernel"].shape == (24, 32)
  p = _np(params)
  h = np.asarray(x, np.float64) @ p["fc1"]["kernel"]
  want = (h[..., :24] * np_silu(h[..., 24:])) @ p["fc2"]["kernel"]
  np.testing.assert_allclose(np.asarray(japply(mod, params, x)), want, **F32)


@pytest.mark.parametrize("rotary_dim, head_dim", [(16, 16), (8, 16), (20, 20)])
def test_rotary_vs_numpy(rotary_dim, head_dim):
  r = _rng(2)
  x = r.standard_normal((2, 9, 3, head_dim)).astype(np.float32)
  pos = r.integers(0, 5000, size=(2, 9))
  cos, sin = rotary_cos_sin(jnp.asarray(pos), rotary_dim, 10000.0, jnp.float32)
  got = apply_rotary(jnp.asarray(x), cos, sin)
  want = np_rope(x.astype(np.float64), pos, rotary_dim, 10000.0)
  # fp32 angles of positions up to 5000: ~5000 * 2^-24 rad absolute error.
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(np.asarray(got)[..., rotary_dim:], x[..., rotary_dim:])
  # the halves' formulas in float32, computed apart: the same floats
  c, s = np.asarray(cos)[:, :, None, :], np.asarray(sin)[:, :, None, :]
  x1, x2 = x[..., :rotary_dim // 2], x[..., rotary_dim // 2:rotary_dim]
  halves = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
  np.testing.assert_array_equal(np.asarray(got)[..., :rotary_dim], halves)


@pytest.mark.parametrize("length", [1, 2, 13])
def test_base_conv_vs_numpy(length):
  cfg = BasedConfig.tiny(n_embd=32, conv_bias=True)
  r = _rng(3)
  x = jnp.asarray(r.standard_normal((2, length, 32)).astype(np.float32))
  mod = BaseConv(cfg)
  params = jinit(mod, 1, x)
  params = jax.tree_util.tree_map(  # non-zero bias so that it is tested
      lambda a: a + 0.1 * jnp.asarray(r.standard_normal(a.shape), a.dtype), params)
  p = _np(params)
  c = cfg.conv_d_inner
  u = np.asarray(x, np.float64) @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
  u1, u2 = u[..., :c], u[..., c:]
  w = p["conv"]["conv"]["kernel"][:, 0, :].T  # torch layout (C, K)
  conv = np.zeros_like(u1)
  for t in range(length):
    for j in range(3):  # c_t = sum_j w[:, j] * u1_{t-2+j}
      if t - 2 + j >= 0:
        conv[:, t] += w[:, j] * u1[:, t - 2 + j]
  conv += p["conv"]["conv"]["bias"]
  want = (np_silu(conv) * u2) @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]
  np.testing.assert_allclose(np.asarray(japply(mod, params, x)), want, **F32)


@pytest.mark.parametrize("taps", [1, 2, 3, 4])
def test_conv_from_a_ring_equals_the_conv_of_the_ordered_inputs(taps):
  """causal_depthwise_conv_ring at every rotation of the ring gives the same floats as
  causal_depthwise_conv of the same K inputs oldest first (and the numpy conv)."""
  r = np.random.default_rng()
  ordered = r.standard_normal((2, taps, 5)).astype(np.float32)  # [B, K, C], oldest first
  kernel = r.standard_normal((taps, 1, 5)).astype(np.float32)
  bias = r.standard_normal((5,)).astype(np.float32)
  want = causal_depthwise_conv(jnp.asarray(ordered[:, -1:]), jnp.asarray(kernel),
                               jnp.asarray(ordered[:, :-1]), jnp.asarray(bias))  # [B, 1, C]
  np.testing.assert_allclose(
      np.asarray(want)[:, 0], np.einsum("bkc,kc->bc", ordered, kernel[:, 0]) + bias, **F32)
  for newest in range(taps):
    ring = np.roll(ordered, newest + 1, axis=1)  # the newest input in slot `newest`
    got = causal_depthwise_conv_ring(jnp.asarray(ring), jnp.asarray(kernel),
                                     jnp.asarray(newest, jnp.int32), jnp.asarray(bias))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"slot {newest}")


@pytest.mark.parametrize("output_norm", [False, True])
def test_linear_attention_mixer_vs_numpy(output_norm):
  cfg = BasedConfig.tiny(n_embd=48, n_head=4, la_output_norm=output_norm)  # Dv = 12
  r = _rng(4)
  x = jnp.asarray(r.standard_normal((2, 19, 48)).astype(np.float32))
  mod = LinearAttention(cfg, impl="reference")
  params = jinit(mod, 2, x)
  if output_norm:
    params["g_norm"]["weight"] = jnp.asarray(r.standard_normal(12).astype(np.float32))
  p = _np(params)
  xf = np.asarray(x, np.float64)
  q = (xf @ p["proj_q"]["kernel"]).reshape(2, 19, 4, 16)
  k = (xf @ p["proj_k"]["kernel"]).reshape(2, 19, 4, 16)
  v = (xf @ p["proj_v"]["kernel"]).reshape(2, 19, 4, 12)
  o = linear_attention_f64(q, k, v, normalize=not output_norm, eps=1e-12)[0]
  if output_norm:
    o = np_rmsnorm(o, p["g_norm"]["weight"], cfg.layer_norm_epsilon)
  want = o.reshape(2, 19, 48) @ p["out_proj"]["kernel"]
  np.testing.assert_allclose(np.asarray(japply(mod, params, x)), want,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length, w", [(1, 4), (37, 4), (75, 40), (70, 0), (33, 64)])
def test_banded_attention_vs_dense_numpy(length, w):
  r = _rng(5)
  q, k, v = (r.standard_normal((2, length, 3, 8)).astype(np.float32) for _ in range(3))
  valid = np.ones((2, length), bool)
  valid[1, :length // 3] = False  # left padding in row 1
  got = banded_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid),
                         window_left=w, scale=0.3, precision=jax.lax.Precision.HIGHEST)
  allowed = window_allowed(length, w, valid)
  allowed = allowed | (~allowed.any(-1, keepdims=True) & np.eye(length, dtype=bool))  # pad rows
  want = np_masked_attention(*(a.astype(np.float64) for a in (q, k, v)), 0.3, allowed)
  real = valid[:, :, None, None] & np.ones_like(want, bool)
  np.testing.assert_allclose(np.asarray(got)[real], want[real], **F32)
  assert np.isfinite(np.asarray(got)).all()


@pytest.mark.parametrize("length, block", [(1, 16), (45, 16), (64, 16), (21, 256)])
def test_flash_causal_attention_vs_dense_numpy(length, block):
  r = _rng(6)
  q, k, v = (r.standard_normal((2, length, 2, 8)).astype(np.float32) for _ in range(3))
  valid = np.ones((2, length), bool)
  valid[0, :length // 2] = False
  got = flash_causal_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid),
                               scale=0.35, precision=jax.lax.Precision.HIGHEST, block=block)
  allowed = window_allowed(length, length, valid)
  allowed = allowed | (~allowed.any(-1, keepdims=True) & np.eye(length, dtype=bool))
  want = np_masked_attention(*(a.astype(np.float64) for a in (q, k, v)), 0.35, allowed)
  real = valid[:, :, None, None] & np.ones_like(want, bool)
  np.testing.assert_allclose(np.asarray(got)[real], want[real], **F32)


def test_flash_causal_attention_memory_stays_linear_when_xla_unrolls_the_scan(monkeypatch):
  """The GPU compiler may unroll the key-block scan; its blocks must not then be computed ahead
  and be live at once (an [L, L] footprint). A fully unrolled scan on the CPU stands in for it:
  the compiled temporaries may only double from 2k to 4k tokens."""
  scan = jax.lax.scan
  monkeypatch.setattr(jax.lax, "scan", functools.partial(scan, unroll=True))

  def temp_bytes(length):
    spec = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
    fn = jax.jit(functools.partial(flash_causal_attention, scale=0.25, precision=None, block=256))
    return fn.lower(spec, spec, spec, None).compile().memory_analysis().temp_size_in_bytes

  temp = {length: temp_bytes(length) for length in (2048, 4096)}
  assert temp[4096] <= 2.2 * temp[2048], temp


def _attention_inputs(length, dtype, seed=None):
  r = np.random.default_rng(seed)
  return tuple(jnp.asarray(r.standard_normal((2, length, 4, 64)), dtype) for _ in range(3))


def test_cudnn_attention_refuses_float32_and_non_gpu_backends_by_name():
  q, k, v = _attention_inputs(17, jnp.float32)
  with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*bfloat16"):
    causal_attention(q, k, v, None, scale=0.125, precision=None, impl="cudnn")
  if jax.default_backend() != "gpu":
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*GPU"):
      causal_attention(qb, kb, vb, None, scale=0.125, precision=None, impl="cudnn")
  with pytest.raises(ValueError, match="attention impl must be one of"):
    causal_attention(q, k, v, None, scale=0.125, precision=None, impl="flash")


def test_cudnn_attention_refuses_unsupported_head_dims_by_name():
  r = np.random.default_rng()
  q, k, v = (jnp.asarray(r.standard_normal((1, 9, 2, 160)), jnp.bfloat16) for _ in range(3))
  with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*head dims.*160"):
    causal_attention(q, k, v, None, scale=0.125, precision=None, impl="cudnn")


@pytest.mark.parametrize("dtype,head_dim", [(jnp.float32, 64), (jnp.bfloat16, 64),
                                            (jnp.bfloat16, 160)])
def test_auto_attention_is_the_scan_where_cudnn_cannot_run(dtype, head_dim):
  """"auto" never raises: float32, unsupported head dims and (off the GPU) every batch take the
  scan, bit for bit; on a GPU, bf16 with head dim 64 is cuDNN's, bit for bit."""
  r = np.random.default_rng()
  q, k, v = (jnp.asarray(r.standard_normal((2, 37, 2, head_dim)), dtype) for _ in range(3))
  cudnn_runs = (jax.default_backend() == "gpu" and dtype == jnp.bfloat16 and head_dim <= 128)
  got = causal_attention(q, k, v, None, scale=0.125, precision=None, impl="auto")
  if cudnn_runs:
    want = causal_attention(q, k, v, None, scale=0.125, precision=None, impl="cudnn")
  else:
    want = flash_causal_attention(q, k, v, None, scale=0.125, precision=None)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_auto_attention_keeps_padded_batches_on_the_scan_and_cudnn_takes_them():
  """Padded batches: "auto" is the scan bit for bit (also on a GPU); "cudnn" takes them too, so
  off the GPU it is the named error, not a silent scan."""
  q, k, v = _attention_inputs(23, jnp.bfloat16)
  valid = np.ones((2, 23), bool)
  valid[1, :5] = False
  got = causal_attention(q, k, v, jnp.asarray(valid), scale=0.125, precision=None, impl="auto")
  want = flash_causal_attention(q, k, v, jnp.asarray(valid), scale=0.125, precision=None)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  if jax.default_backend() != "gpu":
    with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*GPU"):
      causal_attention(q, k, v, jnp.asarray(valid), scale=0.125, precision=None, impl="cudnn")


def _left_padded_valid(length, pads):
  valid = np.ones((len(pads), length), bool)
  for row, pad in enumerate(pads):
    valid[row, :pad] = False
  return valid


def test_roll_rows_moves_each_row_by_its_own_shift():
  from based_jax.mixers.mha import _roll_rows
  x = np.random.default_rng().standard_normal((3, 11, 2, 4)).astype(np.float32)
  shift = np.array([0, 4, 10])
  got = np.asarray(_roll_rows(jnp.asarray(x), jnp.asarray(shift, jnp.int32)))
  for row in range(3):
    np.testing.assert_array_equal(got[row], np.roll(x[row], -shift[row], axis=0))
  back = np.asarray(_roll_rows(jnp.asarray(got), -jnp.asarray(shift, jnp.int32)))
  np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("window_left", [None, 1, 6, 40])
@pytest.mark.parametrize("length, pads", [(1, (0,)), (29, (0, 7, 28)), (64, (63, 1, 0))])
def test_fused_attention_on_left_padded_rows_vs_float64(length, pads, window_left):
  """The roll to right padding + sequence lengths, through JAX's own XLA implementation of the
  same call (cuDNN needs the GPU: the gpu test below), against dense float64 attention over each
  row's real tokens; pad outputs are exactly zero."""
  r = np.random.default_rng()
  q, k, v = (r.standard_normal((len(pads), length, 2, 8)).astype(np.float32) for _ in range(3))
  valid = _left_padded_valid(length, pads)
  got = np.asarray(fused_attention(*(jnp.asarray(x) for x in (q, k, v)), jnp.asarray(valid),
                                   scale=0.3, window_left=window_left, implementation="xla"))
  allowed = window_allowed(length, length if window_left is None else window_left, valid)
  allowed = allowed | (~allowed.any(-1, keepdims=True) & np.eye(length, dtype=bool))  # pad rows
  want = np_masked_attention(*(a.astype(np.float64) for a in (q, k, v)), 0.3, allowed)
  real = valid[:, :, None, None] & np.ones_like(want, bool)
  np.testing.assert_allclose(got[real], want[real], **F32)
  assert (got[~real] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("window_left", [None, 64])
@pytest.mark.parametrize("length, pads", [(77, (0, 30)), (1000, (999, 333)), (4096, (0, 4000))])
def test_cudnn_attention_on_left_padded_rows_matches_float64_on_gpu(length, pads, window_left):
  """cuDNN with sequence lengths (bf16) on left-padded rows, through both attention entry
  points, against float64 dense attention over each row's real tokens."""
  r = np.random.default_rng()
  q, k, v = (jnp.asarray(r.standard_normal((len(pads), length, 4, 64)), jnp.bfloat16)
             for _ in range(3))
  valid = _left_padded_valid(length, pads)
  if window_left is None:
    got = causal_attention(q, k, v, jnp.asarray(valid), scale=0.125, precision=None,
                           impl="cudnn")
  else:
    got = window_attention(q, k, v, jnp.asarray(valid), window_left=window_left, scale=0.125,
                           precision=None, impl="cudnn")
  got = np.asarray(got, np.float64)
  allowed = window_allowed(length, length if window_left is None else window_left, valid)
  allowed = allowed | (~allowed.any(-1, keepdims=True) & np.eye(length, dtype=bool))
  want = np_masked_attention(*(np.asarray(x, np.float64) for x in (q, k, v)), 0.125, allowed)
  real = valid[:, :, None, None] & np.ones_like(want, bool)
  err = np.linalg.norm(got[real] - want[real]) / np.linalg.norm(want[real])
  assert err <= 1e-2, err
  assert (got[~real] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cudnn", "auto"])
@pytest.mark.parametrize("length", [1, 77, 1000])
def test_cudnn_attention_matches_the_float32_scan_on_gpu(length, impl):
  q, k, v = _attention_inputs(length, jnp.bfloat16)
  got = causal_attention(q, k, v, None, scale=0.125, precision=None, impl=impl)
  if impl == "auto":  # on the GPU, auto is cuDNN for an unpadded bf16 batch with head dim 64
    cudnn = causal_attention(q, k, v, None, scale=0.125, precision=None, impl="cudnn")
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(cudnn, np.float32))
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  want = flash_causal_attention(*f32, None, scale=0.125, precision=jax.lax.Precision.HIGHEST)
  err = float(jnp.linalg.norm((got.astype(jnp.float32) - want).ravel()) /
              jnp.linalg.norm(want.ravel()))
  assert err <= 1e-2, err


def test_cudnn_window_attention_refuses_where_cudnn_cannot_run_and_auto_is_banded():
  """Off the GPU (or in float32) "cudnn" is a named error and "auto" the banded path, bit for
  bit; padded batches take the banded path under "auto"."""
  q, k, v = _attention_inputs(29, jnp.float32)
  kw = dict(window_left=8, scale=0.125, precision=jax.lax.Precision.HIGHEST)
  with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*bfloat16"):
    window_attention(q, k, v, None, impl="cudnn", **kw)
  np.testing.assert_array_equal(np.asarray(window_attention(q, k, v, None, impl="auto", **kw)),
                                np.asarray(banded_attention(q, k, v, None, **kw)))
  valid = np.ones((2, 29), bool)
  valid[0, :7] = False
  np.testing.assert_array_equal(
      np.asarray(window_attention(q, k, v, jnp.asarray(valid), impl="auto", **kw)),
      np.asarray(banded_attention(q, k, v, jnp.asarray(valid), **kw)))
  if jax.default_backend() != "gpu":
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    with pytest.raises(ValueError, match=r"attn_impl='cudnn'.*GPU"):
      window_attention(qb, kb, vb, None, impl="cudnn", **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cudnn", "auto"])
@pytest.mark.parametrize("length, w", [(1, 64), (77, 64), (1000, 64), (333, 16), (130, 200)])
def test_cudnn_window_attention_matches_float64_on_gpu(length, w, impl):
  """cuDNN's sliding window (bf16 inputs) against a float64 dense reference of the same band."""
  q, k, v = _attention_inputs(length, jnp.bfloat16)
  got = window_attention(q, k, v, None, window_left=w, scale=0.125, precision=None, impl=impl)
  if impl == "auto":  # on the GPU, auto is cuDNN for an unpadded bf16 batch with head dim 64
    cudnn = window_attention(q, k, v, None, window_left=w, scale=0.125, precision=None,
                             impl="cudnn")
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(cudnn, np.float32))
  allowed = window_allowed(length, w, np.ones((2, length), bool))
  want = np_masked_attention(*(np.asarray(x, np.float64) for x in (q, k, v)), 0.125, allowed)
  err = np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want)
  assert err <= 1e-2, err


@pytest.mark.parametrize("kind, n_embd, fraction", [("sliding_window", 64, 1.0),
                                                    ("mha", 64, 0.5), ("sliding_window", 80, 1.0)])
def test_attention_mixers_vs_numpy(kind, n_embd, fraction):
  """Whole SWA / MHA module (Wqkv, NeoX rotary, window rule, out_proj) vs NumPy; Dh 16 and 20."""
  cfg = BasedConfig.tiny(n_embd=n_embd, n_head=4, window_size=10, rotary_emb_fraction=fraction,
                         attention_only=(kind == "mha"))
  length = 41
  r = _rng(7)
  x = jnp.asarray(r.standard_normal((2, length, n_embd)).astype(np.float32))
  positions = jnp.broadcast_to(jnp.arange(length), (2, length))
  mod = (SlidingWindowAttention if kind == "sliding_window" else MHA)(cfg, layer_idx=2)
  params = jinit(mod, 3, x, None, positions)
  got = japply(mod, params, x, None, positions)
  p = _np(params)
  dh = n_embd // 4
  qkv = (np.asarray(x, np.float64) @ p["Wqkv"]["kernel"]).reshape(2, length, 3, 4, dh)
  pos = np.asarray(positions)
  q = np_rope(qkv[:, :, 0], pos, cfg.rotary_dim, 10000.0)
  k = np_rope(qkv[:, :, 1], pos, cfg.rotary_dim, 10000.0)
  w = 5 if kind == "sliding_window" else length  # window_size // 2
  o = np_masked_attention(q, k, qkv[:, :, 2], dh ** -0.5, window_allowed(length, w))
  want = o.reshape(2, length, n_embd) @ p["out_proj"]["kernel"]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn", ["banded", "flash"])
def test_attention_prefill_memory_is_linear(fn):
  """An 8k-token prefill compiles without any [L, L] buffer (checked on the compiled temp size)."""
  length, h, d = 8192, 1, 16
  spec = jax.ShapeDtypeStruct((1, length, h, d), jnp.float32)
  if fn == "banded":
    f = lambda q, k, v: banded_attention(q, k, v, None, window_left=64, scale=0.25,
                                         precision=None)
  else:
    f = lambda q, k, v: flash_causal_attention(q, k, v, None, scale=0.25, precision=None)
  compiled = jax.jit(f).lower(spec, spec, spec).compile()
  stats = compiled.memory_analysis()
  assert stats is not None
  assert stats.temp_size_in_bytes < length * length * 4 // 4, stats.temp_size_in_bytes
