"""Sequence mixers of the Based LMs. Each one maps x [B, L, d] -> [B, L, d] and offers

    __call__(x, mask, positions)                 full causal forward
    prefill(x, mask, positions, max_length)      -> (y, cache)
    decode_step(x [B, 1, d], cache, position, index) -> (y [B, 1, d], cache)

mask: [B, L] bool (True = real token, left padding) or None; positions: [B, L] int32 RoPE positions;
position: [B] int32; index: [] int32 absolute index of the decoded token. A mixer with a finite
`prefill_context` (BaseConv) may be prefilled on the prompt's last positions only and then takes
prefill(..., offset): the index of x[:, 0] in the prompt.
"""

from based_jax.mixers.base_conv import (BaseConv, ConvCache, causal_depthwise_conv,
                                        causal_depthwise_conv_ring)
from based_jax.mixers.linear_attention import LinearAttention
from based_jax.mixers.mha import (ATTENTION_IMPLS, MHA, KVCache, cache_attention, causal_attention,
                                  flash_causal_attention, fused_attention)
from based_jax.mixers.sliding_window import (SlidingWindowAttention, banded_attention,
                                             window_attention)

__all__ = [
    "ATTENTION_IMPLS",
    "BaseConv",
    "ConvCache",
    "KVCache",
    "LinearAttention",
    "MHA",
    "SlidingWindowAttention",
    "banded_attention",
    "cache_attention",
    "causal_attention",
    "causal_depthwise_conv",
    "causal_depthwise_conv_ring",
    "flash_causal_attention",
    "fused_attention",
    "window_attention",
]
