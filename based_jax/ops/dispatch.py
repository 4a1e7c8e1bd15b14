"""The one dispatch point of Based's hot path: causal Taylor linear attention.

Shape legend: B batch, L length, H heads, F q/k feature dim (16), E = 1 + F + F*F = 273 expanded
features, Dv value dim. Activations are token-major [B, L, H, ...]; states are [B, H, E, ...].

Implementations:
  "reference"  quadratic [L, L] definition (tests, short sequences)
  "chunked"    XLA block-parallel form, O(L) memory, any L (CPU default, GPU fallback)
  "pallas"     Mosaic GPU kernel for Hopper (package `pallas_kernels`)
  "ffi"        hand-written CUDA kernel through the XLA FFI (package `ffi`)
  "auto"       pallas -> ffi -> chunked (the measured H200 order, see _auto_order); on a GPU a
               fallback warns once, saying why
A named implementation that cannot run raises; it never falls back silently.
"""

import importlib
import warnings
from typing import Callable, Literal

import jax

from based_jax.ops.chunked import chunked_linear_attention
from based_jax.ops.reference import quadratic_linear_attention
from based_jax.ops.state import LinearAttentionState
from based_jax.ops.validation import check_linear_attention_args

Implementation = Literal["auto", "reference", "chunked", "pallas", "ffi"]
IMPLEMENTATIONS = ("auto", "reference", "chunked", "pallas", "ffi")
# Kernel packages, imported lazily: each exports `linear_attention` and `unavailable_reason`.
_KERNEL_PACKAGES = {"pallas": "pallas_kernels", "ffi": "ffi"}


def _auto_order(q) -> tuple[str, ...]:
  """Kernel preference for "auto", from the measured H200 table (docs/benchmarks.md, L=8192,
  H=16, Dv=64): pallas is faster than ffi's default wgmma kernel at every batch size measured
  (s11g: 0.0694 vs 0.0863 ms at B=1 up to 6.55 vs 9.66 ms at B=256), and faster than the first
  (mma.sync) ffi kernel at every shape of the table, B=1 up to L=131072 included."""
  del q
  return ("pallas", "ffi")


def _kernel_package(impl: str):
  """The kernel package for `impl`, or a string saying why it cannot be imported."""
  name = _KERNEL_PACKAGES[impl]
  try:
    package = importlib.import_module(name)
  except ImportError as e:  # a broken optional install must not break the XLA paths
    return f"package {name!r} cannot be imported ({e})"
  if not all(hasattr(package, f) for f in ("linear_attention", "unavailable_reason")):
    return f"package {name!r} does not export linear_attention and unavailable_reason"
  return package


def unavailable_reason(impl: str, q, k, v) -> str | None:
  """None when `impl` can run on these arguments here; otherwise a human-readable reason."""
  if impl in ("reference", "chunked"):
    return None
  if impl not in _KERNEL_PACKAGES:
    raise ValueError(f"linear_attention: impl must be one of {IMPLEMENTATIONS}; got {impl!r}")
  package = _kernel_package(impl)
  if isinstance(package, str):
    return package
  return package.unavailable_reason(q, k, v)


def _resolve(impl: str, q, k, v) -> Callable:
  if impl == "reference":
    return quadratic_linear_attention
  if impl == "chunked":
    return chunked_linear_attention
  if impl in _KERNEL_PACKAGES:
    reason = unavailable_reason(impl, q, k, v)
    if reason is not None:
      raise RuntimeError(f"linear_attention(impl={impl!r}) cannot run here: {reason}")
    return _kernel_package(impl).linear_attention
  if impl == "auto":
    reasons = []
    for candidate in _auto_order(q):
      reason = unavailable_reason(candidate, q, k, v)
      if reason is None:
        return _kernel_package(candidate).linear_attention
      reasons.append(f"{candidate}: {reason}")
    if jax.default_backend() == "gpu":
      warnings.warn(
          "linear_attention(impl='auto') falls back to the XLA chunked path (" + "; ".join(reasons)
          + ")", RuntimeWarning, stacklevel=3)
    return chunked_linear_attention
  raise ValueError(f"linear_attention: impl must be one of {IMPLEMENTATIONS}; got {impl!r}")


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    normalize: bool,
    eps: float = 1e-12,
    initial_state: LinearAttentionState | None = None,
    impl: Implementation = "auto",
) -> tuple[jax.Array, LinearAttentionState]:
  """Causal linear attention with the 2nd-order Taylor feature map of Based.

  Args:
    q, k: [B, L, H, 16] queries and keys (raw; the feature map is applied inside).
    v: [B, L, H, Dv] values.
    normalize: divide by phi(q_i) . sum_{j<=i} phi(k_j) + eps (released Based checkpoints), or
      return the numerator only (checkpoints with a g_norm output norm).
    eps: added to the denominator when normalizing.
    initial_state: running sums to continue from (a previous prefill's final state), or None.
    impl: which implementation; see the module docstring.

  Returns:
    (out [B, L, H, Dv] in v's dtype, final LinearAttentionState(kv [B, H, 273, Dv] float32,
    k_state [B, H, 273] float32)).
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"linear_attention: impl must be one of {IMPLEMENTATIONS}; got {impl!r}")
  check_linear_attention_args(q, k, v, initial_state)
  fn = _resolve(impl, q, k, v)
  return fn(q, k, v, normalize=normalize, eps=eps, initial_state=initial_state)
