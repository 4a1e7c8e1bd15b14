"""Converting a based-360m-sized checkpoint (random weights, the real layout): time and memory.

The spec: <= 60 s on a CPU and peak RAM <= 2x the checkpoint. The conversion runs in a fresh
subprocess so its peak RSS (ru_maxrss) is its own. Marked slow: it writes ~1.45 GB twice.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = [pytest.mark.torch, pytest.mark.slow]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SECONDS = 60.0
# The conversion, then its own peak RSS: VmHWM of its address space, in KiB. (ru_maxrss would
# not do: Linux carries the forking pytest process's RSS into it across exec.)
_CHILD = ("import re, sys; from convert.__main__ import main; "
          "rc = main([sys.argv[1], sys.argv[2], '--quiet']); "
          "status = open('/proc/self/status').read(); "
          "print('MAXRSS_KIB=%s' % re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)); "
          "sys.exit(rc)")


def test_based_360m_conversion_time_and_memory(tmp_path):
  src, dst = tmp_path / "based-360m", tmp_path / "converted"
  try:
    _convert_and_check(src, dst)
  finally:  # ~2.9 GB: do not leave it in pytest's kept temp dirs
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)


def _convert_and_check(src, dst):
  weights = ck.write_random_preset(src, ck.based_360m_hub_config(), seed=0)
  ckpt_bytes = os.path.getsize(weights)
  assert ckpt_bytes > 1.4e9  # ~362M float32 parameters: the real size

  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst)],
                        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                        capture_output=True, text=True, timeout=600, check=False)
  seconds = time.perf_counter() - start
  assert proc.returncode == 0, proc.stderr
  peak = int(proc.stdout.split("MAXRSS_KIB=")[1].split()[0]) * 1024  # bytes
  report = (f"based-360m conversion: {seconds:.1f} s, peak RSS {peak / 2**30:.2f} GiB, "
            f"checkpoint {ckpt_bytes / 2**30:.2f} GiB")
  print(report)
  with open(dst / "config.json") as f:
    config = json.load(f)
  assert config["vocab_size_padded"] == 50264 and config["n_layer"] == 27
  assert 0.97 <= os.path.getsize(dst / "params.safetensors") / ckpt_bytes <= 1.03
  assert peak <= 2 * ckpt_bytes, report
  assert seconds <= MAX_SECONDS, report
