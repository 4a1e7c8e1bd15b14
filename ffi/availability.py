"""Whether the CUDA kernel can run here on given arguments, and if not, why (no side effects)."""

import os

import jax.numpy as jnp

from based_jax.ops.hardware import hopper_unavailable_reason
from ffi import _compile as build
from ffi import _loader

FEATURE_DIM = 16
# Value-column group widths the kernel is compiled for: Dv must be a multiple of one of them.
VALUE_GROUPS = (64, 56)


def supported_value_dim(dv: int) -> bool:
  """Dv values the kernel handles: multiples of 64 (64, 128, ...) or of 56 (56, 112, ...)."""
  return dv > 0 and any(dv % g == 0 for g in VALUE_GROUPS)


def shape_reason(q, k, v) -> str | None:
  """Why the kernel does not accept these dtypes/shapes, or None. Expects validated arguments."""
  for name, x in (("q", q), ("k", k), ("v", v)):
    if jnp.dtype(x.dtype) != jnp.dtype(jnp.bfloat16):
      return f"the ffi kernel takes bfloat16 q, k, v; {name} is {x.dtype}"
  if q.shape[-1] != FEATURE_DIM:
    return f"the ffi kernel needs feature dim {FEATURE_DIM}; q has shape {q.shape}"
  if not supported_value_dim(v.shape[-1]):
    return f"the ffi kernel supports Dv in multiples of 64 or 56 (64, 112, 128, ...); v has Dv={v.shape[-1]}"
  return None


def gpu_reason() -> str | None:
  """None when the default backend has an NVIDIA Hopper (compute capability 9.x) GPU."""
  return hopper_unavailable_reason("the ffi kernel")


def library_reason() -> str | None:
  """None when the library is built or nvcc can build it now."""
  if _loader.library_path() is not None:
    return None
  override = os.environ.get(_loader.LIBRARY_ENV)
  if override:
    return f"{_loader.LIBRARY_ENV}={override} does not exist"
  if build.find_nvcc() is None:
    return (f"the CUDA library is not built ({build.default_library_path()}) and nvcc is not available "
            "to build it (run `python -m ffi.build` where nvcc is installed)")
  return None


def unavailable_reason(q, k, v) -> str | None:
  """None when the CUDA kernel can run on (q, k, v) here; otherwise why not.

  q, k: [B, L, H, 16]; v: [B, L, H, Dv]. Checks dtypes and Dv, a Hopper GPU, and that the library
  is built or buildable. Never compiles, loads or launches anything.
  """
  return shape_reason(q, k, v) or gpu_reason() or library_reason()
