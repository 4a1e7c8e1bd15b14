"""The Mamba LM (hazyresearch/mamba-360m baseline): MambaMixer, MambaBlock, MambaLM.

    residual = E[input_ids]                          (fp32 when residual_in_fp32)
    per layer: residual += mixer(norm(residual))
    logits = norm_f(residual) @ E^T                  [B, L, Vp] float32 (tied head)

Mixer (HazyResearch/based:based/models/mixers/mamba/modules/mamba_simple.py, `Mamba`):
    [x | z] = in_proj(h)                             # [B, L, 2C], C = d_inner
    u = silu(causal_depthwise_conv_K(x) + conv_bias)  # K = d_conv = 4
    [dt | Bm | Cm] = x_proj(u)                       # [B, L, R], [B, L, N], [B, L, N]
    delta = softplus(dt_proj(dt))                    # dt_proj has a bias; [B, L, C]
    y = selective_scan(u, delta, A = -exp(A_log), Bm, Cm, D)
    out = out_proj(y * silu(z))

Norms: with fused_add_norm (the released model) the fp32 residual itself is normalised, as the
fused kernel does; otherwise the residual cast to the compute dtype.

Same decode API as BasedLM, so `based_jax.generation.generate` serves it unchanged:
    logits = model.apply(v, input_ids, attention_mask)                        # [B, L, Vp]
    logits, cache = model.apply(v, ids, mask, max_length=N, method=MambaLM.prefill)
    logits, cache = model.apply(v, token_ids, cache, method=MambaLM.decode_step)  # [B] -> [B, Vp]

Left padding (attention_mask 0 = pad, pads first): the conv input x and the step delta are
zeroed at pads, so the conv history and the SSM state are exactly those of the unpadded row
(delta = 0 keeps the state, adds nothing); mixer outputs at pads are zeroed.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from based_jax.layers import Dtype, RMSNorm, dense, matmul_precision
from based_jax.mamba import ssm
from based_jax.mamba.config import MambaConfig
from based_jax.mixers.base_conv import CausalDepthwiseConv1d
from based_jax.inputs import check_attention_mask, check_token_ids


@struct.dataclass
class MambaLayerCache:
  """conv: [B, K-1, C] the last K-1 conv inputs x, oldest first (compute dtype);
  ssm: [B, C, N] float32 scan state."""

  conv: jax.Array
  ssm: jax.Array


@struct.dataclass
class MambaCache:
  """Decoding state of the whole model: one MambaLayerCache per layer."""

  layers: tuple[MambaLayerCache, ...]


class DtProj(nn.Module):
  """dt_proj: delta_pre = dt @ kernel + bias, in float32 (torch `dt_proj`, kernel = weight.T).

  The matmul runs in the compute dtype with fp32 accumulation and the bias is added in fp32,
  as upstream adds `delta_bias` inside the fp32 selective-scan kernel.
  dt: [B, L, R] -> [B, L, C] float32. Params kernel [R, C], bias [C].
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, dt: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (dt.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jnp.einsum("blr,rc->blc", dt.astype(self.dtype), kernel.astype(self.dtype),
                   precision=matmul_precision(self.dtype),
                   preferred_element_type=jnp.float32)  # [B, L, C]
    return y + bias.astype(jnp.float32)


def _a_log_init(key, shape, dtype=jnp.float32):
  """Upstream init: A_log[c, n] = log(n + 1)."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=dtype)), shape)


class MambaMixer(nn.Module):
  """x: [B, L, d] -> [B, L, d]. Params mirror torch `mixer.*` (see the module docstring)."""

  config: MambaConfig
  dtype: Dtype = jnp.float32
  scan_impl: str = "chunked"

  def setup(self):
    cfg = self.config
    c, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
    bias = cfg.ssm_cfg.bias
    self.in_proj = dense(2 * c, use_bias=bias, dtype=self.dtype, name="in_proj")
    self.conv1d = CausalDepthwiseConv1d(c, cfg.d_conv, cfg.ssm_cfg.conv_bias)
    self.x_proj = dense(r + 2 * n, use_bias=False, dtype=self.dtype, name="x_proj")
    self.dt_proj = DtProj(c, dtype=self.dtype)
    self.A_log = self.param("A_log", _a_log_init, (c, n), jnp.float32)
    self.D = self.param("D", nn.initializers.ones, (c,), jnp.float32)
    self.out_proj = dense(cfg.d_model, use_bias=bias, dtype=self.dtype, name="out_proj")

  def _inputs(self, h, mask, history):
    """h: [B, L, d] -> (u [B, L, C], delta [B, L, C] f32, Bm, Cm [B, L, N], z [B, L, C], x)."""
    cfg = self.config
    c, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
    xz = self.in_proj(h)  # [B, L, 2C]
    x, z = xz[..., :c], xz[..., c:]  # [B, L, C] each
    if mask is not None:
      x = jnp.where(mask[..., None], x, 0)
    u = jax.nn.silu(self.conv1d(x, history))  # [B, L, C]
    dbc = self.x_proj(u)  # [B, L, R + 2N]
    dt, bm, cm = dbc[..., :r], dbc[..., r:r + n], dbc[..., r + n:]  # [B, L, R], [B, L, N] x2
    delta = jax.nn.softplus(self.dt_proj(dt))  # [B, L, C] float32
    if mask is not None:
      delta = jnp.where(mask[..., None], delta, 0.0)
      bm = jnp.where(mask[..., None], bm, 0)
    return u, delta, bm, cm, z, x

  def _output(self, y, z):
    """y: [B, L, C] float32, z: [B, L, C] -> out_proj(y * silu(z)) [B, L, d]."""
    gated = y * jax.nn.silu(z.astype(jnp.float32))  # [B, L, C]
    return self.out_proj(gated.astype(self.dtype))

  def _a(self):
    return -jnp.exp(self.A_log.astype(jnp.float32))  # [C, N]

  def _empty_history(self, h):
    return jnp.zeros((h.shape[0], self.config.d_conv - 1, self.config.d_inner), self.dtype)

  def _run(self, h, mask):
    history = self._empty_history(h)
    u, delta, bm, cm, z, x = self._inputs(h, mask, history)
    y, state = ssm.selective_scan(u, delta, self._a(), bm, cm, self.D, impl=self.scan_impl)
    ext = jnp.concatenate([history, x.astype(self.dtype)], axis=1)  # [B, K-1+L, C]
    conv = ext[:, ext.shape[1] - (self.config.d_conv - 1):]  # [B, K-1, C]
    return self._output(y, z), MambaLayerCache(conv=conv, ssm=state)

  def __call__(self, h: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self._run(h, mask)[0]

  def prefill(self, h, mask):
    return self._run(h, mask)

  def decode_step(self, h, cache: MambaLayerCache):
    """h: [B, 1, d] -> ([B, 1, d], cache with this token's conv input and scan step)."""
    u, delta, bm, cm, z, x = self._inputs(h, None, cache.conv)
    y, state = ssm.selective_scan_step(u[:, 0], delta[:, 0], self._a(), bm[:, 0], cm[:, 0],
                                       self.D, cache.ssm)  # [B, C], [B, C, N]
    ext = jnp.concatenate([cache.conv, x.astype(self.dtype)], axis=1)  # [B, K, C]
    return self._output(y[:, None], z), MambaLayerCache(conv=ext[:, 1:], ssm=state)


class MambaBlock(nn.Module):
  """residual += mixer(norm(residual)); torch `backbone.layers.{i}` (norm, mixer)."""

  config: MambaConfig
  dtype: Dtype = jnp.float32
  scan_impl: str = "chunked"

  def setup(self):
    self.norm = RMSNorm(self.config.norm_epsilon)
    self.mixer = MambaMixer(self.config, dtype=self.dtype, scan_impl=self.scan_impl)

  def _normed(self, residual):
    x = residual if self.config.fused_add_norm else residual.astype(self.dtype)
    return self.norm(x).astype(self.dtype)

  def _add(self, residual, m, mask):
    if mask is not None:
      m = jnp.where(mask[..., None], m, 0)
    return residual + m.astype(residual.dtype)

  def __call__(self, residual, mask):
    return self._add(residual, self.mixer(self._normed(residual), mask), mask)

  def prefill(self, residual, mask):
    m, cache = self.mixer.prefill(self._normed(residual), mask)
    return self._add(residual, m, mask), cache

  def decode_step(self, residual, cache):
    m, cache = self.mixer.decode_step(self._normed(residual), cache)
    return self._add(residual, m, None), cache


class Backbone(nn.Module):
  """embedding, layers_{i}, norm_f (torch `backbone`)."""

  config: MambaConfig
  dtype: Dtype = jnp.float32
  scan_impl: str = "chunked"

  def setup(self):
    cfg = self.config
    self.embedding = nn.Embed(cfg.vocab_size_padded, cfg.d_model, name="embedding")
    self.layers = [MambaBlock(cfg, dtype=self.dtype, scan_impl=self.scan_impl)
                   for _ in range(cfg.n_layer)]
    self.norm_f = RMSNorm(cfg.norm_epsilon)

  def embed(self, input_ids):
    dtype = jnp.float32 if self.config.residual_in_fp32 else self.dtype
    return jnp.take(self.embedding.embedding, input_ids, axis=0).astype(dtype)  # [B, L, d]

  def final(self, residual):
    x = residual if self.config.fused_add_norm else residual.astype(self.dtype)
    return self.norm_f(x).astype(self.dtype)

  def attend(self, h):
    """Tied head: h [..., d] -> [..., Vp] float32 (fp32 accumulation)."""
    table = self.embedding.embedding.astype(self.dtype)  # [Vp, d]
    return jnp.einsum("...d,vd->...v", h.astype(self.dtype), table,
                      precision=matmul_precision(self.dtype), preferred_element_type=jnp.float32)

  def __call__(self, input_ids, mask):
    residual = self.embed(input_ids)
    for layer in self.layers:
      residual = layer(residual, mask)
    return self.final(residual)

  def prefill(self, input_ids, mask):
    residual = self.embed(input_ids)
    caches = []
    for layer in self.layers:
      residual, cache = layer.prefill(residual, mask)
      caches.append(cache)
    return self.final(residual), tuple(caches)

  def decode_step(self, token_ids, caches):
    residual = self.embed(token_ids[:, None])  # [B, 1, d]
    new = []
    for layer, cache in zip(self.layers, caches):
      residual, cache = layer.decode_step(residual, cache)
      new.append(cache)
    return self.final(residual), tuple(new)


class MambaLM(nn.Module):
  """Mamba LM with a tied (or separate `lm_head`) output over the padded vocabulary.

  config: MambaConfig; dtype: compute dtype (float32 or bfloat16), params are cast at use
  (A_log, D and the scan stay float32); scan_impl: "chunked" (default) or "reference".
  """

  config: MambaConfig
  dtype: Dtype = jnp.float32
  scan_impl: str = "chunked"

  def setup(self):
    self.backbone = Backbone(self.config, dtype=self.dtype, scan_impl=self.scan_impl)
    if not self.config.tie_embeddings:
      self.lm_head = dense(self.config.vocab_size_padded, use_bias=False, dtype=self.dtype,
                           name="lm_head")

  def _logits(self, h):
    if self.config.tie_embeddings:
      return self.backbone.attend(h)
    return self.lm_head(h).astype(jnp.float32)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """input_ids: [B, L] int; attention_mask: [B, L] (left padding) or None -> [B, L, Vp] f32."""
    check_token_ids(input_ids, "input_ids", 2, "[B, L]")
    mask = None if attention_mask is None else check_attention_mask(attention_mask, input_ids)
    return self._logits(self.backbone(input_ids, mask))

  def prefill(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
              max_length: int) -> tuple[jax.Array, MambaCache]:
    """Run the prompt and build the recurrent cache.

    input_ids: [B, L] int; attention_mask: [B, L] (1 real, 0 pad, left padding) or None;
    max_length: static total length (prompt + new tokens); the state size does not depend on
    it, it is checked for API parity with BasedLM.
    Returns (logits of the last position [B, Vp] float32, MambaCache).
    """
    check_token_ids(input_ids, "input_ids", 2, "[B, L]")
    if not isinstance(max_length, (int, np.integer)) or max_length < input_ids.shape[1]:
      raise ValueError(f"max_length must be a static int >= the prompt length "
                       f"{input_ids.shape[1]}; got {max_length!r}")
    mask = None if attention_mask is None else check_attention_mask(attention_mask, input_ids)
    h, caches = self.backbone.prefill(input_ids, mask)
    return self._logits(h[:, -1]), MambaCache(layers=caches)

  def decode_step(self, token_ids: jax.Array,
                  cache: MambaCache) -> tuple[jax.Array, MambaCache]:
    """token_ids: [B] int (the last sampled tokens) -> (logits [B, Vp] float32, next cache)."""
    check_token_ids(token_ids, "token_ids", 1, "[B]")
    if not isinstance(cache, MambaCache):
      raise ValueError(f"cache must be the MambaCache returned by prefill; got "
                       f"{type(cache).__name__}")
    if len(cache.layers) != self.config.n_layer:
      raise ValueError(f"cache has {len(cache.layers)} layers; the model has "
                       f"{self.config.n_layer}")
    batch = cache.layers[0].ssm.shape[0]
    if token_ids.shape != (batch,):
      raise ValueError(f"token_ids must have shape [B] = ({batch},) (the cache batch); got "
                       f"{token_ids.shape}")
    h, caches = self.backbone.decode_step(token_ids, cache.layers)
    return self._logits(h[:, 0]), MambaCache(layers=caches)


def param_count(params: Any) -> int:
  """Number of scalars in a params tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
