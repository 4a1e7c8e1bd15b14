"""The dispatch point of a SwiGLU MLP's first layer and its gate:

    h = x @ W (+ b)                         x [..., d], W [d, 2N] (torch fc1.weight.T), b [2N]
    y = h[..., :N] * silu(h[..., N:])       [..., N]

Implementations:
  "xla"     the definition (flax nn.Dense's dot in the compute dtype, then the gate as a
            separate elementwise pass); any backend, any dtype, with or without bias. The
            default.
  "pallas"  `pallas_kernels.gated_linear`: the gate applied to the fp32 accumulators of a Mosaic
            GPU gemm, so h is never written (Hopper, bf16, no bias). On the H200 at based-360m's
            fc1 (1024 -> 2 x 2048) 0.388 vs 0.421 ms for XLA's gemm + gate at 32000 rows, but
            0.0095 vs 0.0074 ms at 256 rows (run s7b, docs/benchmarks.md).
  "auto"    "pallas" where it can run and the rows exceed AUTO_MIN_ROWS, else "xla".
A named implementation that cannot run raises ValueError naming the reason; nothing falls back
silently.
"""

import importlib
import math

import jax
import jax.numpy as jnp
from jax import lax

from based_jax.ops.hardware import hopper_unavailable_reason

GATED_LINEAR_IMPLS = ("xla", "pallas", "auto")
AUTO_MIN_ROWS = 4096   # at and below (a decode step) cuBLAS + the gate pass beat the kernel


def swiglu_gate(h: jax.Array) -> jax.Array:
  """h [..., 2N] = [value | gate] -> value * silu(gate) [..., N], in h's dtype."""
  value, gate = jnp.split(h, 2, axis=-1)                                 # [..., N] each
  return value * jax.nn.silu(gate)


def gated_linear_xla(x, kernel, bias=None, *, dtype, precision=None) -> jax.Array:
  """x [..., d], kernel [d, 2N], bias [2N] or None -> [..., N] in `dtype`, computed as flax's
  nn.Dense(2N, dtype=dtype, precision=precision) followed by value * silu(gate)."""
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  h = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                      precision=precision)                               # [..., 2N]
  if bias is not None:
    h = h + bias.astype(dtype)
  return swiglu_gate(h)                                                   # [..., N]


def unavailable_reason(impl: str, x, kernel, bias, dtype) -> str | None:
  """None when `impl` can run on these arguments here; otherwise why not."""
  if impl not in GATED_LINEAR_IMPLS:
    raise ValueError(f"gated_linear: impl must be one of {GATED_LINEAR_IMPLS}; got {impl!r}")
  if impl in ("xla", "auto"):            # "auto" falls back to "xla" by design
    return None
  reason = _model_reason(dtype, has_bias=bias is not None)
  if reason is not None:
    return reason
  package = importlib.import_module("pallas_kernels.gated_linear")
  return package.unavailable_reason(x.astype(dtype), kernel.astype(dtype))   # shapes, GPU


def _model_reason(dtype, has_bias: bool) -> str | None:
  """Why "pallas" cannot serve a model with this compute dtype and fc1 bias, hardware aside."""
  if has_bias:
    return "the Pallas kernel has no bias (fc1 bias in the config)"
  if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
    return f"the Pallas kernel computes in bfloat16; the model computes in {jnp.dtype(dtype)}"
  try:
    importlib.import_module("pallas_kernels.gated_linear")
  except ImportError as e:
    return f"package 'pallas_kernels.gated_linear' cannot be imported ({e})"
  return None


def pallas_model_reason(dtype, has_bias: bool) -> str | None:
  """Why "pallas" cannot run for a model with this compute dtype and fc1 bias on this machine,
  before any input shape is known (the CLI's check of --mlp-impl pallas); None when it can."""
  reason = _model_reason(dtype, has_bias)
  if reason is not None:
    return reason
  return hopper_unavailable_reason("the Pallas gated-linear kernel")


def resolve_auto(x, kernel, bias, dtype) -> str:
  """The implementation "auto" picks for these arguments: "pallas" or "xla"."""
  rows = math.prod(x.shape[:-1])
  if rows > AUTO_MIN_ROWS and unavailable_reason("pallas", x, kernel, bias, dtype) is None:
    return "pallas"
  return "xla"


def gated_linear(x, kernel, bias=None, *, dtype, precision=None, impl: str = "xla"):
  """h = x @ kernel (+ bias); returns h[..., :N] * silu(h[..., N:]) through `impl`.

  x: [..., d]; kernel: [d, 2N]; bias: [2N] or None; dtype: the compute dtype (x and the
  parameters are cast to it); precision: the dot's precision ("xla"). Returns [..., N] in dtype.
  """
  reason = unavailable_reason(impl, x, kernel, bias, dtype)
  if reason is not None:
    raise ValueError(f"gated_linear(impl={impl!r}) cannot run here: {reason}")
  if impl == "auto":
    impl = resolve_auto(x, kernel, bias, dtype)
  if impl == "xla":
    return gated_linear_xla(x, kernel, bias, dtype=dtype, precision=precision)
  package = importlib.import_module("pallas_kernels.gated_linear")
  return package.gated_linear(x.astype(dtype), kernel.astype(dtype))
