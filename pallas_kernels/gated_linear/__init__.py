"""Pallas (Mosaic GPU) kernel for a SwiGLU MLP's first layer fused with its gate:
y = (x @ W)[..., :N] * silu((x @ W)[..., N:]). See kernel.py; dispatched by
`based_jax.ops.gated_linear`."""

from pallas_kernels.gated_linear.api import gated_linear, shape_reason, unavailable_reason
from pallas_kernels.gated_linear.kernel import GatedLinearConfig

__all__ = ["GatedLinearConfig", "gated_linear", "shape_reason", "unavailable_reason"]
