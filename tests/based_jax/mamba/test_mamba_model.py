"""MambaLM: preset size, config round trip and errors, decode vs full forward, left padding,
and `generate()` serving it unchanged (all on CPU with tiny random models)."""

import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from based_jax import generation
from based_jax.mamba import MambaCache, MambaConfig, MambaLM, SsmConfig, is_mamba_config
from based_jax.mamba.model import param_count


def test_mamba_360m_parameter_count_from_the_formula():
  """~358M: embedding Vp*d + 46 layers of (in, conv+bias, x, dt+bias, A_log, D, out, norm) + norm_f."""
  cfg = MambaConfig.mamba_360m()
  d, c, n, k, r, vp = 1024, 2048, 16, 4, 64, 50288
  assert (cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv, cfg.dt_rank,
          cfg.vocab_size_padded) == (d, c, n, k, r, vp)
  per_layer = d * 2 * c + (c * k + c) + c * (r + 2 * n) + (r * c + c) + c * n + c + c * d + d
  want = vp * d + 46 * per_layer + d
  shapes = jax.eval_shape(MambaLM(cfg).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 4), jnp.int32))
  assert param_count(shapes["params"]) == want
  assert 357e6 < want < 359e6


def test_config_round_trip_and_detection():
  hf = {"d_model": 64, "n_layer": 3, "vocab_size": 50277, "ssm_cfg": {"d_state": 8, "dt_min": 0.001},
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
        "pad_vocab_size_multiple": 16, "n_embd": 1024, "use_fast_path": True}
  cfg = MambaConfig.from_hf_dict(hf)
  assert cfg.vocab_size_padded == 50288 and cfg.d_state == 8 and cfg.dt_rank == math.ceil(64 / 16)
  assert cfg.d_inner == 128 and cfg.d_conv == 4
  again = MambaConfig.from_hf_dict(cfg.to_dict())
  assert again == cfg and hash(again) == hash(cfg)
  assert cfg.to_dict()["n_embd"] == 1024 and cfg.to_dict()["ssm_cfg"]["dt_min"] == 0.001
  assert is_mamba_config(hf) and is_mamba_config(cfg.to_dict())
  assert not is_mamba_config({"n_embd": 64, "n_layer": 2})


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_model=0, n_layer=2), "d_model must be a positive int"),
    (dict(d_model=8, n_layer=2, ssm_cfg=SsmConfig(d_state=0)), "ssm_cfg.d_state"),
    (dict(d_model=8, n_layer=2, ssm_cfg=SsmConfig(dt_rank="big")), "dt_rank"),
    (dict(d_model=8, n_layer=2, rms_norm=False), "rms_norm must be True"),
    (dict(d_model=8, n_layer=2, vocab_size=100, vocab_size_padded=50), "vocab_size_padded"),
])
def test_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MambaConfig(**kwargs)


@pytest.fixture(scope="module")
def tiny():
  cfg = MambaConfig.tiny(d_model=32, n_layer=2, vocab_size=101)
  model = MambaLM(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))["params"]
  rng = np.random.default_rng(5)
  # larger random weights than init so that logits are spread out (stable argmax)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x if p[-1].key in ("A_log", "D") else
      x + jnp.asarray(rng.standard_normal(x.shape) * 0.2, x.dtype), params)
  return model, params


def test_decode_steps_match_full_forward(tiny):
  """Prefill 9 tokens, then 67 recurrent steps: logits equal the full forward at each position."""
  model, params = tiny
  rng = np.random.default_rng()
  ids = jnp.asarray(rng.integers(0, 101, (3, 76)), jnp.int32)
  full = jax.jit(model.apply)({"params": params}, ids)  # [B, L, Vp]
  prefill = jax.jit(lambda p, x: model.apply({"params": p}, x, max_length=76, method="prefill"))
  step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, c, method="decode_step"))
  logits, cache = prefill(params, ids[:, :9])
  assert isinstance(cache, MambaCache)
  assert cache.layers[0].conv.shape == (3, 3, 64) and cache.layers[0].ssm.shape == (3, 64, 16)
  assert cache.layers[0].ssm.dtype == jnp.float32
  errs = [float(jnp.abs(logits - full[:, 8]).max())]
  for t in range(9, 76):
    logits, cache = step(params, ids[:, t], cache)
    errs.append(float(jnp.abs(logits - full[:, t]).max()))
  scale = float(jnp.abs(full).max())
  assert max(errs) / scale < 1e-4, max(errs) / scale  # upstream fp32 rtol is 3e-4


def test_left_padding_does_not_change_a_row(tiny):
  model, params = tiny
  rng = np.random.default_rng()
  rows = [rng.integers(0, 101, n) for n in (5, 13)]
  ids = np.full((2, 13), 7, np.int32)
  mask = np.zeros((2, 13), np.int32)
  for i, r in enumerate(rows):
    ids[i, 13 - len(r):], mask[i, 13 - len(r):] = r, 1
  padded = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
  for i, r in enumerate(rows):
    alone = model.apply({"params": params}, jnp.asarray(r[None], jnp.int32))[0]
    np.testing.assert_allclose(padded[i, 13 - len(r):], alone, rtol=1e-5, atol=1e-5 * float(
        jnp.abs(alone).max()))
  # the same through prefill + decode
  logits, cache = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                              max_length=20, method="prefill")
  for i, r in enumerate(rows):
    alone = model.apply({"params": params}, jnp.asarray(r[None], jnp.int32))[0, -1]
    np.testing.assert_allclose(logits[i], alone, rtol=1e-5, atol=1e-5 * float(jnp.abs(alone).max()))


def test_generate_serves_mamba_with_left_padding_and_buckets(tiny):
  """generate() greedy tokens == argmax of repeated full forwards, for each row alone."""
  model, params = tiny
  rng = np.random.default_rng()
  rows = [rng.integers(0, 101, n) for n in (4, 11, 17)]
  ids = np.zeros((3, 17), np.int32)
  mask = np.zeros((3, 17), np.int32)
  for i, r in enumerate(rows):
    ids[i, 17 - len(r):], mask[i, 17 - len(r):] = r, 1
  num_new = 12
  out = generation.generate(model, params, ids, mask, max_new_tokens=num_new)
  assert out.prompt_length == 32  # bucketed: real left padding inside the program
  apply = jax.jit(model.apply)
  total = 17 + num_new
  for i, r in enumerate(rows):
    # causal model: zeros after the current position do not change its logits (one compile)
    buf = np.zeros((1, total), np.int32)
    buf[0, :len(r)] = r
    for t in range(len(r), len(r) + num_new):
      buf[0, t] = int(apply({"params": params}, jnp.asarray(buf))[0, t - 1].argmax())
    assert out.tokens[i].tolist() == buf[0, len(r):len(r) + num_new].tolist(), f"row {i}"


def test_api_errors(tiny):
  model, params = tiny
  ids = jnp.zeros((2, 5), jnp.int32)
  with pytest.raises(ValueError, match="input_ids must have an integer dtype"):
    model.apply({"params": params}, ids.astype(jnp.float32))
  with pytest.raises(ValueError, match="attention_mask must describe LEFT padding"):
    model.apply({"params": params}, ids, jnp.asarray([[1, 1, 0, 1, 1]] * 2))
  with pytest.raises(ValueError, match="max_length must be a static int"):
    model.apply({"params": params}, ids, max_length=3, method="prefill")
  _, cache = model.apply({"params": params}, ids, max_length=8, method="prefill")
  with pytest.raises(ValueError, match=r"token_ids must have shape \[B\] = \(2,\)"):
    model.apply({"params": params}, jnp.zeros((3,), jnp.int32), cache, method="decode_step")
  with pytest.raises(ValueError, match="cache must be the MambaCache"):
    model.apply({"params": params}, jnp.zeros((2,), jnp.int32), {"x": 1}, method="decode_step")
