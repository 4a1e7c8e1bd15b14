"""Argument checks for the linear-attention hot path, run before any kernel launch."""

import jax.numpy as jnp

from based_jax.ops.state import EXPANDED_DIM, FEATURE_DIM, LinearAttentionState

_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64)


def _shape(x) -> tuple[int, ...]:
  return tuple(getattr(x, "shape", ()))


def check_linear_attention_args(q, k, v, initial_state: LinearAttentionState | None) -> None:
  """Raise ValueError naming the argument when shapes or dtypes do not fit.

  q, k: [B, L, H, 16]; v: [B, L, H, Dv]; initial_state: kv [B, H, 273, Dv], k_state [B, H, 273].
  """
  for name, x in (("q", q), ("k", k), ("v", v)):
    if getattr(x, "ndim", None) != 4:
      raise ValueError(
          f"linear_attention: {name} must have rank 4 ([B, L, H, D]); got shape {_shape(x)}")
    if jnp.dtype(x.dtype) not in [jnp.dtype(d) for d in _FLOAT_DTYPES]:
      raise ValueError(
          f"linear_attention: {name} must be a floating dtype (float32, bfloat16, float16); "
          f"got {x.dtype}")
  if q.shape[-1] != FEATURE_DIM:
    raise ValueError(
        f"linear_attention: q must have feature dim {FEATURE_DIM} ([B, L, H, {FEATURE_DIM}]); "
        f"got shape {q.shape}")
  if k.shape != q.shape:
    raise ValueError(f"linear_attention: k must have the shape of q {q.shape}; got {k.shape}")
  if v.shape[:3] != q.shape[:3]:
    raise ValueError(
        "linear_attention: v must share B, L, H with q: expected "
        f"[{', '.join(map(str, q.shape[:3]))}, Dv]; got {v.shape}")
  if v.shape[-1] < 1:
    raise ValueError(f"linear_attention: v must have a value dim >= 1; got shape {v.shape}")
  if q.shape[1] < 1:
    raise ValueError(f"linear_attention: sequence length must be >= 1; got q shape {q.shape}")
  if not (q.dtype == k.dtype):
    raise ValueError(f"linear_attention: q and k must share a dtype; got {q.dtype} and {k.dtype}")
  if initial_state is None:
    return
  if not isinstance(initial_state, LinearAttentionState):
    raise ValueError(
        "linear_attention: initial_state must be a LinearAttentionState(kv, k_state); "
        f"got {type(initial_state).__name__}")
  b, _, h, _ = q.shape
  dv = v.shape[-1]
  want_kv = (b, h, EXPANDED_DIM, dv)
  want_ks = (b, h, EXPANDED_DIM)
  if _shape(initial_state.kv) != want_kv:
    raise ValueError(
        f"linear_attention: initial_state.kv must have shape {want_kv} ([B, H, 273, Dv]); "
        f"got {_shape(initial_state.kv)}")
  if _shape(initial_state.k_state) != want_ks:
    raise ValueError(
        f"linear_attention: initial_state.k_state must have shape {want_ks} ([B, H, 273]); "
        f"got {_shape(initial_state.k_state)}")
  for name, x in (("kv", initial_state.kv), ("k_state", initial_state.k_state)):
    if jnp.dtype(x.dtype) != jnp.dtype(jnp.float32) and jnp.dtype(x.dtype) != jnp.dtype(jnp.float64):
      raise ValueError(
          f"linear_attention: initial_state.{name} must be float32; got {x.dtype}")
