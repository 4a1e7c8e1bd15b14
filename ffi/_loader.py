"""Lazy loading of the CUDA library and registration of its FFI targets (once per process)."""

import ctypes
import os
import threading
from pathlib import Path

import jax

from ffi import _compile as build

# FFI target name -> exported handler symbol.
TARGETS = {
    "based_jax_linear_attention_fwd": "BasedLinearAttentionFwd",
    "based_jax_linear_attention_fwd_init": "BasedLinearAttentionFwdInit",
    "based_jax_linear_attention_fwd_into": "BasedLinearAttentionFwdInto",
    "based_jax_linear_attention_wgmma_fwd": "BasedLinearAttentionWgmmaFwd",
    "based_jax_linear_attention_wgmma_fwd_init": "BasedLinearAttentionWgmmaFwdInit",
    "based_jax_linear_attention_wgmma_fwd_into": "BasedLinearAttentionWgmmaFwdInto",
    "based_jax_wgmma_selftest": "BasedWgmmaSelfTest",
    "based_jax_wgmma_selftest_gram": "BasedWgmmaSelfTestGram",
}
# Environment override: use this prebuilt library instead of the cache.
LIBRARY_ENV = "BASED_JAX_FFI_LIBRARY"

_lock = threading.Lock()
_library: ctypes.CDLL | None = None


def library_path() -> Path | None:
  """The library to load if it already exists: $BASED_JAX_FFI_LIBRARY, else the cached build."""
  override = os.environ.get(LIBRARY_ENV)
  if override:
    return Path(override) if Path(override).is_file() else None
  path = build.default_library_path()
  return path if path.is_file() else None


def ensure_registered() -> None:
  """Load the library (compiling it into the cache first if needed) and register every target.

  Idempotent and thread-safe. Raises build.BuildError when the library is missing and cannot be
  compiled, FileNotFoundError when $BASED_JAX_FFI_LIBRARY names a missing file.
  """
  global _library
  if _library is not None:
    return
  with _lock:
    if _library is not None:
      return
    override = os.environ.get(LIBRARY_ENV)
    if override and not Path(override).is_file():
      raise FileNotFoundError(f"{LIBRARY_ENV}={override} does not exist")
    path = Path(override) if override else build.ensure_built()
    lib = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="CUDA")
    _library = lib
