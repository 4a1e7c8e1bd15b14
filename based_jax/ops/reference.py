"""Pure-JAX oracles for Based linear attention: the definitions every kernel is tested against.

Shapes (docs/design.md): q, k [B, L, H, F=16]; v [B, L, H, Dv]; phi(x) [..., E=273].
These follow the math of `LinearAttention` with `TaylorExp(input_dim=16)` in HazyResearch/based
(based/models/mixers/linear_attention.py, commit 32c1bd4): the "quadratic" parallel form for prefill
and the recurrent step for decoding. Everything is computed in float32 (float64 when given float64
with x64 enabled), at full matmul precision.
"""

import math

import jax
import jax.numpy as jnp

from based_jax.ops import symmetric
from based_jax.ops.state import EXPANDED_DIM, FEATURE_DIM, LinearAttentionState

_HIGHEST = jax.lax.Precision.HIGHEST


def _accumulation_dtype(*xs) -> jnp.dtype:
  return jnp.float64 if any(x.dtype == jnp.float64 for x in xs) else jnp.float32


def taylor_feature_map(x: jax.Array) -> jax.Array:
  """phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))], so phi(q).phi(k) = 1 + s + s^2/2.

  x: [..., F] -> [..., 1 + F + F*F], in x's dtype; the quadratic block is flattened i-major
  (entry 1 + F + i*F + j holds x_i x_j / (sqrt(2) sqrt(F))).
  """
  f = x.shape[-1]
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], f * f)  # [..., F*F]
  ones = jnp.ones((*x.shape[:-1], 1), x.dtype)  # [..., 1]
  return jnp.concatenate(
      [ones, x / math.sqrt(math.sqrt(f)), outer / (math.sqrt(2.0) * math.sqrt(f))], axis=-1)


def quadratic_linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    normalize: bool,
    eps: float,
    initial_state: LinearAttentionState | None = None,
) -> tuple[jax.Array, LinearAttentionState]:
  """Causal Taylor linear attention through the explicit [L, L] score matrix (the definition).

  Memory is O(L^2) per (batch, head): use it for tests and short sequences only.
  Returns (out [B, L, H, Dv] in v's dtype, final LinearAttentionState in float32).
  """
  acc = _accumulation_dtype(q, k, v)
  b, length, h, f = q.shape
  dv = v.shape[-1]
  qf, kf, vf = q.astype(acc), k.astype(acc), v.astype(acc)
  if initial_state is None:
    initial_state = LinearAttentionState.zeros(b, h, dv)
  kv0 = initial_state.kv.astype(acc)  # [B, H, E, Dv]
  ks0 = initial_state.k_state.astype(acc)  # [B, H, E]

  s = jnp.einsum("blhf,bmhf->bhlm", qf, kf, precision=_HIGHEST) / math.sqrt(f)  # [B, H, L, L]
  causal = jnp.tril(jnp.ones((length, length), bool))  # [L, L]
  scores = jnp.where(causal, 1.0 + s + 0.5 * s * s, 0.0)  # [B, H, L, L]
  phi_q = taylor_feature_map(qf)  # [B, L, H, E]
  phi_k = taylor_feature_map(kf)  # [B, L, H, E]

  num = jnp.einsum("bhlm,bmhd->blhd", scores, vf, precision=_HIGHEST)  # [B, L, H, Dv]
  num = num + jnp.einsum("blhe,bhed->blhd", phi_q, kv0, precision=_HIGHEST)
  if normalize:
    den = jnp.einsum("bhlm->blh", scores)  # [B, L, H]
    den = den + jnp.einsum("blhe,bhe->blh", phi_q, ks0, precision=_HIGHEST)
    out = num / (den[..., None] + eps)
  else:
    out = num

  kv = kv0 + jnp.einsum("blhe,blhd->bhed", phi_k, vf, precision=_HIGHEST)  # [B, H, E, Dv]
  ks = ks0 + jnp.einsum("blhe->bhe", phi_k)  # [B, H, E]
  state = LinearAttentionState(kv.astype(jnp.float32), ks.astype(jnp.float32))
  return out.astype(v.dtype), state


def state_feature_map(state: LinearAttentionState, caller: str):
  """The feature map of a state's layout: taylor_feature_map for 273 rows, the symmetric map of
  based_jax.ops.symmetric for 153; a ValueError naming `caller` otherwise."""
  rows = state.kv.shape[-2]
  if rows == EXPANDED_DIM:
    return taylor_feature_map
  if rows == symmetric.SYMMETRIC_DIM:
    return symmetric.symmetric_feature_map
  raise ValueError(f"{caller}: state.kv must have {EXPANDED_DIM} or "
                   f"{symmetric.SYMMETRIC_DIM} feature rows; got kv {state.kv.shape}")


def recurrent_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    state: LinearAttentionState,
    *,
    normalize: bool,
    eps: float,
) -> tuple[jax.Array, LinearAttentionState]:
  """One decoding step: add phi(k) v^T to the state, then read it with phi(q).

  q, k: [B, H, F]; v: [B, H, Dv]; state kv [B, H, E, Dv], k_state [B, H, E] (float32), with
  E = 273 (taylor_feature_map) or 153 (the symmetric map of based_jax.ops.symmetric, the same
  attention with each feature pair once).
  Returns (out [B, H, Dv] in v's dtype, updated state in float32, in the state's layout).
  """
  feature_map = state_feature_map(state, "recurrent_step")
  phi_q = feature_map(q.astype(jnp.float32))  # [B, H, E]
  phi_k = feature_map(k.astype(jnp.float32))  # [B, H, E]
  kv = state.kv + phi_k[..., :, None] * v.astype(jnp.float32)[..., None, :]  # [B, H, E, Dv]
  ks = state.k_state + phi_k  # [B, H, E]
  num = jnp.einsum("bhe,bhed->bhd", phi_q, kv, precision=_HIGHEST)  # [B, H, Dv]
  if normalize:
    den = jnp.einsum("bhe,bhe->bh", phi_q, ks, precision=_HIGHEST)  # [B, H]
    out = num / (den[..., None] + eps)
  else:
    out = num
  return out.astype(v.dtype), LinearAttentionState(kv, ks)


assert EXPANDED_DIM == 1 + FEATURE_DIM + FEATURE_DIM**2
