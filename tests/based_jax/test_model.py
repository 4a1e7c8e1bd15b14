"""BasedLM forward: vs a float64 NumPy model, param counts of the presets, padding, jit, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import BasedConfig, BasedLM
from tests.based_jax.test_layers import (np_masked_attention, np_rmsnorm, np_rope, np_silu,
                                        window_allowed, jinit, japply)
from tests.float64_reference import linear_attention_f64

# Tiny configs: d 64 H 4 (Dh 16) with conv/LA/SWA, Dh 20 (d 80), attention only, g_norm variant.
CONFIGS = {
    "based-d64": BasedConfig.tiny(n_layer=3),
    "based-d80-dh20": BasedConfig.tiny(n_embd=80, n_layer=5, la_layers=(1, 4), swa_layers=(2,),
                                      window_size=6),
    "attn-d64": BasedConfig.tiny(attention_only=True, n_layer=2),
    "based-gnorm": BasedConfig.tiny(la_output_norm=True, n_layer=3),
}


@functools.lru_cache(maxsize=None)
def init_params(cfg, seed=0, length=8):
  """Params of BasedLM(cfg), cached per (cfg, seed) (jax arrays are immutable)."""
  model = BasedLM(cfg)
  ids = jnp.zeros((1, length), jnp.int32)
  params = jinit(model, seed, ids)
  # Random norm weights (init is all ones) so that the norms are really tested.
  r = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, a: a * jnp.asarray(1 + 0.2 * r.standard_normal(a.shape), a.dtype)
      if "weight" in jax.tree_util.keystr(path) else a, params)


def random_ids(cfg, shape, seed):
  return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, shape), jnp.int32)


def np_forward(cfg, params, ids):
  """Float64 NumPy forward of the whole model, from based_model.md §3 (no padding)."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)["transformer"]
  ids = np.asarray(ids)
  b, length = ids.shape
  eps = cfg.layer_norm_epsilon
  emb = p["embeddings"]["word_embeddings"]["embedding"]
  res = emb[ids]
  pos = np.broadcast_to(np.arange(length), (b, length))
  for i, kind in enumerate(cfg.layer_types):
    lp = p[f"layers_{i}"]
    mp = lp["mixer"]
    x = np_rmsnorm(res, lp["norm1"]["weight"], eps)
    if kind == "conv":
      c = cfg.conv_d_inner
      u = x @ mp["in_proj"]["kernel"] + mp["in_proj"]["bias"]
      u1 = np.concatenate([np.zeros((b, 2, c)), u[..., :c]], axis=1)
      w = mp["conv"]["conv"]["kernel"][:, 0, :]  # [K, C]
      conv = sum(w[j] * u1[:, j:j + length] for j in range(3))
      m = (np_silu(conv) * u[..., c:]) @ mp["out_proj"]["kernel"] + mp["out_proj"]["bias"]
    elif kind == "linear_attention":
      h, dv = cfg.la_num_heads, cfg.la_head_dim
      q = (x @ mp["proj_q"]["kernel"]).reshape(b, length, h, 16)
      k = (x @ mp["proj_k"]["kernel"]).reshape(b, length, h, 16)
      v = (x @ mp["proj_v"]["kernel"]).reshape(b, length, h, dv)
      o = linear_attention_f64(q, k, v, normalize=cfg.la_normalize, eps=cfg.la_eps)[0]
      if cfg.la_output_norm:
        o = np_rmsnorm(o, mp["g_norm"]["weight"], eps)
      m = o.reshape(b, length, h * dv) @ mp["out_proj"]["kernel"]
    else:
      h, dh = cfg.n_head, cfg.head_dim
      qkv = (x @ mp["Wqkv"]["kernel"]).reshape(b, length, 3, h, dh)
      q = np_rope(qkv[:, :, 0], pos, cfg.rotary_dim, cfg.rotary_emb_base)
      k = np_rope(qkv[:, :, 1], pos, cfg.rotary_dim, cfg.rotary_emb_base)
      w = cfg.window_left if kind == "sliding_window" else length
      o = np_masked_attention(q, k, qkv[:, :, 2], dh ** -0.5, window_allowed(length, w))
      m = o.reshape(b, length, h * dh) @ mp["out_proj"]["kernel"]
    res = res + m
    x2 = np_rmsnorm(res, lp["norm2"]["weight"], eps)
    hid = x2 @ lp["mlp"]["fc1"]["kernel"]
    n = cfg.mlp_hidden
    res = res + (hid[..., :n] * np_silu(hid[..., n:])) @ lp["mlp"]["fc2"]["kernel"]
  hf = np_rmsnorm(res, p["ln_f"]["weight"], eps)
  return hf @ emb.T


# The released head dims: Dh 64 (based-360m) and 112 (based-1b), with 2 heads to stay small.
RELEASED_HEAD_DIMS = {
    "based-dh64": BasedConfig.tiny(n_embd=128, n_head=2, n_layer=3, window_size=10),
    "based-dh112": BasedConfig.tiny(n_embd=224, n_head=2, n_layer=3, window_size=10),
}


@pytest.mark.parametrize("name", list(CONFIGS) + list(RELEASED_HEAD_DIMS))
def test_forward_vs_numpy_float64(name):
  cfg = {**CONFIGS, **RELEASED_HEAD_DIMS}[name]
  params = init_params(cfg, seed=1)
  ids = random_ids(cfg, (2, 23), seed=2)  # odd length, longer than the SWA window
  logits = japply(BasedLM(cfg), params, ids)
  assert logits.shape == (2, 23, cfg.vocab_size_padded) and logits.dtype == jnp.float32
  want = np_forward(cfg, params, ids)
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-4)


def test_la_impls_agree_inside_the_model():
  cfg = CONFIGS["based-d64"]
  params = init_params(cfg)
  ids = random_ids(cfg, (2, 37), seed=3)
  ref = japply(BasedLM(cfg, la_impl="reference"), params, ids)
  chunked = japply(BasedLM(cfg, la_impl="chunked"), params, ids)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(ref), rtol=1e-4, atol=1e-4)


def test_unknown_attn_impl_is_a_named_error():
  cfg = CONFIGS["attn-d64"]
  ids = random_ids(cfg, (1, 5), seed=3)
  with pytest.raises(ValueError, match="attn_impl must be one of"):
    BasedLM(cfg, attn_impl="flash").init(jax.random.key(0), ids)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["attn-d64", "based-d64"])
def test_cudnn_attention_inside_the_model_matches_xla(name):
  """bf16 models: logits through cuDNN flash attention (full, or the sliding window of Based)
  vs the XLA scan / banded blocks."""
  cfg = CONFIGS[name]
  params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init_params(cfg))
  ids = random_ids(cfg, (2, 301), seed=4)
  logits = {impl: japply(BasedLM(cfg, dtype=jnp.bfloat16, attn_impl=impl), params, ids)
            for impl in ("xla", "cudnn")}
  err = np.asarray(logits["cudnn"] - logits["xla"])
  scale = np.sqrt(np.mean(np.asarray(logits["xla"]) ** 2))
  assert np.sqrt(np.mean(err ** 2)) < 0.02 * scale
  agree = np.asarray(logits["cudnn"]).argmax(-1) == np.asarray(logits["xla"]).argmax(-1)
  assert agree.mean() > 0.95


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["attn-d64", "based-d64"])
def test_cudnn_attention_on_a_left_padded_batch_matches_xla(name):
  """bf16, left-padded rows (0, 57 and 300 pads of 301): logits at real positions through cuDNN
  with sequence lengths vs the XLA scan / banded blocks; "auto" keeps such a batch on XLA."""
  cfg = CONFIGS[name]
  params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init_params(cfg))
  ids = random_ids(cfg, (3, 301), seed=6)
  mask = np.ones((3, 301), np.int32)
  mask[1, :57] = 0
  mask[2, :300] = 0
  logits = {impl: np.asarray(japply(BasedLM(cfg, dtype=jnp.bfloat16, attn_impl=impl), params,
                                    ids, jnp.asarray(mask)))
            for impl in ("xla", "cudnn", "auto")}
  np.testing.assert_array_equal(logits["auto"], logits["xla"])
  real = mask.astype(bool)
  err = logits["cudnn"][real] - logits["xla"][real]
  scale = np.sqrt(np.mean(logits["xla"][real] ** 2))
  assert np.sqrt(np.mean(err ** 2)) < 0.02 * scale
  agree = logits["cudnn"][real].argmax(-1) == logits["xla"][real].argmax(-1)
  assert agree.mean() > 0.95


def test_mlp_impl_is_checked_by_name():
  cfg = CONFIGS["based-d64"]
  ids = random_ids(cfg, (1, 5), seed=3)
  with pytest.raises(ValueError, match="mlp_impl must be one of"):
    BasedLM(cfg, mlp_impl="cublas").init(jax.random.key(0), ids)
  if jax.default_backend() != "gpu":
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init_params(cfg))
    with pytest.raises(ValueError, match="gated_linear\\(impl='pallas'\\).*no GPU visible"):
      BasedLM(cfg, dtype=jnp.bfloat16, mlp_impl="pallas").apply({"params": params}, ids)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["based-d64", "attn-d64"])
def test_pallas_mlp_inside_the_model_matches_xla(name):
  """bf16: logits with every SwiGLU's fc1 + gate on the Pallas kernel vs the XLA path."""
  cfg = CONFIGS[name]
  params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init_params(cfg))
  ids = random_ids(cfg, (2, 301), seed=7)
  logits = {impl: np.asarray(japply(BasedLM(cfg, dtype=jnp.bfloat16, mlp_impl=impl), params,
                                    ids)) for impl in ("xla", "pallas")}
  err = logits["pallas"] - logits["xla"]
  scale = np.sqrt(np.mean(logits["xla"] ** 2))
  assert np.sqrt(np.mean(err ** 2)) < 0.02 * scale
  assert (logits["pallas"].argmax(-1) == logits["xla"].argmax(-1)).mean() > 0.95


def test_causal_future_tokens_do_not_change_past_logits():
  cfg = CONFIGS["based-d64"]
  params = init_params(cfg)
  ids = random_ids(cfg, (1, 30), seed=4)
  other = ids.at[:, 17:].set(random_ids(cfg, (1, 13), seed=5))
  model = BasedLM(cfg)
  a, b = japply(model, params, ids), japply(model, params, other)
  np.testing.assert_allclose(np.asarray(a[:, :17]), np.asarray(b[:, :17]), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(a[:, 17:] - b[:, 17:])).max() > 1e-3


@pytest.mark.parametrize("name", ["based-d64", "attn-d64", "based-d80-dh20"])
def test_left_padding_invariance(name):
  cfg = CONFIGS[name]
  params = init_params(cfg)
  model = BasedLM(cfg)
  lengths = (21, 9, 1)
  width = max(lengths)
  rows = [random_ids(cfg, (1, n), seed=10 + n) for n in lengths]
  ids = jnp.concatenate([jnp.pad(r, ((0, 0), (width - r.shape[1], 0)), constant_values=7)
                         for r in rows])
  mask = jnp.asarray([[0] * (width - n) + [1] * n for n in lengths], jnp.int32)
  batch = japply(model, params, ids, mask)
  assert (~np.asarray(mask, bool)).any()  # the fixture really pads
  for i, (row, n) in enumerate(zip(rows, lengths)):
    alone = japply(model, params, row)
    np.testing.assert_allclose(np.asarray(batch[i, width - n:]), np.asarray(alone[0]),
                               rtol=1e-4, atol=1e-4)
  assert np.isfinite(np.asarray(batch)).all()


def test_jit_does_not_retrace():
  cfg = CONFIGS["based-d64"]
  params = init_params(cfg)
  model = BasedLM(cfg)
  traces = []

  def fwd(p, ids):
    traces.append(1)
    return model.apply({"params": p}, ids)

  jfwd = jax.jit(fwd)
  outs = [jfwd(params, random_ids(cfg, (2, 16), seed=s)) for s in range(3)]
  assert len(traces) == 1
  assert np.abs(np.asarray(outs[0] - outs[1])).max() > 0


def test_bf16_compute_close_to_fp32():
  cfg = CONFIGS["based-d64"]
  params = init_params(cfg)
  ids = random_ids(cfg, (2, 19), seed=6)
  f32 = japply(BasedLM(cfg), params, ids)
  bf16_params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
  for p in (params, bf16_params):
    got = japply(BasedLM(cfg, dtype=jnp.bfloat16), p, ids)
    assert got.dtype == jnp.float32
    err = np.asarray(got - f32)
    # bf16 rounding through 4 layers: a few % of the logit scale, not more.
    assert np.sqrt(np.mean(err ** 2)) < 0.03 * np.sqrt(np.mean(np.asarray(f32) ** 2))
    assert np.abs(err).max() < 0.2


def test_gradients_are_finite_with_padding():
  """Training path: grads through every mixer, with a left-padded row, are finite and nonzero."""
  cfg = CONFIGS["based-d64"]
  params = init_params(cfg)
  model = BasedLM(cfg)
  ids = random_ids(cfg, (2, 21), seed=8)
  mask = jnp.asarray([[1] * 21, [0] * 6 + [1] * 15], jnp.int32)

  def loss(p):
    logits = model.apply({"params": p}, ids, mask)
    return jnp.mean(jnp.where(mask[..., None] > 0, logits, 0.0) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.isfinite(g).all(), jax.tree_util.keystr(path)
    assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_untied_head_has_lm_head():
  cfg = BasedConfig.tiny(tie_word_embeddings=False)
  params = jinit(BasedLM(cfg), 0, jnp.zeros((1, 4), jnp.int32))
  assert params["lm_head"]["kernel"].shape == (64, cfg.vocab_size_padded)
  h = jnp.ones((1, 4), jnp.int32)
  assert japply(BasedLM(cfg), params, h).shape == (1, 4, cfg.vocab_size_padded)


def test_param_tree_matches_design_doc():
  """Paths and shapes of docs/design.md (the converter's contract), incl. optional params."""
  cfg = BasedConfig.tiny(n_layer=3, conv_bias=True, la_output_norm=True,
                         tie_word_embeddings=False)
  shapes = jax.eval_shape(BasedLM(cfg).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 4), jnp.int32))["params"]
  got = {jax.tree_util.keystr(k, simple=True, separator="/"): v.shape
         for k, v in jax.tree_util.tree_leaves_with_path(shapes)}
  d, hid, c, vp = 64, cfg.mlp_hidden, 128, cfg.vocab_size_padded
  want = {"transformer/embeddings/word_embeddings/embedding": (vp, d),
          "transformer/ln_f/weight": (d,), "lm_head/kernel": (d, vp)}
  for i in range(3):
    pre = f"transformer/layers_{i}/"
    want.update({pre + "norm1/weight": (d,), pre + "norm2/weight": (d,),
                 pre + "mlp/fc1/kernel": (d, 2 * hid), pre + "mlp/fc2/kernel": (hid, d)})
  pre = "transformer/layers_0/mixer/"
  want.update({pre + "in_proj/kernel": (d, 2 * c), pre + "in_proj/bias": (2 * c,),
               pre + "conv/conv/kernel": (3, 1, c), pre + "conv/conv/bias": (c,),
               pre + "out_proj/kernel": (c, d), pre + "out_proj/bias": (d,)})
  pre = "transformer/layers_1/mixer/"
  want.update({pre + "proj_q/kernel": (d, 4 * 16), pre + "proj_k/kernel": (d, 4 * 16),
               pre + "proj_v/kernel": (d, d), pre + "out_proj/kernel": (d, d),
               pre + "g_norm/weight": (16,)})
  pre = "transformer/layers_2/mixer/"
  want.update({pre + "Wqkv/kernel": (d, 3 * d), pre + "out_proj/kernel": (d, d)})
  assert got == want


# ---- presets: parameter counts from the formulas in based_model.md §1.3, §2 --------------------


def expected_count(d, n_layer, vp, hidden, kinds, *, d_inner=None, dv=None, la_heads=16):
  total = vp * d + d  # tied embedding + ln_f
  for kind in kinds:
    total += 2 * d + 3 * d * hidden  # norm1, norm2, fc1 (d, 2h), fc2 (h, d)
    if kind == "C":
      total += d * 2 * d_inner + 2 * d_inner + 3 * d_inner + d_inner * d + d
    elif kind == "L":
      total += 2 * d * la_heads * 16 + d * la_heads * dv + la_heads * dv * d
    else:  # SWA / MHA: Wqkv (d, 3d) + out_proj (d, d)
      total += 4 * d * d
  assert len(kinds) == n_layer
  return total


def _layout(n, la, swa):
  return ["L" if i in la else "S" if i in swa else "C" for i in range(n)]


@pytest.mark.parametrize("preset, expected, published", [
    ("based_360m", expected_count(1024, 27, 50264, 2048, _layout(27, {1, 6, 11, 16, 21},
                                                                  {2, 7, 12, 17, 22}),
                                  d_inner=2048, dv=64), 362e6),
    ("based_1b", expected_count(1792, 36, 50264, 3584,
                                _layout(36, {1, 6, 11, 16, 21, 27, 33}, {2, 7, 12, 17, 22, 28, 34}),
                                d_inner=3584, dv=112), 1.35e9),
    ("attn_360m", expected_count(1024, 24, 50272, 2816, ["A"] * 24), 360e6),
])
def test_preset_parameter_counts(preset, expected, published):
  cfg = getattr(BasedConfig, preset)()
  model = BasedLM(cfg)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
  assert count == expected
  assert abs(count - published) / published < 0.02
  emb = shapes["params"]["transformer"]["embeddings"]["word_embeddings"]["embedding"]
  assert emb.shape == (cfg.vocab_size_padded, cfg.n_embd)


# ---- bad input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
  cfg = CONFIGS["based-d64"]
  return BasedLM(cfg), init_params(cfg)


@pytest.mark.parametrize("ids, match", [
    (jnp.zeros((5,), jnp.int32), "input_ids"),
    (jnp.zeros((1, 2, 3), jnp.int32), "input_ids"),
    (jnp.zeros((1, 5), jnp.float32), "input_ids must have an integer dtype"),
    (np.zeros((1, 0), np.int32), "input_ids"),
])
def test_bad_input_ids(tiny_model, ids, match):
  model, params = tiny_model
  with pytest.raises(ValueError, match=match):
    model.apply({"params": params}, ids)


@pytest.mark.parametrize("mask, match", [
    (jnp.ones((1, 4), jnp.int32), "shape of input_ids"),
    (jnp.asarray([[1, 1, 0, 1, 1]]), "LEFT padding"),
    (jnp.asarray([[0, 1, 1, 1, 0]]), "LEFT padding"),
    (jnp.asarray([[0, 2, 1, 1, 1]]), "only 0"),
    (jnp.ones((1, 5), jnp.float32), "bool or integer"),
])
def test_bad_attention_mask(tiny_model, mask, match):
  model, params = tiny_model
  with pytest.raises(ValueError, match=match):
    model.apply({"params": params}, jnp.zeros((1, 5), jnp.int32), mask)
