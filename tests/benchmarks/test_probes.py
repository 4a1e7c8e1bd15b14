"""The stage-ablation probe edits kernel.py's source by anchors: they must all still match."""

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
