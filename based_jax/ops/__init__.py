"""Based's linear-attention hot path: one dispatch point, its pure-JAX references and state."""

from based_jax.ops.chunked import chunked_linear_attention
from based_jax.ops.dispatch import (
    IMPLEMENTATIONS,
    Implementation,
    linear_attention,
    unavailable_reason,
)
from based_jax.ops.reference import (
    quadratic_linear_attention,
    recurrent_step,
    taylor_feature_map,
)
from based_jax.ops.state import (
    EXPANDED_DIM,
    FEATURE_DIM,
    LinearAttentionState,
    left_pad_initial_state,
)
from based_jax.ops.validation import check_linear_attention_args

__all__ = [
    "EXPANDED_DIM",
    "FEATURE_DIM",
    "IMPLEMENTATIONS",
    "Implementation",
    "LinearAttentionState",
    "check_linear_attention_args",
    "chunked_linear_attention",
    "left_pad_initial_state",
    "linear_attention",
    "quadratic_linear_attention",
    "recurrent_step",
    "taylor_feature_map",
    "unavailable_reason",
]
