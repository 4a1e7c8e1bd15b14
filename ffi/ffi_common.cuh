// Host-side pieces shared by the two CUDA kernels' XLA FFI handlers (based_attention.cu and
// based_attention_wgmma.cu): the start of every handler's binding and the alignment check.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace based_ffi {

// Stream, scratch and the q, k, v buffers: the start of every handler's binding.
inline auto bind_qkv() {
  return xla::ffi::Ffi::Bind()
      .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
      .Ctx<xla::ffi::ScratchAllocator>()
      .Arg<xla::ffi::AnyBuffer>()   // q [..., L, H, 16] bf16
      .Arg<xla::ffi::AnyBuffer>()   // k [..., L, H, 16] bf16
      .Arg<xla::ffi::AnyBuffer>();  // v [..., L, H, Dv] bf16
}

// The kernels copy q, k, v and outputs in 16-byte units (cp.async, vector stores).
inline bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

}  // namespace based_ffi
