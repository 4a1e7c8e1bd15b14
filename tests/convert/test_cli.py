"""`based-jax-convert` / `python -m convert`: help, success, errors, and hub ids offline.

Hub tests run the CLI in a subprocess with HF_HUB_OFFLINE=1 and a private HF cache (env vars are
read when huggingface_hub is imported), so nothing touches the network or the user's cache.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # pylint: disable=g-import-not-at-top

from convert.__main__ import main  # pylint: disable=g-import-not-at-top
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

CASE = ck.CASES_BY_NAME["attn-Dh16"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_names_every_option(capsys):
  with pytest.raises(SystemExit) as info:
    main(["--help"])
  assert info.value.code == 0
  text = capsys.readouterr().out
  for needle in ("SRC", "DST", "--dtype", "float32", "bfloat16", "--revision", "HF_HUB_OFFLINE",
                 "hazyresearch/based-360m", "weights_only"):
    assert needle in text, needle


def test_convert_then_error_exit_codes(tmp_path, capsys):
  ck.write_hub_dir(tmp_path / "hub", CASE.config, CASE.build(seed=0), "safetensors")
  assert main([str(tmp_path / "hub"), str(tmp_path / "out"), "--quiet", "--dtype",
               "bfloat16"]) == 0
  assert "wrote" in capsys.readouterr().out
  with safe_open(str(tmp_path / "out" / "params.safetensors"), framework="flax") as f:
    assert f.metadata()["dtype"] == "bfloat16"
  json.loads((tmp_path / "out" / "config.json").read_text())
  # An error: exit code 2 and the message on stderr, no traceback.
  assert main([str(tmp_path / "missing"), str(tmp_path / "out2"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert "based-jax-convert: error:" in err and "missing" in err and "Traceback" not in err


def _write_hub_cache(cache, repo_id, src_dir, files):
  """The huggingface_hub cache layout: refs/main -> snapshots/<commit>/<files>."""
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = cache / ("models--" + repo_id.replace("/", "--"))
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  snap = repo / "snapshots" / commit
  snap.mkdir(parents=True)
  for name in files:
    (snap / name).write_bytes((src_dir / name).read_bytes())


def _run_cli(args, cache):
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent),
             PYTHONPATH=REPO_ROOT)
  return subprocess.run([sys.executable, "-m", "convert", *args, "--quiet"], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)


def test_hub_id_offline(tmp_path):
  """A cached hub repo converts offline; an uncached one fails with a how-to-fix message."""
  cache = tmp_path / "hf" / "hub"
  cache.mkdir(parents=True)
  ck.write_hub_dir(tmp_path / "src", CASE.config, CASE.build(seed=3), "bin")
  _write_hub_cache(cache, "someone/tiny-attn", tmp_path / "src",
                   ("config.json", "pytorch_model.bin"))
  ok = _run_cli(["someone/tiny-attn", str(tmp_path / "out")], cache)
  assert ok.returncode == 0, ok.stderr
  assert main([str(tmp_path / "src"), str(tmp_path / "local"), "--quiet"]) == 0
  with safe_open(str(tmp_path / "out" / "params.safetensors"), framework="flax") as a, \
       safe_open(str(tmp_path / "local" / "params.safetensors"), framework="flax") as b:
    assert set(a.keys()) == set(b.keys())
    for k in a.keys():
      np.testing.assert_array_equal(np.asarray(a.get_tensor(k)), np.asarray(b.get_tensor(k)))

  missing = _run_cli(["someone/not-cached", str(tmp_path / "out2")], cache)
  assert missing.returncode == 2
  for needle in ("someone/not-cached", "not in the local Hugging Face cache",
                 "HF_HUB_OFFLINE is set", "Fix:"):
    assert needle in missing.stderr, (needle, missing.stderr)
  assert not (tmp_path / "out2").exists()
