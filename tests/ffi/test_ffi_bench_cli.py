"""ffi.bench's command line on CPU: kernel lists, segment sweeps and which (kernel, segments) pairs run."""

import argparse
import json

import pytest

from ffi import bench


def test_parse_kernels():
  assert bench.parse_kernels("all") == ("wgmma", "wgmma_smem", "mma_sync", "wgmma_gram")
  assert bench.parse_kernels("wgmma,wgmma_gram") == ("wgmma", "wgmma_gram")
  for bad in ("bogus", "wgmma,nope", ""):
    with pytest.raises(argparse.ArgumentTypeError):
      bench.parse_kernels(bad)


def test_parse_segments():
  assert bench.parse_segments("0,4,8,16,32") == (0, 4, 8, 16, 32)
  assert bench.parse_segments("") == (0,)
  for bad in ("4,x", "-1", "5000"):
    with pytest.raises(argparse.ArgumentTypeError):
      bench.parse_segments(bad)


def test_runs_skip_redundant_pairs():
  kernels = ("wgmma", "wgmma_gram", "mma_sync")
  assert list(bench.runs(kernels, (0, 8), True)) == [("wgmma", 0), ("wgmma", 8), ("mma_sync", 0)]
  assert list(bench.runs(kernels, (0, 8), False)) == [
      ("wgmma", 0), ("wgmma", 8), ("wgmma_gram", 0), ("wgmma_gram", 8), ("mma_sync", 0)]
  assert list(bench.runs(kernels, (0, 8), False, sweep=False)) == [
      ("wgmma", 0), ("wgmma_gram", 0), ("mma_sync", 0)]


def test_cli_rejects_bad_lists():
  with pytest.raises(SystemExit):
    bench.main(["--kernel", "wgmma,bogus"])
  with pytest.raises(SystemExit):
    bench.main(["--segments", "8,-2"])


def test_bench_report_summarises_segments_and_gram(tmp_path, capsys):
  from ffi import bench_report

  def row(kernel, b, normalize, segments, ms):
    return {"kernel": kernel, "segments": segments, "B": b, "L": 8192, "normalize": normalize, "median_ms": ms}

  wgmma = [row("wgmma", 1, False, 0, 0.0863), row("wgmma", 1, False, 8, 0.0800), row("wgmma", 1, False, 32, 0.09),
           row("wgmma", 16, False, 0, 0.6144), row("wgmma", 1, True, 0, 0.0860)]
  gram = [row("wgmma_gram", 1, False, 0, 0.0820), row("wgmma_gram", 1, False, 8, 0.0790),
          {"kernel": "wgmma_gram", "B": 16, "L": 8192, "normalize": False, "error": "boom"}]
  (tmp_path / "a.json").write_text(json.dumps({"results": wgmma}))
  (tmp_path / "b.json").write_text(json.dumps({"partial": True, "results": gram}))
  assert bench_report.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(tmp_path / "missing.json")]) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 3  # (B 1, False), (B 16, False), (B 1, True)
  first = out[0]
  assert first.startswith("B=   1 L=  8192 normalize=False")
  assert "wgmma auto 0.0863, best seg=8 0.0800 (+7.9% vs auto)" in first
  assert "wgmma_gram auto 0.0820, best seg=8 0.0790" in first and "auto/wgmma auto 0.950" in first
  assert "wgmma_gram" not in out[1]  # its B = 16 row failed
  assert bench_report.main([str(tmp_path / "missing.json")]) == 1
