"""Based linear attention through the hand-written CUDA kernel (XLA FFI), with an XLA backward.

Shape legend: B batch, L length, H heads, F = 16 q/k features, E = 273 expanded features,
Dv value dim. q, k: [B, L, H, F] bf16; v: [B, L, H, Dv] bf16; out: [B, L, H, Dv] bf16;
state: kv [B, H, E, Dv] float32, k_state [B, H, E] float32.

The forward is one FFI call (`based_attention.cu`). The backward is the float32 VJP of the
pure-JAX chunked implementation (`based_jax.ops.chunked.chunked_float32_vjp`), so `jax.grad`
works through `custom_vjp`.
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops.chunked import chunked_float32_vjp
from based_jax.ops.state import EXPANDED_DIM, LinearAttentionState
from based_jax.ops.validation import check_linear_attention_args
from ffi import _loader, availability

TARGET = "based_jax_linear_attention_fwd"
TARGET_INIT = "based_jax_linear_attention_fwd_init"
TARGET_INTO = "based_jax_linear_attention_fwd_into"
# Under jax.vmap the FFI call gets the mapped axis in front of every argument (broadcast if
# unbatched); the kernel folds all leading axes into B, so one launch covers the whole batch.
VMAP_METHOD = "broadcast_all"


def _result_types(q, v):
  b, _, h, _ = q.shape  # [B, L, H, F]
  dv = v.shape[-1]
  return (
      jax.ShapeDtypeStruct(v.shape, jnp.bfloat16),  # out [B, L, H, Dv]
      jax.ShapeDtypeStruct((b, h, EXPANDED_DIM, dv), jnp.float32),  # kv [B, H, E, Dv]
      jax.ShapeDtypeStruct((b, h, EXPANDED_DIM), jnp.float32),  # k_state [B, H, E]
  )


def _ffi_forward(q, k, v, init, normalize: bool, eps: float):
  """One kernel launch. init: None or (kv0 [B, H, E, Dv] f32, ks0 [B, H, E] f32)."""
  _loader.ensure_registered()
  attrs = dict(normalize=bool(normalize), eps=np.float32(eps))
  if init is None:
    call = jax.ffi.ffi_call(TARGET, _result_types(q, v), vmap_method=VMAP_METHOD)
    out, kv, ks = call(q, k, v, **attrs)
  else:
    call = jax.ffi.ffi_call(TARGET_INIT, _result_types(q, v), vmap_method=VMAP_METHOD)
    out, kv, ks = call(q, k, v, init[0], init[1], **attrs)
  return out, (kv, ks)


def _ffi_forward_into(q, k, v, kv0, ks0, out_buf, kv_buf, ks_buf, *, normalize: bool, eps: float):
  """Test hook: the kernel writes into the given output buffers (aliased), e.g. NaN-poisoned ones."""
  _loader.ensure_registered()
  call = jax.ffi.ffi_call(
      TARGET_INTO, _result_types(q, v), vmap_method=VMAP_METHOD, input_output_aliases={5: 0, 6: 1, 7: 2})
  return call(q, k, v, kv0, ks0, out_buf, kv_buf, ks_buf, normalize=bool(normalize), eps=np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, init, normalize, eps):
  return _ffi_forward(q, k, v, init, normalize, eps)


def _attention_fwd(q, k, v, init, normalize, eps):
  return _ffi_forward(q, k, v, init, normalize, eps), (q, k, v, init)


def _attention_bwd(normalize, eps, residuals, cotangents):
  q, k, v, init = residuals
  state = None if init is None else LinearAttentionState(*init)
  out_ct, (kv_ct, ks_ct) = cotangents
  dq, dk, dv, d_state = chunked_float32_vjp(q, k, v, state, (out_ct, kv_ct, ks_ct),
                                            normalize=normalize, eps=eps)
  return dq, dk, dv, None if d_state is None else tuple(d_state)


_attention.defvjp(_attention_fwd, _attention_bwd)


def check_args(q, k, v, *, normalize, eps, initial_state) -> None:
  """ValueError naming the argument for anything the kernel cannot take; runs before any launch."""
  check_linear_attention_args(q, k, v, initial_state)
  for name, x in (("q", q), ("k", k), ("v", v)):
    if jnp.dtype(x.dtype) != jnp.dtype(jnp.bfloat16):
      raise ValueError(f"ffi.linear_attention: {name} must be bfloat16; got {x.dtype}")
  if not availability.supported_value_dim(v.shape[-1]):
    raise ValueError(
        "ffi.linear_attention: v must have Dv a multiple of 64 or 56 ([B, L, H, Dv], Dv in 64, 112, "
        f"128, ...); got shape {v.shape}")
  if not isinstance(normalize, (bool, np.bool_)):
    raise ValueError(f"ffi.linear_attention: normalize must be a Python bool; got {type(normalize).__name__}")
  if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not np.isfinite(eps) or eps < 0:
    raise ValueError(f"ffi.linear_attention: eps must be a finite float >= 0 (static); got {eps!r}")


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    normalize: bool,
    eps: float,
    initial_state: LinearAttentionState | None,
) -> tuple[jax.Array, LinearAttentionState]:
  """Causal Based linear attention on the CUDA kernel.

  Args:
    q, k: [B, L, H, 16] bfloat16 (raw; the Taylor feature map is applied in the kernel).
    v: [B, L, H, Dv] bfloat16, Dv a multiple of 64 or 56 (64 for based-360m, 112 for based-1b).
    normalize: divide by phi(q_i).(ks0 + sum_{j<=i} phi(k_j)) + eps, or return the numerator.
    eps: static float added to the denominator.
    initial_state: LinearAttentionState(kv [B, H, 273, Dv], k_state [B, H, 273]) or None (zeros).

  Returns:
    (out [B, L, H, Dv] bfloat16, LinearAttentionState(kv [B, H, 273, Dv] float32,
    k_state [B, H, 273] float32)).

  Raises:
    ValueError: bad shapes/dtypes/attributes (naming the argument), before anything runs.
    RuntimeError: the kernel cannot run here (no Hopper GPU, library missing and no nvcc).
  """
  check_args(q, k, v, normalize=normalize, eps=eps, initial_state=initial_state)
  reason = availability.gpu_reason() or availability.library_reason()
  if reason is not None:
    raise RuntimeError(f"ffi.linear_attention cannot run here: {reason}")
  init = None
  if initial_state is not None:
    init = (initial_state.kv.astype(jnp.float32), initial_state.k_state.astype(jnp.float32))
  out, (kv, ks) = _attention(q, k, v, init, bool(normalize), float(eps))
  return out, LinearAttentionState(kv, ks)
