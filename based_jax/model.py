"""The Based language model (and the attention baseline): Block and BasedLM, with prefill/decode.

    residual = E[input_ids]                         (fp32 when residual_in_fp32)
    per layer: residual += mixer(norm1(residual)); residual += mlp(norm2(residual))
    logits = ln_f(residual) @ E^T                   [B, L, Vp] float32 (tied head)

Each norm gets the residual cast to the compute dtype (based_model.md §3.1); norms compute in fp32.

Decode API (for the generation loop):
    logits = model.apply(v, input_ids)                                   # [B, L] -> [B, L, Vp]
    logits, cache = model.apply(v, input_ids, attention_mask, max_length=N, method=BasedLM.prefill)
    logits, cache = model.apply(v, token_ids, cache, method=BasedLM.decode_step)  # [B] -> [B, Vp]
Under jax.jit, `max_length` (and `method`) must be static. Shapes and dtypes are always checked;
the attention_mask values (0/1, left padding) are checked only when concrete (outside jit).

Left padding (attention_mask 0 = pad, all pads before the first real token) changes nothing for a
row's real tokens: RoPE positions count real tokens only (cumsum(mask) - 1), conv inputs and
linear-attention k, v are zeroed at pads (with the matching initial state), attention keys at
pads are masked, and mixer outputs at pads are zeroed.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from based_jax.config import BasedConfig
from based_jax.inputs import check_attention_mask, check_token_ids
from based_jax.layers import Dtype, RMSNorm, SwiGLU, dense, matmul_precision
from based_jax.mixers import MHA, BaseConv, LinearAttention, SlidingWindowAttention, mha
from based_jax.ops.gated_linear import GATED_LINEAR_IMPLS

_MIXERS = {"conv": BaseConv, "linear_attention": LinearAttention,
           "sliding_window": SlidingWindowAttention, "mha": MHA}


@struct.dataclass
class BasedCache:
  """Decoding state of the whole model.

  layers:   one cache per layer: ConvCache (a ring of conv inputs), LinearAttentionState (fp32),
            KVCache ring of w+1 slots (SWA) or KVCache of max_length slots (MHA).
  position: [B] int32, RoPE position of the next token (= real tokens seen so far).
  index:    [] int32, absolute index of the next token (prompt length + decoded tokens).
  """

  layers: tuple[Any, ...]
  position: jax.Array
  index: jax.Array


class Embeddings(nn.Module):
  """word_embeddings/embedding [Vp, d]; also the tied LM head."""

  config: BasedConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    self.word_embeddings = nn.Embed(self.config.vocab_size_padded, self.config.n_embd,
                                    name="word_embeddings")

  def __call__(self, input_ids: jax.Array) -> jax.Array:
    """[B, L] int -> [B, L, d] in the parameter dtype."""
    return jnp.take(self.word_embeddings.embedding, input_ids, axis=0)

  def attend(self, h: jax.Array) -> jax.Array:
    """h: [..., d] -> logits [..., Vp] float32 (fp32 accumulation)."""
    table = self.word_embeddings.embedding.astype(self.dtype)  # [Vp, d]
    return jnp.einsum("...d,vd->...v", h.astype(self.dtype), table,
                      precision=matmul_precision(self.dtype), preferred_element_type=jnp.float32)


class Block(nn.Module):
  """Pre-norm block: mixer then SwiGLU MLP, each added to the residual stream."""

  config: BasedConfig
  layer_idx: int
  dtype: Dtype = jnp.float32
  la_impl: str = "auto"
  attn_impl: str = "auto"
  mlp_impl: str = "xla"

  def setup(self):
    cfg = self.config
    kind = cfg.layer_types[self.layer_idx]
    if kind == "linear_attention":
      kwargs = {"impl": self.la_impl}
    elif kind == "mha":
      kwargs = {"layer_idx": self.layer_idx, "impl": self.attn_impl}
    elif kind == "sliding_window":  # softmax scale may depend on layer_idx
      kwargs = {"layer_idx": self.layer_idx, "impl": self.attn_impl}
    else:
      kwargs = {}
    self.mixer = _MIXERS[kind](cfg, dtype=self.dtype, **kwargs)
    self.norm1 = RMSNorm(cfg.layer_norm_epsilon)
    self.norm2 = RMSNorm(cfg.layer_norm_epsilon)
    self.mlp = SwiGLU(cfg.mlp_hidden, cfg.mlp_fc1_bias, cfg.mlp_fc2_bias, dtype=self.dtype,
                      impl=self.mlp_impl)

  def _run(self, residual, mask, mix, last_only: bool = False):
    """residual: [B, L, d]; mix(x) -> (m [B, L, d], aux). Returns (residual, aux), residual
    [B, L, d], or [B, 1, d] (the last position) with last_only."""
    m, aux = mix(self.norm1(residual.astype(self.dtype)))
    if last_only:   # the mixer has built its cache from every position; the rest needs the last
      residual, m = residual[:, -1:], m[:, -1:]  # [B, 1, d]
      mask = None if mask is None else mask[:, -1:]  # [B, 1]
    if mask is not None:
      m = jnp.where(mask[..., None], m, 0)
    residual = residual + m.astype(residual.dtype)
    out = self.mlp(self.norm2(residual.astype(self.dtype)))
    return residual + out.astype(residual.dtype), aux

  def __call__(self, residual, mask, positions):
    return self._run(residual, mask, lambda x: (self.mixer(x, mask, positions), None))[0]

  def prefill(self, residual, mask, positions, max_length, last_only: bool = False):
    """(residual, cache). last_only (the model's last layer, whose output is read at the last
    position only): returns the residual of the last position [B, 1, d]; the MLP runs on that
    position only, and a mixer with a finite `prefill_context` (BaseConv: its conv taps) on its
    trailing positions only, told their offset in the prompt (`offset`). The cache and the last
    position's output are exactly those of the whole prompt."""
    context = getattr(self.mixer, "prefill_context", None) if last_only else None
    kwargs = {}
    if context is not None and context < residual.shape[1]:
      kwargs["offset"] = residual.shape[1] - context  # the index of the first position kept
      residual, positions = residual[:, -context:], positions[:, -context:]  # [B, K, d], [B, K]
      mask = None if mask is None else mask[:, -context:]  # [B, K]
    return self._run(residual, mask,
                     lambda x: self.mixer.prefill(x, mask, positions, max_length, **kwargs),
                     last_only=last_only)

  def decode_step(self, residual, cache, position, index):
    return self._run(residual, None,
                     lambda x: self.mixer.decode_step(x, cache, position, index))


class Transformer(nn.Module):
  """embeddings, layers_{i}, ln_f (torch `transformer`)."""

  config: BasedConfig
  dtype: Dtype = jnp.float32
  la_impl: str = "auto"
  attn_impl: str = "auto"
  mlp_impl: str = "xla"

  def setup(self):
    cfg = self.config
    self.embeddings = Embeddings(cfg, dtype=self.dtype)
    self.layers = [Block(cfg, i, dtype=self.dtype, la_impl=self.la_impl,
                         attn_impl=self.attn_impl, mlp_impl=self.mlp_impl)
                   for i in range(cfg.n_layer)]
    self.ln_f = RMSNorm(cfg.layer_norm_epsilon)

  def _embed(self, input_ids):
    dtype = jnp.float32 if self.config.residual_in_fp32 else self.dtype
    return self.embeddings(input_ids).astype(dtype)  # [B, L, d]

  def _final(self, residual):
    return self.ln_f(residual.astype(self.dtype))

  def __call__(self, input_ids, mask, positions):
    residual = self._embed(input_ids)
    for layer in self.layers:
      residual = layer(residual, mask, positions)
    return self._final(residual)

  def prefill(self, input_ids, mask, positions, max_length):
    """(final hidden state of the last position [B, 1, d], per-layer caches)."""
    residual = self._embed(input_ids)
    caches = []
    for i, layer in enumerate(self.layers):
      last = i == len(self.layers) - 1   # only the last position of the last layer is read
      residual, cache = layer.prefill(residual, mask, positions, max_length, last_only=last)
      caches.append(cache)
    return self._final(residual), tuple(caches)

  def decode_step(self, token_ids, caches, position, index):
    residual = self._embed(token_ids[:, None])  # [B, 1, d]
    new = []
    for layer, cache in zip(self.layers, caches):
      residual, cache = layer.decode_step(residual, cache, position, index)
      new.append(cache)
    return self._final(residual), tuple(new)

  def attend(self, h):
    return self.embeddings.attend(h)


class BasedLM(nn.Module):
  """Based LM with a tied (or separate `lm_head`) output over the padded vocabulary.

  config: BasedConfig; dtype: compute dtype (float32 or bfloat16), params are cast to it at use;
  la_impl: linear-attention implementation passed to based_jax.ops.linear_attention.
  attn_impl: softmax-attention prefill (full MHA and sliding window): "auto" (the default:
    "cudnn" for unpadded batches where it can run, else "xla"), "xla" (a key-block scan for MHA,
    banded blocks for the window; any backend) or "cudnn" (cuDNN flash attention, with a
    sliding window for SWA, on NVIDIA GPUs in bf16/fp16, for every batch: left-padded rows are
    rolled to right padding and masked by sequence lengths, mixers.mha.fused_attention; an error
    where it cannot run). On the H200 (attn-360m, bf16, 8000-token prompts) cuDNN measured
    70.95 ms at B = 4 where the scan took 574 ms (docs/benchmarks.md).
  mlp_impl: the SwiGLU MLPs' first layer and gate (based_jax.ops.gated_linear): "xla" (the
    default: a gemm, then the gate as a separate pass), "pallas" (the gate fused into a Mosaic
    GPU gemm; Hopper, bf16, no fc1 bias; an error where it cannot run) or "auto" ("pallas" above
    4096 rows where it can run, else "xla"). The kernel beats XLA in isolation but did not make
    the H200 prefill faster inside the model (docs/benchmarks.md), hence not the default.
  """

  config: BasedConfig
  dtype: Dtype = jnp.float32
  la_impl: str = "auto"
  attn_impl: str = "auto"
  mlp_impl: str = "xla"

  def setup(self):
    if self.attn_impl not in mha.ATTENTION_IMPLS:
      raise ValueError(
          f"BasedLM: attn_impl must be one of {mha.ATTENTION_IMPLS}; got {self.attn_impl!r}")
    if self.mlp_impl not in GATED_LINEAR_IMPLS:
      raise ValueError(
          f"BasedLM: mlp_impl must be one of {GATED_LINEAR_IMPLS}; got {self.mlp_impl!r}")
    self.transformer = Transformer(self.config, dtype=self.dtype, la_impl=self.la_impl,
                                   attn_impl=self.attn_impl, mlp_impl=self.mlp_impl)
    if not self.config.tie_word_embeddings:
      self.lm_head = dense(self.config.vocab_size_padded, use_bias=False, dtype=self.dtype,
                           name="lm_head")

  def _logits(self, h):
    if self.config.tie_word_embeddings:
      return self.transformer.attend(h)
    return self.lm_head(h).astype(jnp.float32)

  @staticmethod
  def _positions(mask, shape):
    if mask is None:
      return jnp.broadcast_to(jnp.arange(shape[1], dtype=jnp.int32), shape)
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)  # [B, L]

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """input_ids: [B, L] int -> logits [B, L, Vp] float32."""
    check_token_ids(input_ids, "input_ids", 2, "[B, L]")
    mask = None if attention_mask is None else check_attention_mask(attention_mask, input_ids)
    positions = self._positions(mask, input_ids.shape)
    return self._logits(self.transformer(input_ids, mask, positions))

  def prefill(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
              max_length: int) -> tuple[jax.Array, BasedCache]:
    """Run the prompt and build the decoding cache.

    input_ids: [B, L] int; attention_mask: [B, L] (1 real, 0 pad, left padding) or None;
    max_length: static total length (prompt + new tokens), the KV-cache size of MHA layers.
    Returns (logits of the last position [B, Vp] float32, BasedCache).
    """
    check_token_ids(input_ids, "input_ids", 2, "[B, L]")
    if not isinstance(max_length, (int, np.integer)) or max_length < input_ids.shape[1]:
      raise ValueError(f"max_length must be a static int >= the prompt length "
                       f"{input_ids.shape[1]}; got {max_length!r}")
    mask = None if attention_mask is None else check_attention_mask(attention_mask, input_ids)
    b, length = input_ids.shape
    positions = self._positions(mask, input_ids.shape)
    h, caches = self.transformer.prefill(input_ids, mask, positions, int(max_length))
    if mask is None:
      position = jnp.full((b,), length, jnp.int32)
    else:
      position = jnp.sum(mask, axis=1).astype(jnp.int32)
    cache = BasedCache(layers=caches, position=position, index=jnp.asarray(length, jnp.int32))
    return self._logits(h[:, -1]), cache

  def decode_step(self, token_ids: jax.Array,
                  cache: BasedCache) -> tuple[jax.Array, BasedCache]:
    """token_ids: [B] int (the last sampled tokens) -> (logits [B, Vp] float32, next cache)."""
    check_token_ids(token_ids, "token_ids", 1, "[B]")
    if not isinstance(cache, BasedCache):
      raise ValueError(f"cache must be the BasedCache returned by prefill; got "
                       f"{type(cache).__name__}")
    if cache.position.shape != token_ids.shape:
      raise ValueError(f"token_ids must have shape [B] = {cache.position.shape} (the cache batch); "
                       f"got {token_ids.shape}")
    if len(cache.layers) != self.config.n_layer:
      raise ValueError(f"cache has {len(cache.layers)} layers; the model has "
                       f"{self.config.n_layer}")
    h, caches = self.transformer.decode_step(token_ids, cache.layers, cache.position,
                                             cache.index)
    logits = self._logits(h[:, 0])
    return logits, BasedCache(layers=caches, position=cache.position + 1, index=cache.index + 1)
