"""Compiling the CUDA kernel into a shared library (the logic behind `python -m ffi.build`)."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("based_attention.cu")  # the mma.sync kernel (the default)
# Further sources compiled into the same library: the wgmma kernel (kernel="wgmma").
EXTRA_SOURCES = (Path(__file__).with_name("based_attention_wgmma.cu"),)
# Headers the sources include (part of the build's cache key).
HEADERS = (Path(__file__).with_name("ffi_common.cuh"),)
LIBRARY_NAME = "libbased_attention.so"
# Exported handler symbols (extern "C", one per FFI target).
HANDLER_SYMBOLS = (
    "BasedLinearAttentionFwd", "BasedLinearAttentionFwdInit", "BasedLinearAttentionFwdInto",
    "BasedLinearAttentionWgmmaFwd", "BasedLinearAttentionWgmmaFwdInit", "BasedLinearAttentionWgmmaFwdInto",
    "BasedWgmmaSelfTest", "BasedWgmmaSelfTestGram",
)
NVCC_FLAGS = (
    "-O3",
    "-std=c++17",
    "-shared",
    "-Xcompiler",
    "-fPIC",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-diag-suppress=2473,940",  # warnings inside jaxlib's FFI headers
    "-Xcompiler=-Wno-return-type",  # likewise, from the host compiler
)


class BuildError(RuntimeError):
  """The CUDA library could not be compiled (nvcc missing or failing)."""


def find_nvcc() -> str | None:
  """Path of nvcc: $NVCC, then PATH, then $CUDA_HOME/bin, then /usr/local/cuda/bin; None if absent."""
  candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
  for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
    if root:
      candidates.append(os.path.join(root, "bin", "nvcc"))
  for path in candidates:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  return None


def include_dir() -> str:
  """jaxlib's FFI header directory (holds xla/ffi/api/ffi.h)."""
  import jax

  return jax.ffi.include_dir()


def _jaxlib_version() -> str:
  import jaxlib

  return getattr(jaxlib, "__version__", "unknown")


def cache_key() -> str:
  """Hash of the CUDA sources, the nvcc flags and the jaxlib version (16 hex digits)."""
  digest = hashlib.sha256()
  for source in (SOURCE, *EXTRA_SOURCES, *HEADERS):
    digest.update(source.read_bytes())
  digest.update("\0".join(NVCC_FLAGS).encode())
  digest.update(_jaxlib_version().encode())
  return digest.hexdigest()[:16]


def cache_root() -> Path:
  root = os.environ.get("BASED_JAX_CACHE_DIR")
  return Path(root) if root else Path.home() / ".cache" / "based_jax"


def default_library_path() -> Path:
  """Where the cached library for this source and jaxlib lives (it may not exist yet)."""
  return cache_root() / "ffi" / cache_key() / LIBRARY_NAME


def nvcc_command(nvcc: str, output: Path) -> list[str]:
  sources = [str(path) for path in (SOURCE, *EXTRA_SOURCES)]
  return [nvcc, *NVCC_FLAGS, f"-I{include_dir()}", *sources, "-o", str(output)]


def build(out_dir: str | os.PathLike | None = None, *, nvcc: str | None = None, verbose: bool = False) -> Path:
  """Compile `based_attention.cu` and EXTRA_SOURCES into one library; return its path. Raises BuildError with nvcc's output.

  The library is written to a temporary name and renamed, so concurrent builds never load a
  half-written file.
  """
  nvcc = nvcc or find_nvcc()
  if nvcc is None:
    raise BuildError("nvcc not found (looked at $NVCC, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
  target = Path(out_dir) / LIBRARY_NAME if out_dir is not None else default_library_path()
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_name = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
  os.close(fd)
  tmp = Path(tmp_name)
  cmd = nvcc_command(nvcc, tmp)
  if verbose:
    print(" ".join(cmd), file=sys.stderr)
  try:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise BuildError(
          f"nvcc failed with exit code {result.returncode}:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")
    os.replace(tmp, target)
  finally:
    if tmp.exists():
      tmp.unlink()
  return target


def ensure_built() -> Path:
  """The cached library, compiled now if it is missing."""
  path = default_library_path()
  if path.is_file():
    return path
  return build()
