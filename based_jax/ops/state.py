"""The recurrent state of Based linear attention, shared by every implementation."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

FEATURE_DIM = 16
EXPANDED_DIM = 1 + FEATURE_DIM + FEATURE_DIM * FEATURE_DIM  # 273


class LinearAttentionState(NamedTuple):
  """Running sums of a causal Taylor linear attention, per (batch, head).

  kv:      [B, H, 273, Dv] float32, sum_t phi(k_t) v_t^T
  k_state: [B, H, 273]     float32, sum_t phi(k_t)
  """

  kv: jax.Array
  k_state: jax.Array

  @classmethod
  def zeros(cls, batch: int, num_heads: int, value_dim: int) -> "LinearAttentionState":
    return cls(
        kv=jnp.zeros((batch, num_heads, EXPANDED_DIM, value_dim), jnp.float32),
        k_state=jnp.zeros((batch, num_heads, EXPANDED_DIM), jnp.float32),
    )


def left_pad_initial_state(
    num_pad: jax.Array, num_heads: int, value_dim: int
) -> LinearAttentionState:
  """Initial state that cancels left padding whose k and v rows were zeroed.

  phi(q).phi(0) = 1 exactly, so each zeroed pad row adds 1 to every later denominator and
  nothing to the numerator. Starting k_state at -n_pad on the constant feature removes those
  ones for every real token (pads come first), and the final state holds real tokens only.

  num_pad: [B] integer count of left-pad tokens per row.
  """
  batch = num_pad.shape[0]
  state = LinearAttentionState.zeros(batch, num_heads, value_dim)
  offset = -num_pad.astype(jnp.float32)  # [B]
  k_state = state.k_state.at[:, :, 0].set(jnp.broadcast_to(offset[:, None], (batch, num_heads)))
  return LinearAttentionState(state.kv, k_state)
