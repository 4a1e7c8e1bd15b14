"""based_jax.pretrained.from_pretrained: sources, dtypes, strictness, and no torch at import."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from based_jax.pretrained import from_pretrained  # pylint: disable=g-import-not-at-top
from convert import (CheckpointError, MissingDependencyError,  # pylint: disable=g-import-not-at-top
                     convert_checkpoint)
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

CASE = ck.CASES_BY_NAME["mixed-Dh24"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrained")
  model = CASE.build(seed=9)
  ck.write_hub_dir(root / "bin", CASE.config, model, "bin")
  ck.write_hub_dir(root / "st", CASE.config, model, "safetensors")
  convert_checkpoint(root / "bin", root / "f32", progress=False)
  convert_checkpoint(root / "bin", root / "b16", dtype="bfloat16", progress=False)
  return root


def _leaves(params):
  return {jax.tree_util.keystr(p): np.asarray(x, np.float32)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


def test_all_sources_give_the_same_model_and_params(dirs):
  model, params = from_pretrained(dirs / "f32")
  want = _leaves(params)
  assert model.dtype == jnp.float32 and model.la_impl == "auto"
  for src in ("bin", "st"):
    m, p = from_pretrained(dirs / src)
    assert m.config == model.config, src
    got = _leaves(p)
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{src}: {k}")


def test_dtypes(dirs):
  model, params = from_pretrained(dirs / "b16", dtype=jnp.bfloat16, la_impl="reference",
                                  attn_impl="xla", mlp_impl="auto")
  assert model.dtype == jnp.bfloat16 and model.la_impl == "reference"
  assert model.attn_impl == "xla" and model.mlp_impl == "auto"
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  _, params = from_pretrained(dirs / "b16", param_dtype=jnp.float32)
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  with pytest.raises(ValueError, match="dtype must be jnp.float32 or jnp.bfloat16"):
    from_pretrained(dirs / "f32", dtype=jnp.float16)


def test_converted_dir_is_checked_strictly(dirs, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "params.safetensors").write_bytes((dirs / "f32" / "params.safetensors").read_bytes())
  config = json.loads((dirs / "f32" / "config.json").read_text())
  config["mlp_hidden"] = 512  # the stored fc1/fc2 are 256 wide
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=r"(?s)wrong shape.*mlp/fc1/kernel"):
    from_pretrained(bad)


def _run(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                        check=False)


def test_no_torch_at_import_and_clear_error_without_torch(dirs):
  """Importing never loads torch; without torch a .bin fails clearly, safetensors still loads."""
  code = f"""
import sys
sys.modules["torch"] = None  # makes `import torch` raise ImportError: torch is not installed
import based_jax, based_jax.pretrained, convert
assert "torch" not in [m for m, v in sys.modules.items() if v is not None], "torch imported"
from based_jax.pretrained import from_pretrained
model, params = from_pretrained({str(dirs / "st")!r})
print("SAFETENSORS_OK", model.config.n_layer)
try:
  from_pretrained({str(dirs / "bin")!r})
except Exception as e:
  print("ERROR", type(e).__name__, e)
"""
  proc = _run(code)
  assert proc.returncode == 0, proc.stderr
  assert "SAFETENSORS_OK 3" in proc.stdout
  assert f"ERROR {MissingDependencyError.__name__}" in proc.stdout
  assert "needs torch" in proc.stdout and "based-jax[torch]" in proc.stdout
