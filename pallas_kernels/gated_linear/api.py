"""Entry point of the gated-linear kernel: validation, padding, custom VJP.

    y = gated_linear(x, w)     x [..., K] bf16, w [K, 2N] bf16 -> y [..., N] bf16
    y = (x @ w)[..., :N] * silu((x @ w)[..., N:])    (fp32 accumulation, one rounding)

The pure-JAX definition lives at the dispatch point, `based_jax.ops.gated_linear`; the backward
pass differentiates that XLA definition, so `jax.grad` works through the kernel.
"""

import functools
import math

import jax
import jax.numpy as jnp

from based_jax.ops.gated_linear import swiglu_gate
from based_jax.ops.hardware import hopper_unavailable_reason
from pallas_kernels.gated_linear.kernel import GatedLinearConfig, gated_linear_call


def _xla_gated_linear(x, w):
  """The definition in XLA with the kernel's rounding: fp32 products, one bf16 rounding."""
  h = jnp.dot(x, w, preferred_element_type=jnp.float32)                  # [..., 2N]
  return swiglu_gate(h).astype(x.dtype)                                  # [..., N]


def shape_reason(x, w, config: GatedLinearConfig = GatedLinearConfig()) -> str | None:
  """None when the kernel takes these shapes and dtypes, else why not (no hardware check)."""
  if x.ndim < 1 or w.ndim != 2:
    return f"x must be [..., K] and w [K, 2N]; got x {x.shape} and w {w.shape}"
  if x.dtype != jnp.bfloat16 or w.dtype != jnp.bfloat16:
    return f"the kernel takes bfloat16 x and w; got {x.dtype} and {w.dtype}"
  k, two_n = w.shape
  if x.shape[-1] != k:
    return f"x's last dim {x.shape[-1]} must equal w's rows {k}"
  if k % config.tile_k:
    return f"K = {k} must be a multiple of {config.tile_k}"
  if two_n % (2 * config.tile_n):
    return f"w's columns 2N = {two_n} must be a multiple of 2 x {config.tile_n}"
  return None


def unavailable_reason(x, w, config: GatedLinearConfig = GatedLinearConfig()) -> str | None:
  """None when the kernel can run these arguments here (Hopper sm_90 GPU), else why not."""
  reason = shape_reason(x, w, config)
  if reason is not None:
    return reason
  return hopper_unavailable_reason("the Pallas gated-linear kernel")


def _forward(x, w, config, interpret):
  k = w.shape[0]
  lead = x.shape[:-1]
  rows = x.reshape(-1, k)                                                # [M, K]
  m = rows.shape[0]
  block_rows = 2 * config.tile_m
  pad = -m % block_rows
  if pad:
    rows = jnp.pad(rows, ((0, pad), (0, 0)))                             # [Mp, K]
  y = gated_linear_call(rows, w, config=config, interpret=interpret)     # [Mp, N]
  return y[:m].reshape(lead + (w.shape[1] // 2,))                        # [..., N]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _gated_linear(x, w, config, interpret):
  return _forward(x, w, config, interpret)


def _gated_linear_fwd(x, w, config, interpret):
  return _forward(x, w, config, interpret), (x, w)


def _gated_linear_bwd(config, interpret, residuals, grad):
  del config, interpret
  x, w = residuals
  _, vjp = jax.vjp(_xla_gated_linear, x, w)
  return vjp(grad)


_gated_linear.defvjp(_gated_linear_fwd, _gated_linear_bwd)


SMALL_ROWS = 4096     # up to here (a decode step), half-height blocks: twice as many of them


def default_config(rows: int) -> GatedLinearConfig:
  """The tiling for `rows` rows: one persistent block per SM walking 2 x 128-row tiles, or
  2 x 64-row tiles, one block each, for at most SMALL_ROWS rows (a decode step: more, smaller
  blocks). On the H200 at based-360m's fc1 the persistent tiling ran 0.388 ms at 32000 rows and
  14.36 ms at 1024000 (non-persistent 2 x 128: 0.556 and 19.0 ms; XLA 0.421 and 15.15 ms); at
  256 rows 2 x 64 ran 0.0095 ms, the persistent one 0.0136 ms (run s7b, docs/benchmarks.md)."""
  if rows <= SMALL_ROWS:
    return GatedLinearConfig(tile_m=64, max_concurrent_steps=2)
  return GatedLinearConfig(persistent=True)


def gated_linear(x, w, *, config: GatedLinearConfig | None = None,
                 interpret=None) -> jax.Array:
  """y = (x @ w)[..., :N] * silu((x @ w)[..., N:]) on the Mosaic GPU kernel.

  x: [..., K] bf16; w: [K, 2N] bf16 (value columns, then gate columns), K a multiple of 64 and
  N of config.tile_n -> y [..., N] bf16. Rows are padded to the kernel's block internally.
  config: the tiling; None picks default_config(rows).
  interpret: a `plgpu.InterpretGPUParams` to run on the CPU interpreter (tests), else None.
  Raises ValueError naming the argument for shapes or dtypes the kernel does not take.
  """
  if config is None:
    config = default_config(math.prod(x.shape[:-1]))
  reason = shape_reason(x, w, config)
  if reason is not None:
    raise ValueError(f"gated_linear: {reason}")
  return _gated_linear(x, w, config, interpret)
