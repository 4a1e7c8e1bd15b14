"""The converter's output: file layout, config, dtypes and the exact tensor layout changes.

Values are checked against the PyTorch state dict directly (W.T for Linear, (C,1,K)->(K,1,C)
for the depthwise conv), not against the converter's own mapping table.
"""

import json

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # pylint: disable=g-import-not-at-top

from based_jax.config import BasedConfig  # pylint: disable=g-import-not-at-top
from convert import convert_checkpoint, torch_to_flax  # pylint: disable=g-import-not-at-top
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

MIXED = ck.CASES_BY_NAME["mixed-Dh16-w7"]     # conv, LA, SWA, conv
GNORM = ck.CASES_BY_NAME["gnorm-convbias-Dh16"]  # LA (g_norm), SWA, LA, conv with bias


def read_params(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """params.safetensors -> ({key: float32 array}, metadata), independent of the converter."""
  with safe_open(str(path), framework="flax") as f:
    meta = f.metadata()
    return {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}, meta


def convert_case(tmp_path, case, fmt, seed=0, **kwargs):
  model = case.build(seed=seed)
  ck.write_hub_dir(tmp_path / f"hub-{fmt}", case.config, model, fmt)
  out = convert_checkpoint(tmp_path / f"hub-{fmt}", tmp_path / f"jax-{fmt}", progress=False,
                           **kwargs)
  return model, out


def test_every_weight_format_gives_identical_params(tmp_path):
  results = {}
  for fmt in ("bin", "bin_lightning", "safetensors"):
    _, out = convert_case(tmp_path, MIXED, fmt, seed=5)
    results[fmt] = read_params(out)[0]
  keys = set(results["bin"])
  for fmt, params in results.items():
    assert set(params) == keys, fmt
    for k in keys:
      np.testing.assert_array_equal(params[k], results["bin"][k], err_msg=f"{fmt}: {k}")


@pytest.mark.parametrize("case", [MIXED, GNORM], ids=lambda c: c.name)
def test_layout_changes_match_the_state_dict(tmp_path, case):
  model, out = convert_case(tmp_path, case, "bin", seed=1)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  params, meta = read_params(out)
  assert meta["format"] == "based-jax" and meta["dtype"] == "float32"
  emb = sd["transformer.embeddings.word_embeddings.weight"]
  np.testing.assert_array_equal(params["transformer/embeddings/word_embeddings/embedding"], emb)
  assert "lm_head/kernel" not in params  # tied
  for i, kind in enumerate(model.config.layer_kinds):
    t, f = f"transformer.layers.{i}.", f"transformer/layers_{i}/"
    np.testing.assert_array_equal(params[f + "norm1/weight"], sd[t + "norm1.weight"])
    np.testing.assert_array_equal(params[f + "mlp/fc1/kernel"], sd[t + "mlp.fc1.weight"].T)
    np.testing.assert_array_equal(params[f + "mlp/fc2/kernel"], sd[t + "mlp.fc2.weight"].T)
    if kind == "conv":
      conv = sd[t + "mixer.conv.conv.weight"]  # [C, 1, K]
      got = params[f + "mixer/conv/conv/kernel"]  # [K, 1, C]
      assert got.shape == (conv.shape[2], 1, conv.shape[0])
      for k in range(conv.shape[2]):
        np.testing.assert_array_equal(got[k, 0], conv[:, 0, k])
      np.testing.assert_array_equal(params[f + "mixer/in_proj/bias"], sd[t + "mixer.in_proj.bias"])
      assert (f + "mixer/conv/conv/bias" in params) == case.conv_bias
    elif kind == "linear_attention":
      for p in ("proj_q", "proj_k", "proj_v", "out_proj"):
        np.testing.assert_array_equal(params[f"{f}mixer/{p}/kernel"], sd[f"{t}mixer.{p}.weight"].T)
      assert (f + "mixer/g_norm/weight" in params) == case.la_output_norm
    else:
      np.testing.assert_array_equal(params[f + "mixer/Wqkv/kernel"], sd[t + "mixer.Wqkv.weight"].T)


def test_config_json_holds_the_inferred_sizes(tmp_path):
  _, out = convert_case(tmp_path, GNORM, "safetensors")
  with open(tmp_path / "jax-safetensors" / "config.json") as f:
    written = json.load(f)
  cfg = BasedConfig.from_hf_dict(written)
  assert cfg.to_dict() == written  # round trip
  assert cfg.vocab_size_padded == 104  # 97 padded to a multiple of 8, from the tensor
  assert cfg.mlp_hidden == 256 and cfg.conv_d_inner == 128 and cfg.conv_kernel_size == 3
  assert cfg.la_output_norm and cfg.conv_bias
  assert cfg.layer_types == ("linear_attention", "sliding_window", "linear_attention", "conv")
  # Every leaf of the model's parameter tree is present with its shape, nothing else.
  with safe_open(str(out), framework="flax") as f:
    got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  assert got == torch_to_flax.target_shapes(cfg)


def test_bfloat16_output_is_the_rounded_float32(tmp_path):
  model = MIXED.build(seed=2)
  ck.write_hub_dir(tmp_path / "hub", MIXED.config, model, "bin")
  f32 = convert_checkpoint(tmp_path / "hub", tmp_path / "f32", progress=False)
  b16 = convert_checkpoint(tmp_path / "hub", tmp_path / "b16", dtype="bfloat16", progress=False)
  with safe_open(str(b16), framework="flax") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
  p32, p16 = read_params(f32)[0], read_params(b16)[0]
  for k, v in p32.items():
    np.testing.assert_array_equal(p16[k], v.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_bf16_and_fp16_source_checkpoints(tmp_path):
  model = MIXED.build(seed=4)
  sd = model.state_dict()
  for dtype, fmt in ((torch.bfloat16, "bin"), (torch.float16, "bin"),
                     (torch.bfloat16, "safetensors")):
    name = str(dtype).removeprefix("torch.") + "-" + fmt
    ck.write_hub_dir(tmp_path / name, MIXED.config, model, fmt, dtype=dtype)
    out = convert_checkpoint(tmp_path / name, tmp_path / f"jax-{name}", progress=False)
    params = read_params(out)[0]
    want = sd["transformer.layers.1.mixer.proj_v.weight"].to(dtype).float().numpy().T
    np.testing.assert_array_equal(params["transformer/layers_1/mixer/proj_v/kernel"], want)


def test_ignored_keys_are_dropped_and_reported(tmp_path):
  model = MIXED.build(seed=0)
  ck.write_hub_dir(tmp_path, MIXED.config, model, "bin_lightning")
  with torch_to_flax.readers.open_weights(tmp_path / "pytorch_model.bin") as tensors:
    plan = torch_to_flax.plan_conversion(MIXED.config, tensors)
  assert "train_metrics.num-tokens.count" in plan.dropped
  assert "model.transformer.decay.decay" in plan.dropped
  assert "model.transformer.layers.2.mixer.rotary_emb.inv_freq" in plan.dropped
  assert plan.tied_check == ("transformer.embeddings.word_embeddings.weight", "lm_head.weight")


def test_untied_head_gets_its_own_kernel(tmp_path):
  config = dict(MIXED.config, tie_word_embeddings=False)
  model = MIXED.build(seed=0)
  model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape))
  ck.write_hub_dir(tmp_path / "hub", config, model, "bin")
  params = read_params(convert_checkpoint(tmp_path / "hub", tmp_path / "jax",
                                          progress=False))[0]
  np.testing.assert_array_equal(params["lm_head/kernel"], model.lm_head.weight.detach().numpy().T)


def test_legacy_non_zip_torch_file_converts(tmp_path):
  """torch.save's pre-1.6 format cannot be memory-mapped; it is read (weights_only) all the same."""
  model = MIXED.build(seed=6)
  ck.write_hub_dir(tmp_path / "zip", MIXED.config, model, "bin")
  ck.write_hub_dir(tmp_path / "legacy", MIXED.config, model, "bin")
  torch.save(model.state_dict(), tmp_path / "legacy" / "pytorch_model.bin",
             _use_new_zipfile_serialization=False)
  a = read_params(convert_checkpoint(tmp_path / "zip", tmp_path / "a", progress=False))[0]
  b = read_params(convert_checkpoint(tmp_path / "legacy", tmp_path / "b", progress=False))[0]
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_upstream_defaults_are_overridden_by_the_weights(tmp_path):
  """Released configs may say n_positions=2048 next to max_position_embeddings=0 (GPT2Config
  lets the latter win) and may omit mlp_fc*_bias (upstream default True): no position table and
  no MLP biases in the weights mean none were built."""
  config = dict(MIXED.config, n_positions=2048, max_position_embeddings=0)
  del config["mlp_fc1_bias"], config["mlp_fc2_bias"]
  ck.write_hub_dir(tmp_path / "hub", config, MIXED.build(seed=0), "bin")
  convert_checkpoint(tmp_path / "hub", tmp_path / "jax", progress=False)
  written = json.loads((tmp_path / "jax" / "config.json").read_text())
  assert written["n_positions"] == 0
  assert not written["mlp_fc1_bias"] and not written["mlp_fc2_bias"]
