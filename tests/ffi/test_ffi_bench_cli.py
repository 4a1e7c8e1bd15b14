"""ffi.bench's command line on CPU: kernel lists, segment sweeps and which (kernel, segments) pairs run."""

import argparse

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
