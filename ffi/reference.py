"""Pure-JAX model of what `based_attention.cu` computes, in the kernel's own layout (runs anywhere).

It mirrors the kernel step by step so that its layout and numerics can be read and tested on a
CPU: the 288 padded internal features, the q-side weights, the ones column that carries the
denominator and k_state, bf16 rounding of every tensor-core operand, 64-token chunks, and the
sequence split into segments whose partial states are summed before the segments run.

Shape legend: B batch, L length, H heads, F = 16, E = 273 phi features, P = 288 internal features,
C = 64 chunk, Dv value dim (Dv + 1 with the ones column), N chunks, S segments.

Internal features of x (unscaled, as the kernel keeps its state):
  p = 16 a + b, a < 16: x_a x_b     (phi index 17 + p,   phi = internal / (4 sqrt 2))
  p = 256 + b:          x_b         (phi index 1 + b,    phi = internal / 2)
  p = 272:              1           (phi index 0,        phi = internal)
  p = 273 .. 287:       0 (padding)
and phi(q).phi(k) = sum_p w_p f(q)_p f(k)_p with w = 1/32, 1/4, 1 on the three blocks.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops.state import EXPANDED_DIM, LinearAttentionState

CHUNK = 64
INTERNAL_DIM = 288
# Query-side weight of each internal feature (exact powers of two, so bf16 scaling is exact).
QUERY_WEIGHTS = np.concatenate([np.full(256, 1 / 32), np.full(16, 1 / 4), np.ones(16)])


def _phi_layout() -> tuple[np.ndarray, np.ndarray]:
  """For each internal feature: its phi index (-1 for padding) and internal = phi * scale."""
  p = np.arange(INTERNAL_DIM)
  a, b = p // 16, p % 16
  index = np.where(a < 16, 17 + p, np.where(a == 16, 1 + b, np.where(b == 0, 0, -1)))
  scale = np.where(a < 16, 4 * math.sqrt(2), np.where(a == 16, 2.0, 1.0))
  return index, scale


PHI_INDEX, PHI_SCALE = _phi_layout()


def internal_features(x: jax.Array) -> jax.Array:
  """[..., 16] -> [..., 288] unscaled internal features (see the module docstring)."""
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], 256)  # [..., 256]
  const = jnp.zeros(x.shape[:-1] + (16,), x.dtype).at[..., 0].set(1)  # [..., 16]
  return jnp.concatenate([outer, x, const], axis=-1)  # [..., P]


def to_internal(phi_state: jax.Array) -> jax.Array:
  """[B, H, E, ...] in phi features -> [B, H, P, ...] internal (padding features zero)."""
  gathered = jnp.take(phi_state, np.maximum(PHI_INDEX, 0), axis=2)  # [B, H, P, ...]
  factor = np.where(PHI_INDEX >= 0, PHI_SCALE, 0.0).reshape((-1,) + (1,) * (phi_state.ndim - 3))
  return gathered * factor.astype(np.float32)


def from_internal(state: jax.Array) -> jax.Array:
  """[B, H, P, ...] internal -> [B, H, E, ...] phi features (the inverse of `to_internal`)."""
  keep = np.flatnonzero(PHI_INDEX >= 0)
  order = keep[np.argsort(PHI_INDEX[keep])]  # internal feature of each phi index 0..272
  assert len(order) == EXPANDED_DIM
  factor = (1 / PHI_SCALE[order]).reshape((-1,) + (1,) * (state.ndim - 3))
  return jnp.take(state, order, axis=2) * factor.astype(np.float32)


def _bf16(x):
  return x.astype(jnp.bfloat16).astype(jnp.float32)


def _chunk_step(state, chunk):
  """One 64-token chunk. state [B, H, P, Dv+1] f32; returns the new state and O [B, C, H, Dv+1]."""
  qf, kf, v1, scores = chunk
  out = jnp.einsum("bchp,bhpd->bchd", qf, _bf16(state))  # [B, C, H, Dv+1] inter-chunk
  out = out + jnp.einsum("bhij,bjhd->bihd", scores, v1)  # [B, C, H, Dv+1] intra-chunk
  state = state + jnp.einsum("bchp,bchd->bhpd", kf, v1)  # [B, H, P, Dv+1]
  return state, out


def kernel_reference(q, k, v, *, normalize: bool, eps: float,
                     initial_state: LinearAttentionState | None = None, num_segments: int = 1):
  """What the CUDA kernel computes, with its roundings and segment split.

  q, k: [B, L, H, 16]; v: [B, L, H, Dv] (bf16 as the kernel takes them) ->
  (out [B, L, H, Dv] bf16, LinearAttentionState(kv [B, H, 273, Dv] f32, k_state [B, H, 273] f32)).
  num_segments: how many sequence segments run in parallel (the kernel picks it from the GPU size).
  """
  b, length, h, _ = q.shape
  dv = v.shape[-1]
  n = -(-length // CHUNK)
  cps = -(-n // num_segments)  # chunks per segment
  segments = -(-n // cps)
  pad = segments * cps * CHUNK - length
  valid = (jnp.arange(length + pad) < length).astype(jnp.float32)  # [L']
  q, k, v = (jnp.pad(x.astype(jnp.float32), ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
  v1 = jnp.concatenate([v, jnp.broadcast_to(valid[None, :, None, None], (b, length + pad, h, 1))], -1)
  qf = _bf16(internal_features(q)) * QUERY_WEIGHTS.astype(np.float32)  # [B, L', H, P]
  kf = _bf16(internal_features(k))  # [B, L', H, P]
  qc = q.reshape(b, segments * cps, CHUNK, h, 16)  # [B, N, C, H, F]
  kc = k.reshape(b, segments * cps, CHUNK, h, 16)  # [B, N, C, H, F]
  s = jnp.einsum("bnihf,bnjhf->bnhij", qc, kc) / 4  # [B, N, H, C, C]
  causal = np.tril(np.ones((CHUNK, CHUNK), np.float32))
  scores = _bf16((1 + s + s * s / 2) * causal)  # [B, N, H, C, C]

  def per_chunk(x, tail):  # [B, L', ...] -> [S, cps, B, C, ...]
    return jnp.moveaxis(x.reshape(b, segments, cps, CHUNK, *tail), 0, 2)

  chunks = (per_chunk(qf, (h, INTERNAL_DIM)), per_chunk(kf, (h, INTERNAL_DIM)), per_chunk(v1, (h, dv + 1)),
            jnp.moveaxis(scores.reshape(b, segments, cps, h, CHUNK, CHUNK), 0, 2))
  # Pass 1: each segment's phi(K)^T [V, 1] from zero; then exclusive prefix sums over segments.
  partial = jnp.einsum("sjbchp,sjbchd->sbhpd", chunks[1], chunks[2])  # [S, B, H, P, Dv+1]
  start = jnp.cumsum(partial, axis=0) - partial  # [S, B, H, P, Dv+1]
  if initial_state is not None:
    init = jnp.concatenate([to_internal(initial_state.kv.astype(jnp.float32)),
                            to_internal(initial_state.k_state.astype(jnp.float32))[..., None]], -1)
    start = start + init
  # Pass 2: every segment walks its chunks from its start state.
  finals, outs = jax.vmap(lambda s0, xs: jax.lax.scan(_chunk_step, s0, xs))(start, chunks)
  out = jnp.moveaxis(outs, 2, 0).reshape(b, segments * cps * CHUNK, h, dv + 1)[:, :length]  # [B, L, H, Dv+1]
  if normalize:
    out = out[..., :dv] / (out[..., dv:] + eps)
  else:
    out = out[..., :dv]
  final = finals[-1]  # [B, H, P, Dv+1]
  return out.astype(jnp.bfloat16), LinearAttentionState(from_internal(final[..., :dv]),
                                                        from_internal(final[..., dv]))
