"""Based's hot paths: the dispatch points of linear attention and of the SwiGLU gated layer,
their pure-JAX references and the linear-attention state."""

from based_jax.ops.chunked import chunked_linear_attention
from based_jax.ops.deferred import (
    DeferredState,
    deferred_recurrent_step,
    defer_writes,
)
from based_jax.ops.dispatch import (
    IMPLEMENTATIONS,
    Implementation,
    linear_attention,
    unavailable_reason,
)
from based_jax.ops.gated_linear import GATED_LINEAR_IMPLS, gated_linear, gated_linear_xla
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
from based_jax.ops.symmetric import (
    SYMMETRIC_DIM,
    from_symmetric_state,
    map_linear_attention_states,
    symmetric_feature_map,
    to_symmetric_state,
)
from based_jax.ops.validation import check_linear_attention_args

__all__ = [
    "DeferredState",
    "EXPANDED_DIM",
    "FEATURE_DIM",
    "GATED_LINEAR_IMPLS",
    "IMPLEMENTATIONS",
    "Implementation",
    "LinearAttentionState",
    "SYMMETRIC_DIM",
    "check_linear_attention_args",
    "chunked_linear_attention",
    "defer_writes",
    "deferred_recurrent_step",
    "from_symmetric_state",
    "gated_linear",
    "gated_linear_xla",
    "left_pad_initial_state",
    "linear_attention",
    "map_linear_attention_states",
    "quadratic_linear_attention",
    "recurrent_step",
    "symmetric_feature_map",
    "taylor_feature_map",
    "to_symmetric_state",
    "unavailable_reason",
]
