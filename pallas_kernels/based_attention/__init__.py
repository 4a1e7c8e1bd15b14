"""Based causal linear attention as a Pallas Mosaic GPU (Hopper) kernel."""

from pallas_kernels.based_attention.api import forward, linear_attention, unavailable_reason
from pallas_kernels.based_attention.config import CHUNK, KernelConfig

__all__ = ["CHUNK", "KernelConfig", "forward", "linear_attention", "unavailable_reason"]
