"""Chunked (block-parallel) Based linear attention in plain XLA: O(L) memory, any L.

The sequence is cut into chunks of C tokens. Inside a chunk the causal scores 1 + s + s^2/2 are
formed explicitly ([C, C] per chunk); across chunks each chunk reads the prefix state
S_n = kv0 + sum_{m<n} phi(K_m)^T V_m, obtained by an exclusive cumulative sum of per-chunk
increments. Every step is a batched matmul, so XLA maps it onto the tensor cores.

Numerics: float32 inputs are computed at full float32 precision. On GPU, 16-bit inputs use 16-bit
matmul operands with float32 accumulation (on CPU, float32 operands), and the prefix states are
rounded to the input dtype for the inter-chunk product, as the fused kernels do; states are always
accumulated and returned in float32. The fused kernels' backward runs this path in float32
(`chunked_float32_vjp`).
Tail padding up to a multiple of C is masked out of every sum and sliced off the output.
"""

import math

import jax
import jax.numpy as jnp

from based_jax.ops.reference import taylor_feature_map
from based_jax.ops.state import LinearAttentionState

DEFAULT_CHUNK_SIZE = 64


def chunked_linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    normalize: bool,
    eps: float,
    initial_state: LinearAttentionState | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[jax.Array, LinearAttentionState]:
  """Same contract as `quadratic_linear_attention`; memory linear in L.

  q, k: [B, L, H, F]; v: [B, L, H, Dv] -> (out [B, L, H, Dv] in v's dtype, final state float32).
  """
  if chunk_size < 1:
    raise ValueError(f"chunked_linear_attention: chunk_size must be >= 1; got {chunk_size}")
  b, length, h, f = q.shape
  dv = v.shape[-1]
  dtype = jnp.result_type(q.dtype, v.dtype)
  full = dtype in (jnp.float32, jnp.float64)
  acc = jnp.float64 if dtype == jnp.float64 else jnp.float32
  # Matmul operand dtype. XLA:CPU has no 16-bit x 16-bit -> float32 dot, so CPU runs float32.
  op_dtype = acc if full or jax.default_backend() == "cpu" else dtype
  precision = jax.lax.Precision.HIGHEST if full else jax.lax.Precision.DEFAULT

  c = min(chunk_size, length)
  n = -(-length // c)
  pad = n * c - length
  if pad:
    q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
  valid = (jnp.arange(n * c) < length).reshape(n, c)  # [N, C]

  qc = q.astype(op_dtype).reshape(b, n, c, h, f)  # [B, N, C, H, F]
  kc = k.astype(op_dtype).reshape(b, n, c, h, f)  # [B, N, C, H, F]
  vc = v.astype(op_dtype).reshape(b, n, c, h, dv)  # [B, N, C, H, Dv]
  phi_q = taylor_feature_map(qc)  # [B, N, C, H, E]
  phi_k = taylor_feature_map(kc) * valid[None, :, :, None, None].astype(op_dtype)  # [B, N, C, H, E]

  if initial_state is None:
    initial_state = LinearAttentionState.zeros(b, h, dv)
  kv0 = initial_state.kv.astype(acc)  # [B, H, E, Dv]
  ks0 = initial_state.k_state.astype(acc)  # [B, H, E]

  # Per-chunk increments and exclusive prefix states.
  d_kv = jnp.einsum("bnche,bnchd->bnhed", phi_k, vc, precision=precision,
                    preferred_element_type=acc)  # [B, N, H, E, Dv]
  d_ks = jnp.sum(phi_k.astype(acc), axis=2)  # [B, N, H, E]
  kv_incl = jnp.cumsum(d_kv, axis=1)  # [B, N, H, E, Dv]
  ks_incl = jnp.cumsum(d_ks, axis=1)  # [B, N, H, E]
  kv_prefix = kv0[:, None] + jnp.concatenate(
      [jnp.zeros_like(kv_incl[:, :1]), kv_incl[:, :-1]], axis=1)  # [B, N, H, E, Dv]
  ks_prefix = ks0[:, None] + jnp.concatenate(
      [jnp.zeros_like(ks_incl[:, :1]), ks_incl[:, :-1]], axis=1)  # [B, N, H, E]

  # Inter-chunk: phi(q_i) . S_n.
  num = jnp.einsum("bnche,bnhed->bnchd", phi_q, kv_prefix.astype(op_dtype),
                   precision=precision, preferred_element_type=acc)  # [B, N, C, H, Dv]
  # Intra-chunk: explicit causal Taylor scores.
  s = jnp.einsum("bnchf,bnmhf->bnhcm", qc, kc, precision=precision,
                 preferred_element_type=acc) / math.sqrt(f)  # [B, N, H, C, C]
  causal = jnp.tril(jnp.ones((c, c), bool))  # [C, C]
  scores = jnp.where(causal, 1.0 + s + 0.5 * s * s, 0.0)  # [B, N, H, C, C]
  num = num + jnp.einsum("bnhcm,bnmhd->bnchd", scores.astype(op_dtype), vc,
                         precision=precision, preferred_element_type=acc)  # [B, N, C, H, Dv]
  if normalize:
    den = jnp.einsum("bnche,bnhe->bnch", phi_q.astype(acc), ks_prefix,
                     precision=jax.lax.Precision.HIGHEST)  # [B, N, C, H]
    den = den + jnp.einsum("bnhcm->bnch", scores)  # [B, N, C, H]
    out = num / (den[..., None] + eps)
  else:
    out = num
  out = out.reshape(b, n * c, h, dv)[:, :length]  # [B, L, H, Dv]

  state = LinearAttentionState(
      kv=(kv_incl[:, -1] + kv0).astype(jnp.float32),
      k_state=(ks_incl[:, -1] + ks0).astype(jnp.float32))
  return out.astype(v.dtype), state


def chunked_float32_vjp(q, k, v, initial_state, cotangents, *, normalize: bool, eps: float):
  """The backward of the fused kernels: the chunked path's VJP, evaluated in float32.

  The kernels' custom_vjp saves the (usually bf16) inputs and differentiates this XLA path
  instead of the kernel. Run in the inputs' dtype, its bf16 prefix states and scores would add
  their own rounding to every gradient (3x the error of the quadratic bf16 reference on the H200
  with normalize=True); in float32 the gradients carry only the rounding of the inputs.
  q, k: [B, L, H, F]; v: [B, L, H, Dv]; initial_state: LinearAttentionState or None;
  cotangents: (d_out [B, L, H, Dv], d_kv [B, H, 273, Dv], d_k_state [B, H, 273]).
  Returns (dq, dk, dv, d_initial_state) with each gradient in its primal's dtype
  (d_initial_state None when initial_state is None).
  """
  f32 = lambda x: x.astype(jnp.float32)

  def forward(q, k, v, initial_state):
    out, final = chunked_linear_attention(q, k, v, normalize=normalize, eps=eps,
                                          initial_state=initial_state)
    return out, final.kv, final.k_state

  primals = (f32(q), f32(k), f32(v),
             None if initial_state is None else jax.tree_util.tree_map(f32, initial_state))
  _, vjp = jax.vjp(forward, *primals)
  d_out, d_kv, d_ks = cotangents
  dq, dk, dv, d_init = vjp((f32(d_out), f32(d_kv), f32(d_ks)))
  if initial_state is not None:
    d_init = jax.tree_util.tree_map(lambda g, x: g.astype(x.dtype), d_init, initial_state)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), d_init
