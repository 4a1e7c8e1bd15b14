"""The symmetric Taylor feature map: each unordered pair x_a x_b once, 153 features instead of 273.

    phi(x)     = [1, x / F^(1/4), x_a x_b / (sqrt 2 sqrt F) for all (a, b)]       273 features
    phi_sym(x) = [1, x / F^(1/4), x_a^2 / (sqrt 2 sqrt F), x_a x_b / sqrt F (a < b)]  153 features
    phi_sym(q).phi_sym(k) = phi(q).phi(k) = 1 + s + s^2 / 2,  s = q.k / sqrt F

(F = 16; the off-diagonal pairs appear once with sqrt 2 times the scale, so each carries the
weight of the two entries (a, b) and (b, a) of phi.) A state in the 273 layout converts exactly:
rows 0..16 and the diagonal stay, and pair (a, b), a < b, becomes (S[a, b] + S[b, a]) / sqrt 2,
so that phi_sym(q).S_sym = phi(q).S for every q and every S. For states that are sums of
phi(k) v^T (S[a, b] = S[b, a]) the conversion back is exact too.

`generate(decode_state="symmetric")` decodes with the 153-row state: each step reads and writes
153 / 273 = 56% of the state bytes of the 273 layout, the largest memory stream of a large-batch
decode step.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops.state import EXPANDED_DIM, FEATURE_DIM, LinearAttentionState

SYMMETRIC_DIM = 1 + FEATURE_DIM + FEATURE_DIM * (FEATURE_DIM + 1) // 2   # 153
_UPPER_A, _UPPER_B = np.triu_indices(FEATURE_DIM, 1)                       # 120 pairs, a < b
_DIAG = np.arange(FEATURE_DIM)
_HEAD = 1 + FEATURE_DIM                                                    # constant + linear rows


def symmetric_feature_map(x: jax.Array) -> jax.Array:
  """x: [..., F] -> phi_sym(x) [..., 153] in x's dtype (layout in the module docstring)."""
  f = x.shape[-1]
  if f != FEATURE_DIM:
    raise ValueError(f"symmetric_feature_map: the feature dim must be {FEATURE_DIM}; got {f}")
  ones = jnp.ones((*x.shape[:-1], 1), x.dtype)                                # [..., 1]
  diag = x * x / (math.sqrt(2.0) * math.sqrt(f))                               # [..., F]
  pairs = x[..., _UPPER_A] * x[..., _UPPER_B] / math.sqrt(f)                   # [..., 120]
  return jnp.concatenate([ones, x / math.sqrt(math.sqrt(f)), diag, pairs], axis=-1)


def _rows_to_symmetric(s: jax.Array) -> jax.Array:
  """s: [..., 273, D] -> [..., 153, D] (the row map of the module docstring)."""
  quad = s[..., _HEAD:, :].reshape(*s.shape[:-2], FEATURE_DIM, FEATURE_DIM, s.shape[-1])
  diag = quad[..., _DIAG, _DIAG, :]                                            # [..., F, D]
  pairs = (quad[..., _UPPER_A, _UPPER_B, :] + quad[..., _UPPER_B, _UPPER_A, :]) / math.sqrt(2.0)
  return jnp.concatenate([s[..., :_HEAD, :], diag, pairs], axis=-2)          # [..., 153, D]


def _rows_from_symmetric(s: jax.Array) -> jax.Array:
  """s: [..., 153, D] -> [..., 273, D], each pair split evenly over (a, b) and (b, a)."""
  lead, d = s.shape[:-2], s.shape[-1]
  half = s[..., _HEAD + FEATURE_DIM:, :] / math.sqrt(2.0)                      # [..., 120, D]
  quad = jnp.zeros((*lead, FEATURE_DIM, FEATURE_DIM, d), s.dtype)             # [..., F, F, D]
  quad = quad.at[..., _DIAG, _DIAG, :].set(s[..., _HEAD:_HEAD + FEATURE_DIM, :])
  quad = quad.at[..., _UPPER_A, _UPPER_B, :].set(half)
  quad = quad.at[..., _UPPER_B, _UPPER_A, :].set(half)
  flat = quad.reshape(*lead, FEATURE_DIM * FEATURE_DIM, d)                     # [..., 256, D]
  return jnp.concatenate([s[..., :_HEAD, :], flat], axis=-2)                  # [..., 273, D]


def _convert(state: LinearAttentionState, rows: int, row_map, name: str) -> LinearAttentionState:
  """Applies row_map ([..., rows, D] -> [..., rows', D]) to kv and k_state."""
  if state.kv.shape[-2] != rows or state.k_state.shape[-1] != rows:
    raise ValueError(f"{name}: expected kv [..., {rows}, Dv] and k_state [..., {rows}]; got "
                     f"{state.kv.shape} and {state.k_state.shape}")
  return LinearAttentionState(row_map(state.kv), row_map(state.k_state[..., None])[..., 0])


def to_symmetric_state(state: LinearAttentionState) -> LinearAttentionState:
  """kv [B, H, 273, Dv], k_state [B, H, 273] -> the same state with 153 rows (exact)."""
  return _convert(state, EXPANDED_DIM, _rows_to_symmetric, "to_symmetric_state")


def from_symmetric_state(state: LinearAttentionState) -> LinearAttentionState:
  """The inverse of to_symmetric_state for symmetric 273 states: 153 rows -> 273 rows."""
  return _convert(state, SYMMETRIC_DIM, _rows_from_symmetric, "from_symmetric_state")


def map_linear_attention_states(fn, cache, state_type=LinearAttentionState):
  """Applies fn to every `state_type` (a LinearAttentionState, or e.g. a DeferredState) inside a
  cache pytree (other leaves unchanged)."""
  is_state = lambda x: isinstance(x, state_type)
  return jax.tree.map(lambda x: fn(x) if is_state(x) else x, cache, is_leaf=is_state)
