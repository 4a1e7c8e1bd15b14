"""Every way a checkpoint can be wrong gives a named error that says what is wrong.

Each test corrupts a freshly written tiny hub checkpoint in one way and asserts the error class,
the names in its message, and that nothing was written to the output directory.
"""

import json
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from convert import (CheckpointError, CheckpointNotFoundError, ConfigMismatchError,  # pylint: disable=g-import-not-at-top
                     CorruptCheckpointError, UnsafeCheckpointError, convert_checkpoint)
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

CASE = ck.CASES_BY_NAME["mixed-Dh16-w7"]  # layers: 0 conv, 1 LA, 2 SWA, 3 conv; d 64, Vp 104


@pytest.fixture
def hub(tmp_path):
  """A valid hub dir; returns (dir, state dict) so tests can rewrite the weights."""
  model = CASE.build(seed=0)
  ck.write_hub_dir(tmp_path / "hub", CASE.config, model, "bin")
  return tmp_path / "hub", dict(model.state_dict())


def convert_fails(src, dst, error=CheckpointError):
  with pytest.raises(error) as info:
    convert_checkpoint(src, dst, progress=False)
  assert not os.path.exists(os.path.join(dst, "params.safetensors"))
  assert not os.path.exists(os.path.join(dst, "config.json"))
  return str(info.value)


def resave(directory, sd):
  torch.save(sd, directory / "pytorch_model.bin")


def test_missing_key_is_named(hub, tmp_path):
  directory, sd = hub
  del sd["transformer.layers.1.mixer.proj_k.weight"]
  resave(directory, sd)
  msg = convert_fails(directory, tmp_path / "out")
  assert "missing (1)" in msg and "transformer.layers.1.mixer.proj_k.weight" in msg
  assert "transformer/layers_1/mixer/proj_k/kernel" in msg  # the Flax leaf it was for


def test_extra_key_is_named(hub, tmp_path):
  directory, sd = hub
  sd["transformer.layers.0.mixer.bogus.weight"] = torch.zeros(3)
  resave(directory, sd)
  msg = convert_fails(directory, tmp_path / "out")
  assert "unused (1)" in msg and "transformer.layers.0.mixer.bogus.weight" in msg


def test_wrong_shape_is_named(hub, tmp_path):
  directory, sd = hub
  sd["transformer.layers.1.mixer.proj_v.weight"] = torch.zeros(60, 64)
  resave(directory, sd)
  msg = convert_fails(directory, tmp_path / "out")
  assert "wrong shape" in msg and "transformer.layers.1.mixer.proj_v.weight" in msg
  assert "(60, 64)" in msg and "(64, 64)" in msg


def test_all_problems_are_listed_in_one_error(hub, tmp_path):
  directory, sd = hub
  del sd["transformer.layers.3.mlp.fc2.weight"]
  sd["extra.thing"] = torch.zeros(2)
  sd["transformer.layers.2.mixer.Wqkv.weight"] = torch.zeros(192, 63)
  resave(directory, sd)
  msg = convert_fails(directory, tmp_path / "out")
  for needle in ("missing (1)", "transformer.layers.3.mlp.fc2.weight", "unused (1)",
                 "extra.thing", "wrong shape", "transformer.layers.2.mixer.Wqkv.weight"):
    assert needle in msg, needle


def test_layer_type_mismatch_lists_missing_and_unused(hub, tmp_path):
  """config.json says layer 3 is linear attention, the tensors say conv."""
  directory, _ = hub
  config = dict(CASE.config, alt_mixer_layers=[1, 3])
  (directory / "config.json").write_text(json.dumps(config))
  msg = convert_fails(directory, tmp_path / "out")
  assert "transformer.layers.3.mixer.proj_q.weight" in msg  # missing
  assert "transformer.layers.3.mixer.conv.conv.weight" in msg  # unused
  assert "3:linear_attention" in msg


@pytest.mark.parametrize("field,value", [("n_embd", 96), ("n_layer", 5), ("vocab_size", 500)])
def test_config_tensor_mismatch(hub, tmp_path, field, value):
  directory, _ = hub
  (directory / "config.json").write_text(json.dumps(dict(CASE.config, **{field: value})))
  msg = convert_fails(directory, tmp_path / "out", ConfigMismatchError)
  assert f"{field}={value}" in msg


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_truncated_file(tmp_path, fmt):
  path = ck.write_hub_dir(tmp_path / "hub", CASE.config, CASE.build(seed=0), fmt)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) * 2 // 3])
  msg = convert_fails(tmp_path / "hub", tmp_path / "out", CorruptCheckpointError)
  assert "truncated" in msg and os.path.basename(path) in msg


def test_not_a_checkpoint_at_all(tmp_path):
  (tmp_path / "hub").mkdir()
  (tmp_path / "hub" / "config.json").write_text(json.dumps(CASE.config))
  (tmp_path / "hub" / "pytorch_model.bin").write_bytes(b"<html>rate limited</html>")
  msg = convert_fails(tmp_path / "hub", tmp_path / "out", CorruptCheckpointError)
  assert "pytorch_model.bin" in msg


class _RunsCode:
  """Unpickling this would run `touch MARKER`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused_without_running(hub, tmp_path, writer):
  directory, sd = hub
  marker = tmp_path / "PWNED"
  sd["evil"] = _RunsCode(marker)
  if writer == "torch_zip":
    resave(directory, sd)
  else:
    with open(directory / "pytorch_model.bin", "wb") as f:
      pickle.dump(sd, f)
  # Sanity: the payload is real (plain unpickling would run it).
  assert "system" in open(directory / "pytorch_model.bin", "rb").read().decode("latin-1")
  msg = convert_fails(directory, tmp_path / "out", UnsafeCheckpointError)
  assert not marker.exists(), "the pickle's code ran"
  assert "refused" in msg and "pytorch_model.bin" in msg and "system" in msg


def test_untied_head_that_differs_is_refused(hub, tmp_path):
  directory, sd = hub
  sd["lm_head.weight"] = sd["lm_head.weight"].clone() + 1.0
  resave(directory, sd)
  msg = convert_fails(directory, tmp_path / "out")
  assert "tie_word_embeddings" in msg and "lm_head.weight" in msg


def test_non_tensor_entry(hub, tmp_path):
  directory, sd = hub
  sd["step"] = 1000
  resave(directory, sd)
  assert "step" in convert_fails(directory, tmp_path / "out")


def test_legacy_postnorm_layout(hub, tmp_path):
  directory, sd = hub
  sd["transformer.ln_0.weight"] = torch.ones(64)
  resave(directory, sd)
  assert "legacy" in convert_fails(directory, tmp_path / "out")


@pytest.mark.parametrize("setup,needle", [
    ("nothing", "neither an existing directory nor a hub repo id"),
    ("no_config", "has no config.json"),
    ("no_weights", "has no weight file"),
])
def test_source_not_found(tmp_path, setup, needle):
  src = tmp_path / "src"
  if setup == "nothing":
    src = tmp_path / "does" / "not" / "exist"
  else:
    src.mkdir()
    if setup == "no_weights":
      (src / "config.json").write_text(json.dumps(CASE.config))
  msg = convert_fails(src, tmp_path / "out", CheckpointNotFoundError)
  assert needle in msg


def test_bad_dtype_argument(hub, tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of"):
    convert_checkpoint(hub[0], tmp_path / "out", dtype="float16")


def test_pickle_scan_of_a_real_state_dict_finds_only_torch_globals(hub):
  from convert import pickle_scan  # pylint: disable=import-outside-toplevel

  path = str(hub[0] / "pytorch_model.bin")
  found = pickle_scan.imported_globals(path)
  assert "torch._utils._rebuild_tensor_v2" in found
  assert pickle_scan.unsafe_globals(path) == []


def test_learned_position_embeddings_are_refused(hub, tmp_path):
  directory, sd = hub
  sd["transformer.embeddings.position_embeddings.weight"] = torch.zeros(2048, 64)
  resave(directory, sd)
  assert "position_embeddings" in convert_fails(directory, tmp_path / "out")


def test_revision_with_a_local_directory(hub, tmp_path):
  with pytest.raises(CheckpointNotFoundError, match="hub ids only"):
    convert_checkpoint(hub[0], tmp_path / "out", revision="refs/pr/1", progress=False)
