"""Mamba (`backbone.*`) checkpoints: conversion layout, strict errors, and parity of MambaLM
with the independent PyTorch reference (tests/torch_ref/mamba.py) run in float64:
- float32: max|jax - torch| / max|torch| <= 1e-5;
- bfloat16 policy: <= 2e-2 and >= 99% argmax agreement;
- greedy generation (prefill + 64 recurrent steps) identical to the torch recurrence.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
from safetensors import safe_open  # pylint: disable=g-import-not-at-top

from based_jax import generation  # pylint: disable=g-import-not-at-top
from based_jax.mamba import MambaConfig, MambaLM  # pylint: disable=g-import-not-at-top
from based_jax.pretrained import from_pretrained  # pylint: disable=g-import-not-at-top
from convert import CheckpointError, ConfigMismatchError, convert_checkpoint  # pylint: disable=g-import-not-at-top
from tests.torch_ref import mamba as tm  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

# (name, hub config, weight format): default ssm_cfg; a non-default one (d_state 8, d_conv 3,
# expand 3, explicit dt_rank 5) with the lightning layout; the candle-like safetensors layout.
CASES = {
    "default": (tm.hub_config(d_model=32, n_layer=2, vocab_size=97), "bin"),
    "odd-ssm": (tm.hub_config(d_model=24, n_layer=3, vocab_size=90, d_state=8, d_conv=3,
                              expand=3, dt_rank=5, pad_vocab_size_multiple=8), "bin_lightning"),
    "safetensors": (tm.hub_config(d_model=32, n_layer=2, vocab_size=97), "safetensors"),
}


def rel_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


class _Case:

  def __init__(self, name, root):
    config, fmt = CASES[name]
    seed = sum(map(ord, name))
    self.config = config
    self.torch_model = tm.build_model(config, seed=seed).double()
    self.state_dict = {k: v.numpy() for k, v in tm.build_model(config, seed=seed).state_dict().items()}
    tm.write_hub_dir(root / "hub", config, tm.build_model(config, seed=seed), fmt)
    self.out = convert_checkpoint(root / "hub", root / "jax", progress=False)
    self.dir = root / "jax"
    self.model, self.params = from_pretrained(root / "jax", dtype=jnp.float32)

  def ids(self, batch, length, seed=None):
    return np.random.default_rng(seed).integers(0, self.config["vocab_size"], (batch, length))

  def torch_logits(self, ids):
    with torch.no_grad():
      return self.torch_model(torch.from_numpy(ids)).numpy()


_CACHE: dict = {}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
  def get(name):
    if name not in _CACHE:
      _CACHE[name] = _Case(name, tmp_path_factory.mktemp(name))
    return _CACHE[name]

  yield get
  _CACHE.clear()


def test_layout_matches_the_state_dict(case):
  c = case("default")
  sd = c.state_dict
  with safe_open(str(c.out), "flax") as f:
    got = {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}
  assert isinstance(c.model, MambaLM)
  np.testing.assert_array_equal(got["backbone/embedding/embedding"], sd["backbone.embedding.weight"])
  assert "lm_head/kernel" not in got  # tied
  for i in range(2):
    t, j = f"backbone.layers.{i}.mixer.", f"backbone/layers_{i}/mixer/"
    for p in ("in_proj", "x_proj", "dt_proj", "out_proj"):
      np.testing.assert_array_equal(got[j + p + "/kernel"], sd[t + p + ".weight"].T)
    np.testing.assert_array_equal(got[j + "dt_proj/bias"], sd[t + "dt_proj.bias"])
    conv = sd[t + "conv1d.weight"]  # (C, 1, K)
    np.testing.assert_array_equal(got[j + "conv1d/kernel"][:, 0, :], conv[:, 0, :].T)  # (K, C)
    np.testing.assert_array_equal(got[j + "conv1d/bias"], sd[t + "conv1d.bias"])
    np.testing.assert_array_equal(got[j + "A_log"], sd[t + "A_log"])
    np.testing.assert_array_equal(got[j + "D"], sd[t + "D"])
    np.testing.assert_array_equal(got[f"backbone/layers_{i}/norm/weight"],
                                  sd[f"backbone.layers.{i}.norm.weight"])
  cfg = json.loads((c.dir / "config.json").read_text())
  assert cfg["model_type"] == "mamba" and cfg["vocab_size_padded"] == 112
  assert MambaConfig.from_hf_dict(cfg) == c.model.config


def test_from_pretrained_converts_a_torch_dir_on_the_fly(case, tmp_path):
  """A PyTorch Mamba directory loads directly (in memory) to the converted params."""
  c = case("odd-ssm")
  config, fmt = CASES["odd-ssm"]
  tm.write_hub_dir(tmp_path, config, tm.build_model(config, seed=sum(map(ord, "odd-ssm"))), fmt)
  model, params = from_pretrained(tmp_path)
  assert isinstance(model, MambaLM) and model.config == c.model.config
  want = dict(jax.tree_util.tree_leaves_with_path(c.params))
  got = jax.tree_util.tree_leaves_with_path(params)
  assert len(got) == len(want)
  for path, leaf in got:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want[path]), err_msg=str(path))


def test_bfloat16_output_keeps_a_log_and_d_float32(tmp_path):
  config, _ = CASES["default"]
  tm.write_hub_dir(tmp_path / "hub", config, tm.build_model(config, seed=3))
  out = convert_checkpoint(tmp_path / "hub", tmp_path / "jax", dtype="bfloat16", progress=False)
  with safe_open(str(out), "flax") as f:
    dtypes = {k: str(f.get_tensor(k).dtype) for k in f.keys()}
  for k, dt in dtypes.items():
    want = "float32" if k.rsplit("/", 1)[-1] in ("A_log", "D") else "bfloat16"
    assert dt == want, k
  _, params = from_pretrained(tmp_path / "jax", param_dtype=jnp.bfloat16)
  assert params["backbone"]["layers_0"]["mixer"]["A_log"].dtype == jnp.float32
  assert params["backbone"]["layers_0"]["mixer"]["in_proj"]["kernel"].dtype == jnp.bfloat16


@pytest.mark.parametrize("name,length", [("default", 1), ("default", 70), ("odd-ssm", 33),
                                         ("safetensors", 65)])
def test_fp32_logits_match_torch(case, name, length):
  c = case(name)
  ids = c.ids(2, length)
  want = c.torch_logits(ids)
  got = np.asarray(jax.jit(c.model.apply)({"params": c.params}, jnp.asarray(ids, jnp.int32)))
  assert got.shape == want.shape and got.dtype == np.float32
  assert rel_err(got, want) <= 1e-5, f"{name} L={length}: {rel_err(got, want):.3e}"


@pytest.mark.parametrize("name", ["default", "odd-ssm"])
def test_bf16_policy_close_to_torch(case, name):
  c = case(name)
  ids = c.ids(2, 65)
  want = c.torch_logits(ids)
  got = np.asarray(jax.jit(c.model.clone(dtype=jnp.bfloat16).apply)(
      {"params": c.params}, jnp.asarray(ids, jnp.int32)))
  agree = float((got.argmax(-1) == want.argmax(-1)).mean())
  assert rel_err(got, want) <= 2e-2, f"{name} bf16: {rel_err(got, want):.3e}"
  assert agree >= 0.99, f"{name} bf16 argmax agreement {agree:.3%}"
  assert rel_err(got, want) > 1e-5  # the bf16 policy is really applied


def test_greedy_generation_matches_torch_recurrence(case):
  """generate() (prefill + while_loop decode) vs torch prefill + 63 one-token steps."""
  c = case("odd-ssm")
  ids = c.ids(2, 11)
  num_new = 64
  want = c.torch_model.generate_greedy(torch.from_numpy(ids), num_new).numpy()
  out = generation.generate(c.model, c.params, jnp.asarray(ids, jnp.int32),
                            max_new_tokens=num_new, prompt_buckets=None)
  np.testing.assert_array_equal(out.tokens, want)
  np.testing.assert_array_equal(want[:, 0], c.torch_logits(ids)[:, -1].argmax(-1))


def _write(tmp_path, config, sd):
  (tmp_path / "config.json").write_text(json.dumps(config))
  torch.save(sd, tmp_path / "pytorch_model.bin")
  return tmp_path


def test_strict_errors_list_every_problem_at_once(tmp_path):
  config, _ = CASES["default"]
  sd = dict(tm.build_model(config, seed=0).state_dict())
  sd.pop("backbone.layers.1.mixer.D")
  sd["backbone.layers.0.mixer.extra.weight"] = torch.zeros(3)
  sd["backbone.layers.0.mixer.dt_proj.bias"] = torch.zeros(63)
  with pytest.raises(CheckpointError) as info:
    convert_checkpoint(_write(tmp_path, config, sd), tmp_path / "out", progress=False)
  msg = str(info.value)
  assert "missing (1): backbone.layers.1.mixer.D" in msg
  assert "unused (1): backbone.layers.0.mixer.extra.weight" in msg
  assert "backbone.layers.0.mixer.dt_proj.bias: shape (63,)" in msg
  assert not (tmp_path / "out" / "params.safetensors").exists()


@pytest.mark.parametrize("change,match", [
    ({"d_model": 48}, "d_model=48 but the embedding has width 32"),
    ({"n_layer": 3}, "n_layer=3 but the checkpoint has layers 0..1"),
    ({"ssm_cfg": {"d_state": 8}}, "ssm_cfg.d_state=8 but the tensors say 16"),
    ({"vocab_size": 500}, "vocab_size=500 but the embedding has only 112 rows"),
])
def test_config_mismatch_is_named(tmp_path, change, match):
  config, _ = CASES["default"]
  sd = dict(tm.build_model(config, seed=0).state_dict())
  with pytest.raises(ConfigMismatchError, match=match):
    convert_checkpoint(_write(tmp_path, {**config, **change}, sd), tmp_path / "out",
                       progress=False)


def test_backbone_keys_with_a_based_config_are_treated_as_mamba(tmp_path):
  """A Based-style config.json next to backbone.* weights: refused, naming d_model/keys."""
  config, _ = CASES["default"]
  sd = dict(tm.build_model(config, seed=0).state_dict())
  bad = {"n_embd": 32, "n_layer": 2, "vocab_size": 97}
  with pytest.raises(CheckpointError, match="Mamba"):
    convert_checkpoint(_write(tmp_path, bad, sd), tmp_path / "out", progress=False)


def test_mamba_360m_layout_plans_without_reading_data():
  """The full-size hub layout (46 layers, vocab 50277 -> 50288) maps completely; no tensor is
  read (the refs would raise), so this checks names and shapes of the real model cheaply."""
  from convert import torch_to_flax  # pylint: disable=import-outside-toplevel
  from convert.readers import TensorRef  # pylint: disable=import-outside-toplevel

  config = tm.mamba_360m_hub_config()
  with torch.device("meta"):
    meta = tm.MambaLMRef(config)

  def never():
    raise AssertionError("plan_conversion must not read tensor data")

  refs = {k: TensorRef(tuple(v.shape), "float32", never) for k, v in meta.state_dict().items()}
  plan = torch_to_flax.plan_conversion(config, refs)
  assert plan.config == MambaConfig.mamba_360m(vocab_size_padded=50288).replace(
      extra=plan.config.extra)
  assert len(plan.steps) == 2 + 46 * 10
  assert sum(int(np.prod(s.shape)) for s in plan.steps) == 358_190_080
  assert plan.tied_check == ("backbone.embedding.weight", "lm_head.weight")
  fp32 = {s.flax_path.rsplit("/", 1)[-1] for s in plan.steps if s.keep_fp32}
  assert fp32 == {"A_log", "D"}


def test_upstream_defaults_are_checked_against_the_tensors(tmp_path):
  """No conv1d bias in the weights but ssm_cfg leaves conv_bias at its upstream default True."""
  config, _ = CASES["default"]
  sd = {k: v for k, v in tm.build_model(config, seed=0).state_dict().items()
        if not k.endswith("conv1d.bias")}
  with pytest.raises(ConfigMismatchError, match=r"ssm_cfg.conv_bias=\(default\) True but the "
                     "tensors say False"):
    convert_checkpoint(_write(tmp_path, config, sd), tmp_path / "out", progress=False)
  # stated in config.json, the same weights convert and run without a conv bias
  ok = {**config, "ssm_cfg": {"conv_bias": False}}
  convert_checkpoint(_write(tmp_path, ok, sd), tmp_path / "out", progress=False)
  model, params = from_pretrained(tmp_path / "out")
  assert "bias" not in params["backbone"]["layers_0"]["mixer"]["conv1d"]
  ref = tm.build_model(config, seed=0)
  ref.load_state_dict(sd, strict=False)
  for layer in ref.backbone.layers:
    layer.mixer.conv1d.bias = None
  ids = np.random.default_rng().integers(0, 97, (1, 9))
  with torch.no_grad():
    want = ref.double()(torch.from_numpy(ids)).numpy()
  got = np.asarray(model.apply({"params": params}, jnp.asarray(ids, jnp.int32)))
  assert rel_err(got, want) <= 1e-5
