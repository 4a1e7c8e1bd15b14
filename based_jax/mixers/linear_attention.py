"""Based linear attention: Taylor-feature causal linear attention over 16-dim q/k per head.

    q = proj_q(x) [B, L, H, 16], k = proj_k(x) [B, L, H, 16], v = proj_v(x) [B, L, H, Dv]
    o = based_jax.ops.linear_attention(q, k, v, normalize, eps)           # [B, L, H, Dv]
    variant A (released checkpoints): normalize=True, eps 1e-12 (1e-6 for fla configs)
    variant B (g_norm checkpoints):   normalize=False, then per-head RMSNorm g_norm over Dv
    y = out_proj(o)

Left padding: k and v are zeroed at pads and the op starts from `left_pad_initial_state`, which
makes real tokens see exactly the sums over real tokens (docs/design.md). Decoding keeps the op's
final LinearAttentionState (fp32) and updates it with `based_jax.ops.recurrent_step`.
"""

import jax.numpy as jnp
from flax import linen as nn

from based_jax import ops
from based_jax.config import BasedConfig
from based_jax.layers import Dtype, RMSNorm, dense


class LinearAttention(nn.Module):
  """x: [B, L, d] -> [B, L, d]. `impl` goes to based_jax.ops.linear_attention."""

  config: BasedConfig
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  def setup(self):
    cfg = self.config
    h, f, dv = cfg.la_num_heads, cfg.la_feature_dim, cfg.la_head_dim
    self.proj_q = dense(h * f, use_bias=False, dtype=self.dtype, name="proj_q")
    self.proj_k = dense(h * f, use_bias=False, dtype=self.dtype, name="proj_k")
    self.proj_v = dense(h * dv, use_bias=False, dtype=self.dtype, name="proj_v")
    self.out_proj = dense(cfg.n_embd, use_bias=False, dtype=self.dtype, name="out_proj")
    if cfg.la_output_norm:
      self.g_norm = RMSNorm(cfg.layer_norm_epsilon)

  def _qkv(self, x, mask):
    cfg = self.config
    b, length, _ = x.shape
    h, f, dv = cfg.la_num_heads, cfg.la_feature_dim, cfg.la_head_dim
    q = self.proj_q(x).reshape(b, length, h, f)  # [B, L, H, F]
    k = self.proj_k(x).reshape(b, length, h, f)  # [B, L, H, F]
    v = self.proj_v(x).reshape(b, length, h, dv)  # [B, L, H, Dv]
    if mask is not None:
      k = jnp.where(mask[:, :, None, None], k, 0)
      v = jnp.where(mask[:, :, None, None], v, 0)
    return q, k, v

  def _output(self, o):
    """o: [B, L, H, Dv] -> [B, L, d]."""
    if self.config.la_output_norm:
      o = self.g_norm(o)  # per head over Dv, shared weight [Dv]
    b, length = o.shape[:2]
    return self.out_proj(o.reshape(b, length, -1).astype(self.dtype))  # [B, L, d]

  def _attend(self, x, mask):
    cfg = self.config
    q, k, v = self._qkv(x, mask)
    initial = None
    if mask is not None:
      num_pad = jnp.sum(~mask, axis=1).astype(jnp.int32)  # [B]
      initial = ops.left_pad_initial_state(num_pad, cfg.la_num_heads, cfg.la_head_dim)
    o, state = ops.linear_attention(q, k, v, normalize=cfg.la_normalize, eps=cfg.la_eps,
                                    initial_state=initial, impl=self.impl)
    return self._output(o), state

  def __call__(self, x, mask=None, positions=None):
    del positions
    return self._attend(x, mask)[0]

  def prefill(self, x, mask, positions, max_length):
    del positions, max_length
    return self._attend(x, mask)

  def decode_step(self, x, cache: ops.LinearAttentionState | ops.DeferredState, position, index):
    """x: [B, 1, d] -> ([B, 1, d], updated fp32 state, of cache's type)."""
    del position, index
    cfg = self.config
    q, k, v = self._qkv(x, None)
    step = (ops.deferred_recurrent_step if isinstance(cache, ops.DeferredState)
            else ops.recurrent_step)   # a DeferredState: generate(defer_state_writes=True)
    o, state = step(q[:, 0], k[:, 0], v[:, 0], cache, normalize=cfg.la_normalize,
                    eps=cfg.la_eps)  # [B, H, Dv]
    return self._output(o[:, None]), state
