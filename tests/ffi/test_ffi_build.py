"""`python -m ffi.build` compiles the CUDA source (CI has nvcc, no GPU) and the cache key behaves."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ffi import _compile

REPO = Path(__file__).resolve().parents[2]


def test_build_command_compiles_and_exports_handlers(tmp_path):
  nvcc = _compile.find_nvcc()
  if nvcc is None:
    pytest.skip("nvcc not found on PATH, $CUDA_HOME/bin or /usr/local/cuda/bin: cannot compile-check the CUDA source")
  env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  result = subprocess.run([sys.executable, "-m", "ffi.build", "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr
  assert "RuntimeWarning" not in result.stderr
  library = tmp_path / _compile.LIBRARY_NAME
  assert result.stdout.strip() == str(library)
  assert library.is_file() and library.stat().st_size > 0
  assert not list(tmp_path.glob(".build-*")), "temporary build file left behind"
  lib = ctypes.CDLL(str(library))  # static cudart: loads without a GPU or driver
  for symbol in _compile.HANDLER_SYMBOLS:
    assert hasattr(lib, symbol), symbol


def test_build_without_nvcc_reports_why(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  monkeypatch.delenv("NVCC", raising=False)
  monkeypatch.setattr(_compile, "find_nvcc", lambda: None)
  with pytest.raises(_compile.BuildError, match="nvcc not found"):
    _compile.build(tmp_path)
  assert not list(tmp_path.iterdir())


def test_failing_nvcc_raises_with_its_output(tmp_path):
  fake = tmp_path / "nvcc"
  fake.write_text("#!/bin/sh\necho 'fake compiler error' >&2\nexit 3\n")
  fake.chmod(0o755)
  with pytest.raises(_compile.BuildError, match="fake compiler error"):
    _compile.build(tmp_path / "out", nvcc=str(fake))
  assert not list((tmp_path / "out").iterdir())


def test_cache_key_follows_source_and_jaxlib(monkeypatch, tmp_path):
  key = _compile.cache_key()
  assert len(key) == 16 and key == _compile.cache_key()
  monkeypatch.setenv("BASED_JAX_CACHE_DIR", str(tmp_path))
  assert _compile.default_library_path() == tmp_path / "ffi" / key / _compile.LIBRARY_NAME
  monkeypatch.setattr(_compile, "_jaxlib_version", lambda: "0.0.0-other")
  assert _compile.cache_key() != key
  monkeypatch.undo()
  source = tmp_path / "copy.cu"
  source.write_bytes(_compile.SOURCE.read_bytes() + b"\n// changed\n")
  monkeypatch.setattr(_compile, "SOURCE", source)
  assert _compile.cache_key() != key
