"""Hand-written CUDA kernel for Based linear attention on H100/H200, called through the XLA FFI.

    from ffi import linear_attention, unavailable_reason

Both follow the kernel plug-in contract of docs/design.md. `linear_attention(..., kernel=...)`
picks the CUDA kernel: "wgmma" (the default) or "wgmma_smem" (based_attention_wgmma.cu, Hopper
wgmma with the symmetric psi features of ffi/psi_layout.py, A operands of two products in
registers or in shared memory), "wgmma_gram" ("wgmma" without the ones column when
normalize=False: key sums as Gram rows), or "mma_sync" (based_attention.cu, the first kernel); all
live in one library. `segments=` fixes the wgmma kernels' sequence-segment count (0: automatic). The library is compiled on first use (`python -m ffi.build` does it
ahead of time) and cached under ~/.cache/based_jax/ffi/. Importing this package needs neither
nvcc nor a GPU.
"""

from ffi.availability import unavailable_reason
from ffi.based_attention import linear_attention

__all__ = ["linear_attention", "unavailable_reason"]
