"""The probes: the stage-ablation edits of kernel.py must all still match, and the device scripts
must name real probe variants and e2e.py options."""

import pathlib
import re
import subprocess

import pytest


def test_stage_ablation_anchors_match_the_kernel():
  from benchmarks.probes import stage_ablation

  module = stage_ablation.ablated_kernel()   # raises if an anchor is gone or ambiguous
  assert module.SKIP == set()
  assert callable(module.segment_call)


def test_stage_ablation_names_a_missing_anchor(monkeypatch):
  from benchmarks.probes import stage_ablation

  monkeypatch.setattr(stage_ablation, "_EDITS", [("no such text in kernel.py", "")])
  with pytest.raises(RuntimeError, match="anchor not found"):
    stage_ablation.ablated_kernel()


# ---- the device scripts: a typo in a prepared one costs a device session --------------------

PROBES = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "probes"
PENDING = sorted(PROBES.glob("session*_probe*.sh"))


@pytest.mark.parametrize("script", PENDING, ids=lambda p: p.name)
def test_pending_probe_scripts_parse_and_name_real_variants_and_flags(script):
  """bash -n, every probe_variants.py variant exists, every e2e.py flag is one of its options."""
  from benchmarks import e2e
  from benchmarks.probes import probe_variants

  subprocess.run(["bash", "-n", str(script)], check=True)
  text = script.read_text()
  for part in re.findall(r"\b(?:check|time|kernels):([\w,]+)", text):
    for name in part.split(","):
      assert name in probe_variants.VARIANTS, f"{script.name}: unknown variant {name!r}"
  options = {opt for action in e2e.build_parser()._actions for opt in action.option_strings}
  for line in text.splitlines():
    if "e2e.py" in line or "$E2E" in line:
      for flag in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", line):
        assert flag in options, f"{script.name}: e2e.py has no option {flag}"


def test_there_are_pending_probe_scripts():
  assert any(p.name.startswith("session7_") for p in PENDING), "no session7_probe*.sh found"
