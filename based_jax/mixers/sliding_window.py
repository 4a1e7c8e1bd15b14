"""Sliding-window softmax attention (Based's SlidingAttention), banded: memory O(L * window).

Query i sees keys j in [i - w, i] with w = window_size // 2 (flash-attn window (w, 0)), i.e.
w + 1 keys including itself. Rotary and projections are those of MHA (mixers/mha.py).

Prefill (impl "xla") splits the sequence into blocks of C >= w queries; block n attends to the
keys of blocks n-1 and n (2C keys), masked to the band, so no [L, L] buffer exists. impl "cudnn"
hands every batch to cuDNN's fused flash attention with a sliding window (left window w,
`jax.nn.dot_product_attention(local_window_size=(w, 0))`; left-padded batches as in
mha.fused_attention); "auto" (the default) takes cuDNN for unpadded batches where it can run
(mha.use_cudnn) and the banded path everywhere else.
Decoding keeps a ring of the last w + 1 rotated keys/values: the token at absolute index j lives
in slot j % (w + 1).
"""

import jax
import jax.numpy as jnp

from based_jax.mixers.mha import KVCache, SoftmaxAttentionBase, fused_attention, use_cudnn

_NEG = -1e30
_MIN_BLOCK = 32


def banded_attention(q, k, v, key_valid, *, window_left: int, scale: float,
                     precision) -> jax.Array:
  """Causal attention to keys j in [i - window_left, i] that are valid.

  q, k, v: [B, L, H, D]; key_valid: [B, L] bool or None -> [B, L, H, D] in v's dtype.
  """
  b, length, h, d = q.shape
  c = max(window_left, _MIN_BLOCK)
  nb = -(-length // c)
  pad = nb * c - length
  if key_valid is None:
    key_valid = jnp.ones((b, length), bool)
  # Keys get one extra block of (invalid) zeros in front: block n then reads blocks n-1 and n.
  pad_seq = ((0, 0), (c, pad), (0, 0), (0, 0))
  kb = jnp.pad(k, pad_seq).reshape(b, nb + 1, c, h, d)  # [B, nB+1, C, H, D]
  vb = jnp.pad(v, pad_seq).reshape(b, nb + 1, c, h, d)
  validb = jnp.pad(key_valid, ((0, 0), (c, pad))).reshape(b, nb + 1, c)  # [B, nB+1, C]
  kw = jnp.concatenate([kb[:, :-1], kb[:, 1:]], axis=2)  # [B, nB, 2C, H, D]
  vw = jnp.concatenate([vb[:, :-1], vb[:, 1:]], axis=2)  # [B, nB, 2C, H, D]
  validw = jnp.concatenate([validb[:, :-1], validb[:, 1:]], axis=2)  # [B, nB, 2C]
  qb = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, nb, c, h, d)  # [B, nB, C, H, D]

  # Query a of a block is at i = n*C + a; key t of its window is at j = (n-1)*C + t.
  rel = jnp.arange(2 * c)[None, :] - c - jnp.arange(c)[:, None]  # [C, 2C], j - i
  band = (rel <= 0) & (rel >= -window_left)  # [C, 2C]
  allowed = band[None, None, None] & validw[:, :, None, None, :]  # [B, nB, 1, C, 2C]

  s = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, kw, precision=precision,
                 preferred_element_type=jnp.float32) * scale  # [B, nB, H, C, 2C]
  s = jnp.where(allowed, s, _NEG)
  p = jnp.where(allowed, jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)), 0.0)
  den = jnp.sum(p, axis=-1, keepdims=True)  # [B, nB, H, C, 1]
  p = p / jnp.where(den > 0, den, 1.0)
  o = jnp.einsum("bnhqk,bnkhd->bnqhd", p.astype(v.dtype), vw, precision=precision,
                 preferred_element_type=jnp.float32)  # [B, nB, C, H, D]
  return o.reshape(b, nb * c, h, d)[:, :length].astype(v.dtype)  # [B, L, H, D]


def window_attention(q, k, v, key_valid, *, window_left: int, scale: float, precision,
                     impl: str) -> jax.Array:
  """Sliding-window attention through `impl` (cuDNN or banded_attention; see the module
  docstring). q, k, v: [B, L, H, D]; key_valid: [B, L] bool or None -> [B, L, H, D]."""
  if use_cudnn(impl, q, key_valid):
    return fused_attention(q, k, v, key_valid, scale=scale,
                           window_left=window_left)  # [B, L, H, D]
  return banded_attention(q, k, v, key_valid, window_left=window_left, scale=scale,
                          precision=precision)


class SlidingWindowAttention(SoftmaxAttentionBase):
  """x: [B, L, d] -> [B, L, d]; see the module docstring.

  impl: "auto", "xla" (banded) or "cudnn" (see window_attention).
  """

  impl: str = "auto"

  @property
  def window_left(self) -> int:
    return self.config.window_left

  def _attend(self, x, mask, positions):
    q, k, v = self._project(x, mask, positions)
    o = window_attention(q, k, v, mask, window_left=self.window_left, scale=self.scale,
                         precision=self.precision, impl=self.impl)
    return self._output(o), k, v

  def __call__(self, x, mask=None, positions=None):
    return self._attend(x, mask, positions)[0]

  def prefill(self, x, mask, positions, max_length):
    del max_length  # the ring has w + 1 slots whatever the generation length
    b, length, _ = x.shape
    y, k, v = self._attend(x, mask, positions)
    size = self.window_left + 1
    idx = jnp.arange(length - size, length)  # [S] absolute indices of the last w + 1 tokens
    src = jnp.clip(idx, 0, length - 1)
    slot = idx % size  # a permutation of 0..S-1
    valid = (idx >= 0)[None, :] & (
        jnp.ones((b, size), bool) if mask is None else mask[:, src])  # [B, S]
    cache = KVCache(
        k=jnp.zeros((b, size) + k.shape[2:], self.dtype).at[:, slot].set(
            k[:, src].astype(self.dtype)),
        v=jnp.zeros((b, size) + v.shape[2:], self.dtype).at[:, slot].set(
            v[:, src].astype(self.dtype)),
        valid=jnp.zeros((b, size), bool).at[:, slot].set(valid))
    return y, cache

  def decode_step(self, x, cache: KVCache, position, index):
    """x: [B, 1, d] at absolute `index`: overwrite slot index % (w+1), attend to the ring."""
    q, k, v = self._decode_qkv(x, position)
    slot = index % cache.k.shape[1]
    cache = KVCache(
        k=jax.lax.dynamic_update_slice_in_dim(cache.k, k[:, None].astype(cache.k.dtype), slot, 1),
        v=jax.lax.dynamic_update_slice_in_dim(cache.v, v[:, None].astype(cache.v.dtype), slot, 1),
        valid=jax.lax.dynamic_update_slice_in_dim(
            cache.valid, jnp.ones((x.shape[0], 1), bool), slot, 1))
    return self._attend_cache(q, cache), cache
