"""Softmax attention with NeoX rotary embeddings: full causal MHA, plus the pieces SWA shares.

    qkv = Wqkv(x) -> [B, L, 3, H, D] (torch row s*(H*D) + h*D + j);  q, k <- RoPE(positions)
    o_i = softmax_j(q_i . k_j * scale) v_j over the allowed keys;     y = out_proj(o)

Prefill runs a flash-style scan over key blocks (online softmax), so memory is O(L * block),
never [L, L] (impl "xla"); impl "cudnn" hands every batch to cuDNN's fused flash attention
(`jax.nn.dot_product_attention`, NVIDIA GPUs, bf16/fp16; see fused_attention for left-padded
ones); impl "auto" (the default) takes cuDNN for unpadded batches where it can run and the scan
everywhere else.
Decoding keeps a KV cache of `max_length` rotated keys and values, written at the absolute index
of each token; pad slots are invalid. Softmax statistics are fp32.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from based_jax.config import BasedConfig
from based_jax.layers import Dtype, apply_rotary, dense, matmul_precision, rotary_cos_sin

_NEG = -1e30  # finite "minus infinity": rows with no allowed key stay finite (and are zeroed)
_KEY_BLOCK = 256
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
_CUDNN_MAX_HEAD_DIM = 128  # cuDNN's fused flash attention: head dims up to 128, multiples of 8


@struct.dataclass
class KVCache:
  """k, v: [B, S, H, D] rotated keys and values (compute dtype); valid: [B, S] bool."""

  k: jax.Array
  v: jax.Array
  valid: jax.Array


def flash_causal_attention(q, k, v, key_valid, *, scale: float, precision,
                           block: int = _KEY_BLOCK) -> jax.Array:
  """Causal softmax attention by an online-softmax scan over key blocks.

  q, k, v: [B, L, H, D]; key_valid: [B, L] bool or None -> [B, L, H, D] in v's dtype.
  Query i sees keys j <= i that are valid. Memory O(B * H * L * block).
  """
  b, length, h, d = q.shape
  ck = min(block, length)
  nk = -(-length // ck)
  pad = nk * ck - length
  if key_valid is None:
    key_valid = jnp.ones((b, length), bool)
  kp = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))  # [B, Lk, H, D]
  vp = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
  validp = jnp.pad(key_valid, ((0, 0), (0, pad)))  # [B, Lk], pad keys invalid
  kb = kp.reshape(b, nk, ck, h, d).swapaxes(0, 1)  # [nK, B, Ck, H, D]
  vb = vp.reshape(b, nk, ck, h, d).swapaxes(0, 1)  # [nK, B, Ck, H, D]
  validb = validp.reshape(b, nk, ck).swapaxes(0, 1)  # [nK, B, Ck]
  starts = jnp.arange(nk, dtype=jnp.int32) * ck  # [nK]
  qi = jnp.arange(length, dtype=jnp.int32)  # [L]

  def body(carry, blk):
    # The block's inputs wait for the previous block's carry. Where XLA unrolls this loop,
    # every block's mask and scores could otherwise be computed ahead and be live at once, an
    # [L, L] footprint: a fully unrolled scan on the CPU had 4x the temporaries at 8k tokens as
    # at 4k. (The H200's 3.3x growth of a 2-layer attention model's fp32 prefill had another
    # cause, a gemm backend switch between the two lengths: docs/benchmarks.md, s10c.)
    carry, blk = jax.lax.optimization_barrier((carry, blk))
    m, l, acc = carry  # [B, H, L], [B, H, L], [B, H, L, D]
    kblk, vblk, valid, start = blk
    s = jnp.einsum("blhd,bkhd->bhlk", q, kblk, precision=precision,
                   preferred_element_type=jnp.float32) * scale  # [B, H, L, Ck]
    kj = start + jnp.arange(ck, dtype=jnp.int32)  # [Ck]
    allowed = (kj[None, :] <= qi[:, None])[None, None] & valid[:, None, None, :]  # [B, 1, L, Ck]
    s = jnp.where(allowed, s, _NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))  # [B, H, L]
    p = jnp.where(allowed, jnp.exp(s - m_new[..., None]), 0.0)  # [B, H, L, Ck]
    corr = jnp.exp(m - m_new)  # [B, H, L]
    l = l * corr + jnp.sum(p, axis=-1)
    pv = jnp.einsum("bhlk,bkhd->bhld", p.astype(v.dtype), vblk, precision=precision,
                    preferred_element_type=jnp.float32)  # [B, H, L, D]
    return (m_new, l, acc * corr[..., None] + pv), None

  init = (jnp.full((b, h, length), _NEG, jnp.float32), jnp.zeros((b, h, length), jnp.float32),
          jnp.zeros((b, h, length, d), jnp.float32))
  (_, l, acc), _ = jax.lax.scan(body, init, (kb, vb, validb, starts))
  out = acc / jnp.where(l > 0, l, 1.0)[..., None]  # [B, H, L, D]
  return out.transpose(0, 2, 1, 3).astype(v.dtype)  # [B, L, H, D]


def cudnn_unavailable_reason(dtype, head_dim: int) -> str | None:
  """Why impl "cudnn" cannot run here with this compute dtype and head dim, or None."""
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f"cuDNN flash attention takes bfloat16 or float16; the model computes in {dtype}"
  if head_dim % 8 or head_dim > _CUDNN_MAX_HEAD_DIM:
    return (f"cuDNN flash attention takes head dims that are multiples of 8 up to "
            f"{_CUDNN_MAX_HEAD_DIM}; got {head_dim}")
  if jax.default_backend() != "gpu":
    return f"cuDNN flash attention needs an NVIDIA GPU; JAX's backend is {jax.default_backend()}"
  return None


def use_cudnn(impl: str, q: jax.Array, key_valid) -> bool:
  """Whether attention impl `impl` runs this call on cuDNN.

  impl "cudnn" takes every batch, left-padded ones included (fused_attention), and raises a
  ValueError where cuDNN cannot run (cudnn_unavailable_reason). "auto" takes cuDNN for unpadded
  batches (key_valid None) where it can run; padded ones stay on XLA under "auto" (on the H200
  the padded cuDNN path was not faster, docs/benchmarks.md). "xla" never. q: [B, L, H, D],
  compute dtype.
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}; got {impl!r}")
  if impl == "xla":
    return False
  reason = cudnn_unavailable_reason(q.dtype, q.shape[-1])
  if impl == "cudnn":
    if reason is not None:
      raise ValueError(f"attn_impl='cudnn': {reason}")
    return True
  return reason is None and key_valid is None


def _roll_rows(x: jax.Array, shift: jax.Array) -> jax.Array:
  """Row b of x moved left by shift[b] places, cyclically: out[b, t] = x[b, (t + shift[b]) % L].

  x: [B, L, ...]; shift: [B] int -> [B, L, ...].
  """
  length = x.shape[1]
  src = (jnp.arange(length, dtype=jnp.int32)[None, :] + shift[:, None]) % length  # [B, L]
  src = src.reshape(src.shape + (1,) * (x.ndim - 2))  # [B, L, 1, ...]
  return jnp.take_along_axis(x, src, axis=1)


def fused_attention(q, k, v, key_valid, *, scale: float, window_left: int | None = None,
                    implementation: str = "cudnn") -> jax.Array:
  """Causal attention (keys j in [i - window_left, i] when window_left is set) by
  `jax.nn.dot_product_attention(implementation=...)`.

  q, k, v: [B, L, H, D]; key_valid: [B, L] bool, LEFT padding (pads first), or None
  -> [B, L, H, D]. cuDNN masks padding only at the end of a row, through sequence lengths, so a
  left-padded row is rolled left by its pad count (real tokens first, pads last), attended with
  query and key lengths = its real tokens, and rolled back; outputs at pads are zero. Rolling
  moves every real token by the same amount, so causality and the window are unchanged.
  """
  window = None if window_left is None else (window_left, 0)
  if key_valid is None:
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                        local_window_size=window,
                                        implementation=implementation)  # [B, L, H, D]
  lengths = jnp.sum(key_valid, axis=1, dtype=jnp.int32)  # [B] real tokens
  num_pad = q.shape[1] - lengths  # [B]
  q_r, k_r, v_r = (_roll_rows(x, num_pad) for x in (q, k, v))  # [B, L, H, D], pads last
  o = jax.nn.dot_product_attention(q_r, k_r, v_r, scale=scale, is_causal=True,
                                   query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                   local_window_size=window,
                                   implementation=implementation)  # [B, L, H, D]
  o = _roll_rows(o, -num_pad)  # [B, L, H, D], pads first again
  return jnp.where(key_valid[:, :, None, None], o, 0).astype(v.dtype)


def causal_attention(q, k, v, key_valid, *, scale: float, precision, impl: str) -> jax.Array:
  """Causal softmax attention through `impl` (see use_cudnn); otherwise the key-block scan.

  q, k, v: [B, L, H, D]; key_valid: [B, L] (left padding) or None -> [B, L, H, D].
  """
  if use_cudnn(impl, q, key_valid):
    return fused_attention(q, k, v, key_valid, scale=scale)  # [B, L, H, D]
  return flash_causal_attention(q, k, v, key_valid, scale=scale, precision=precision)


def cache_attention(q, cache: KVCache, *, scale: float, precision) -> jax.Array:
  """One query per row against a cache. q: [B, H, D] -> [B, H, D] in q's dtype."""
  s = jnp.einsum("bhd,bshd->bhs", q, cache.k, precision=precision,
                 preferred_element_type=jnp.float32) * scale  # [B, H, S]
  valid = cache.valid[:, None, :]  # [B, 1, S]
  s = jnp.where(valid, s, _NEG)
  p = jnp.where(valid, jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)), 0.0)  # [B, H, S]
  den = jnp.sum(p, axis=-1, keepdims=True)  # [B, H, 1]
  o = jnp.einsum("bhs,bshd->bhd", p.astype(cache.v.dtype), cache.v, precision=precision,
                 preferred_element_type=jnp.float32)  # [B, H, D]
  return (o / jnp.where(den > 0, den, 1.0)).astype(q.dtype)


class SoftmaxAttentionBase(nn.Module):
  """Wqkv / out_proj and rotary, shared by MHA and SlidingWindowAttention."""

  config: BasedConfig
  layer_idx: int = 0
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.Wqkv = dense(3 * cfg.n_embd, use_bias=cfg.qkv_proj_bias, dtype=self.dtype, name="Wqkv")
    self.out_proj = dense(cfg.n_embd, use_bias=cfg.out_proj_bias, dtype=self.dtype,
                          name="out_proj")

  @property
  def scale(self) -> float:
    return self.config.softmax_scale(self.layer_idx)

  @property
  def precision(self):
    return matmul_precision(self.dtype)

  def _project(self, x, mask, positions):
    """x: [B, L, d], positions: [B, L] int -> rotated q, k and v, each [B, L, H, D]."""
    cfg = self.config
    b, length, _ = x.shape
    qkv = self.Wqkv(x).reshape(b, length, 3, cfg.n_head, cfg.head_dim)  # [B, L, 3, H, D]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, D] each
    cos, sin = rotary_cos_sin(positions, cfg.rotary_dim, cfg.rotary_emb_base, self.dtype)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if mask is not None:
      k = jnp.where(mask[:, :, None, None], k, 0)
      v = jnp.where(mask[:, :, None, None], v, 0)
    return q, k, v

  def _output(self, o):
    """o: [B, L, H, D] -> [B, L, d]."""
    b, length = o.shape[:2]
    return self.out_proj(o.reshape(b, length, -1))

  def _decode_qkv(self, x, position):
    """x: [B, 1, d], position: [B] -> q, k, v: [B, H, D] each."""
    q, k, v = self._project(x, None, position[:, None])
    return q[:, 0], k[:, 0], v[:, 0]

  def _attend_cache(self, q, cache):
    o = cache_attention(q, cache, scale=self.scale, precision=self.precision)  # [B, H, D]
    return self._output(o[:, None])  # [B, 1, d]


class MHA(SoftmaxAttentionBase):
  """Full causal multi-head attention (attention baseline). x: [B, L, d] -> [B, L, d].

  impl: "auto", "xla" (the key-block scan) or "cudnn" (see causal_attention).
  """

  impl: str = "auto"

  def _attend(self, q, k, v, mask):
    return causal_attention(q, k, v, mask, scale=self.scale, precision=self.precision,
                            impl=self.impl)  # [B, L, H, D]

  def __call__(self, x, mask=None, positions=None):
    q, k, v = self._project(x, mask, positions)
    return self._output(self._attend(q, k, v, mask))

  def prefill(self, x, mask, positions, max_length):
    b, length, _ = x.shape
    if max_length < length:
      raise ValueError(f"prefill: max_length={max_length} must be >= the prompt length {length}")
    q, k, v = self._project(x, mask, positions)
    o = self._attend(q, k, v, mask)  # [B, L, H, D]
    shape = (b, max_length, self.config.n_head, self.config.head_dim)
    valid = jnp.ones((b, length), bool) if mask is None else mask
    cache = KVCache(
        k=jnp.zeros(shape, self.dtype).at[:, :length].set(k.astype(self.dtype)),
        v=jnp.zeros(shape, self.dtype).at[:, :length].set(v.astype(self.dtype)),
        valid=jnp.zeros((b, max_length), bool).at[:, :length].set(valid))
    return self._output(o), cache

  def decode_step(self, x, cache: KVCache, position, index):
    """Write this token at absolute `index` (< max_length) and attend to every valid slot.

    Past the cache end the output is NaN (never a silently wrong value).
    """
    q, k, v = self._decode_qkv(x, position)
    size = cache.k.shape[1]
    slot = jnp.minimum(index, size - 1)
    cache = KVCache(
        k=jax.lax.dynamic_update_slice_in_dim(cache.k, k[:, None].astype(cache.k.dtype), slot, 1),
        v=jax.lax.dynamic_update_slice_in_dim(cache.v, v[:, None].astype(cache.v.dtype), slot, 1),
        valid=jax.lax.dynamic_update_slice_in_dim(
            cache.valid, jnp.ones((x.shape[0], 1), bool), slot, 1))
    y = self._attend_cache(q, cache)
    return jnp.where(index < size, y, jnp.nan).astype(y.dtype), cache

