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


def _loop_values(text: str) -> dict[str, list[str]]:
  """{"$attn": ["xla", "cudnn"]} for each `for attn in xla cudnn; do` in a script."""
  return {f"${var}": values.split() for var, values in re.findall(r"for (\w+) in ([\w ]+); do",
                                                                    text)}


def _expand(name: str, loops: dict[str, list[str]]) -> set[str]:
  for var, values in loops.items():
    if var in name:
      return {name.replace(var, value) for value in values}
  return {name}


# the scripts written since the 8-file limit was known
FILE_LIMIT_PREFIXES = ("session7_", "session8_", "session9_", "session10_", "session11_",
                       "session12_")


@pytest.mark.parametrize("script", [p for p in PENDING if p.name.startswith(FILE_LIMIT_PREFIXES)],
                         ids=lambda p: p.name)
def test_pending_probe_scripts_bring_back_at_most_8_files(script):
  """The device tool returns at most 8 files from $OUT; e2e.py writes a PNG beside its JSON
  unless --plot points elsewhere, and ncu_lib.sh's ncu_one NAME writes two files."""
  text = script.read_text()
  loops = _loop_values(text)
  files = set()
  for line in text.splitlines():
    for name in re.findall(r"\$OUT/([\w.$-]+)(?![\w.$*-])", line):   # not a glob ($OUT/gpu*.log)
      files |= _expand(name, loops)
      if ("e2e.py" in line or "$E2E" in line) and name.endswith(".json") and "--plot" not in line:
        files |= _expand(name[:-len(".json")] + ".png", loops)
    for name in re.findall(r"\bncu_one (\w+)", line):
      files |= {f"{name}_details.txt", f"{name}_sass.csv.gz"}
  assert len(files) <= 8, sorted(files)


def test_there_are_pending_probe_scripts():
  assert any(p.name.startswith("session12_") for p in PENDING), "no session12_probe*.sh found"
