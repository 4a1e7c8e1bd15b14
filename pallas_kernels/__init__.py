"""Pallas kernels of based-jax; the plug-in contract of docs/design.md.

linear_attention(q, k, v, *, normalize, eps, initial_state) -> (out, LinearAttentionState)
unavailable_reason(q, k, v) -> None | str
"""

from pallas_kernels.based_attention import KernelConfig, linear_attention, unavailable_reason

__all__ = ["KernelConfig", "linear_attention", "unavailable_reason"]
