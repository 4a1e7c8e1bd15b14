"""Checks of model inputs (token ids, left-padding masks) shared by every LM in based_jax."""

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_token_ids(x, name: str, rank: int, shape_text: str) -> None:
  """Raise ValueError unless x is an integer array of the given rank (e.g. [B, L] or [B])."""
  if not hasattr(x, "dtype") or getattr(x, "ndim", None) != rank:
    raise ValueError(f"{name} must be an integer array of shape {shape_text}; got "
                     f"{type(x).__name__} with shape {getattr(x, 'shape', None)}")
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(f"{name} must have an integer dtype (int32); got {x.dtype}")
  if rank == 2 and x.shape[1] < 1:
    raise ValueError(f"{name} must have at least one token per row; got shape {x.shape}")


def check_attention_mask(mask, input_ids):
  """attention_mask [B, L] (1 real, 0 pad; left padding) -> bool [B, L]."""
  if getattr(mask, "shape", None) != input_ids.shape:
    raise ValueError(f"attention_mask must have the shape of input_ids {input_ids.shape} "
                     f"([B, L]); got {getattr(mask, 'shape', None)}")
  if not (jnp.issubdtype(mask.dtype, jnp.integer) or mask.dtype == jnp.bool_):
    raise ValueError(f"attention_mask must be bool or integer (1 real, 0 pad); got {mask.dtype}")
  if _is_concrete(mask):
    m = np.asarray(mask)
    if not np.isin(m, (0, 1)).all():
      raise ValueError("attention_mask must contain only 0 (pad) and 1 (real token)")
    m = m.astype(bool)
    if not m[:, -1].all() or (m[:, 1:] < m[:, :-1]).any():
      raise ValueError("attention_mask must describe LEFT padding: per row zeros then ones, "
                       "with the last position real")
  return mask.astype(bool)
