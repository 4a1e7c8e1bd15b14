"""BaseConv: a short causal depthwise convolution gated by a linear branch (Based's main mixer).

    u = in_proj(x) = [u1 | u2]                       # [B, L, 2C], C = d_inner
    c_t = sum_k w[k] * u1_{t-(K-1)+k}  (+ bias)      # causal, u1 at t < 0 is 0
    y = out_proj(silu(c) * u2)

Decoding keeps u1 in a ring of K slots (ConvCache), u1 of absolute position p in slot p % K: a
step first writes u1_t into its slot, in place, and then convolves the ring where it lies, the
slot after it holding the oldest of the last K inputs. Writing before reading is what keeps the
update in place inside `generate`'s loop: when the step read the old history and then built the
new one (a shifted copy), XLA copied the carried history at every step (on the CPU one copy per
conv layer; on the H200 the 12 slice + copy kernel pairs a step of s9a's trace of based-360m's
loop are gone with the ring, s10a). The slot comes from the model's token index, so the ring carries no counter of
its own (a per-layer counter would cost a copy per layer and step too). Left-pad positions have
u1 zeroed, so real tokens see exactly what they would see at the start of an unpadded sequence.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from based_jax.config import BasedConfig
from based_jax.layers import Dtype, dense


@struct.dataclass
class ConvCache:
  """history: [B, K, C] (compute dtype), a ring: slot p % K holds the conv input u1 of absolute
  position p (the model's token index) for the last K-1 positions; the slot of the next token
  holds whatever it held before (zeros after the prefill)."""

  history: jax.Array


def causal_depthwise_conv(u: jax.Array, kernel: jax.Array, history: jax.Array,
                          bias: jax.Array | None = None) -> jax.Array:
  """Causal depthwise conv continuing from `history` (the K-1 inputs before u[:, 0]).

  u: [B, L, C]; kernel: [K, 1, C] (torch weight (C, 1, K) transposed; kernel[K-1] multiplies the
  current token); history: [B, K-1, C] -> [B, L, C] in u's dtype (fp32 accumulation).
  """
  taps, length = kernel.shape[0], u.shape[1]
  ext = jnp.concatenate([history.astype(u.dtype), u], axis=1)  # [B, K-1+L, C]
  w = kernel[:, 0, :].astype(jnp.float32)  # [K, C]
  out = sum(ext[:, k:k + length].astype(jnp.float32) * w[k] for k in range(taps))  # [B, L, C]
  if bias is not None:
    out = out + bias.astype(jnp.float32)
  return out.astype(u.dtype)


def causal_depthwise_conv_ring(ring: jax.Array, kernel: jax.Array, newest_slot: jax.Array,
                               bias: jax.Array | None = None) -> jax.Array:
  """The causal depthwise conv at one position, from a ring of its K inputs.

  ring: [B, K, C], the last K inputs: the newest in slot `newest_slot`, the others cyclically
  after it, oldest first; kernel: [K, 1, C]; newest_slot: [] int -> [B, 1, C] in ring's dtype.
  Reads each slot where it is (no rolled copy of the ring) and sums the taps in the order of
  `causal_depthwise_conv`, so both give the same floats.
  """
  taps = kernel.shape[0]
  w = kernel[:, 0, :].astype(jnp.float32)  # [K, C]
  out = sum(jax.lax.dynamic_slice_in_dim(ring, (newest_slot + 1 + k) % taps, 1, axis=1)
            .astype(jnp.float32) * w[k] for k in range(taps))  # [B, 1, C]
  if bias is not None:
    out = out + bias.astype(jnp.float32)
  return out.astype(ring.dtype)


class CausalDepthwiseConv1d(nn.Module):
  """Params `kernel` [K, 1, C] (and `bias` [C] when present): torch ShortConvolution.conv."""

  channels: int
  kernel_size: int
  use_bias: bool = False

  def setup(self):
    self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                             (self.kernel_size, 1, self.channels), jnp.float32)
    self.bias = (self.param("bias", nn.initializers.zeros, (self.channels,), jnp.float32)
                 if self.use_bias else None)

  def __call__(self, u: jax.Array, history: jax.Array) -> jax.Array:
    return causal_depthwise_conv(u, self.kernel, history, self.bias)

  def ring_step(self, ring: jax.Array, newest_slot: jax.Array) -> jax.Array:
    return causal_depthwise_conv_ring(ring, self.kernel, newest_slot, self.bias)


class ShortConvolution(nn.Module):
  """Wrapper so that the param path is mixer/conv/conv/kernel, as in torch."""

  channels: int
  kernel_size: int
  use_bias: bool = False

  def setup(self):
    self.conv = CausalDepthwiseConv1d(self.channels, self.kernel_size, self.use_bias)

  def __call__(self, u: jax.Array, history: jax.Array) -> jax.Array:
    return self.conv(u, history)

  def ring_step(self, ring: jax.Array, newest_slot: jax.Array) -> jax.Array:
    return self.conv.ring_step(ring, newest_slot)


class BaseConv(nn.Module):
  """x: [B, L, d] -> [B, L, d]. See the module docstring."""

  config: BasedConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    c = cfg.conv_d_inner
    self.in_proj = dense(2 * c, use_bias=cfg.conv_mixer.use_bias, dtype=self.dtype,
                         name="in_proj")
    self.conv = ShortConvolution(c, cfg.conv_kernel_size, cfg.conv_bias)
    self.out_proj = dense(cfg.n_embd, use_bias=cfg.conv_mixer.use_bias, dtype=self.dtype,
                          name="out_proj")

  def _project(self, x, mask):
    c = self.config.conv_d_inner
    u = self.in_proj(x)  # [B, L, 2C]
    u1, u2 = u[..., :c], u[..., c:]  # [B, L, C] each
    if mask is not None:
      u1 = jnp.where(mask[..., None], u1, 0)
    return u1, u2

  def _mix(self, x, mask, history):
    u1, u2 = self._project(x, mask)
    conv = self.conv(u1, history)  # [B, L, C]
    y = self.out_proj(jax.nn.silu(conv) * u2)  # [B, L, d]
    return y, u1

  def _empty_history(self, x):
    k = self.config.conv_kernel_size
    return jnp.zeros((x.shape[0], k - 1, self.config.conv_d_inner), self.dtype)

  def __call__(self, x, mask=None, positions=None):
    del positions  # no positional information in a convolution
    return self._mix(x, mask, self._empty_history(x))[0]

  @property
  def prefill_context(self) -> int:
    """Trailing positions that determine the cache and the last output of `prefill` (the conv
    taps): a prefill of x[:, -K:] gives exactly those of the whole prompt."""
    return self.config.conv_kernel_size

  def prefill(self, x, mask, positions, max_length, offset: int = 0):
    """offset: the index of x[:, 0] in the prompt (the model passes the prompt's last
    `prefill_context` positions only when the output is read at the last position alone)."""
    del positions, max_length
    history = self._empty_history(x)
    y, u1 = self._mix(x, mask, history)
    k = self.config.conv_kernel_size
    ext = jnp.concatenate([history, u1.astype(self.dtype)], axis=1)  # [B, K-1+L, C]
    last = ext[:, ext.shape[1] - (k - 1):]  # [B, K-1, C], positions L-K+1 .. L-1
    ring = jnp.concatenate([last, jnp.zeros_like(last[:, :1])], axis=1)  # [B, K, C]
    length = offset + x.shape[1]                  # the prompt's length L: the next token's index
    return y, ConvCache(history=jnp.roll(ring, (length + 1) % k, axis=1))  # slot p % K

  def decode_step(self, x, cache: ConvCache, position, index):
    """x: [B, 1, d] -> ([B, 1, d], cache with this token's u1 in the ring)."""
    del position
    k = self.config.conv_kernel_size
    slot = index % k
    u1, u2 = self._project(x, None)  # [B, 1, C] each
    ring = jax.lax.dynamic_update_slice_in_dim(cache.history, u1.astype(self.dtype), slot,
                                               1)  # [B, K, C], in place
    # XLA would otherwise fuse the update into its readers below, which would then read the old
    # history while the update overwrites it in place: a copy of the history every step
    ring = jax.lax.optimization_barrier(ring)
    conv = self.conv.ring_step(ring, slot).astype(u1.dtype)  # [B, 1, C]
    y = self.out_proj(jax.nn.silu(conv) * u2)  # [B, 1, d]
    return y, ConvCache(history=ring)
