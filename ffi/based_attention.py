"""Based linear attention through the hand-written CUDA kernels (XLA FFI), with an XLA backward.

Shape legend: B batch, L length, H heads, F = 16 q/k features, E = 273 expanded features,
R = 192 psi rows (the wgmma kernel's layout, ffi/psi_layout.py), Dv value dim.
q, k: [B, L, H, F] bf16; v: [B, L, H, Dv] bf16; out: [B, L, H, Dv] bf16;
state: kv [B, H, E, Dv] float32, k_state [B, H, E] float32.

Four kernels, chosen by `kernel=`: "wgmma" (the default) and "wgmma_smem"
(`based_attention_wgmma.cu`, Hopper wgmma with the symmetric psi features; "wgmma" feeds two of its
products' A operands from registers, "wgmma_smem" from shared memory; their states are converted
between the 273 and psi layouts here, around the call), "wgmma_gram" ("wgmma" whose
normalize=False calls carry no ones column: N = Dv-group columns instead of + 8 in the output and
state products, the key sums coming back as Gram rows that `psi_layout.key_sums_from_gram` turns
into the k_state here; with normalize=True it is "wgmma"), and "mma_sync" (`based_attention.cu`,
the first kernel, half as fast on the H200: docs/benchmarks.md, s11f). `segments=` (wgmma kernels)
fixes the number of sequence segments (0: the kernel's automatic choice). The forward is one FFI
call (plus those layout gathers). The backward is the float32 VJP of the pure-JAX chunked
implementation (`based_jax.ops.chunked.chunked_float32_vjp`), so `jax.grad` works through
`custom_vjp`.
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops.chunked import chunked_float32_vjp
from based_jax.ops.state import EXPANDED_DIM, LinearAttentionState
from based_jax.ops.validation import check_linear_attention_args
from ffi import _loader, availability, psi_layout

TARGET = "based_jax_linear_attention_fwd"
TARGET_INIT = "based_jax_linear_attention_fwd_init"
TARGET_INTO = "based_jax_linear_attention_fwd_into"
WGMMA_TARGET = "based_jax_linear_attention_wgmma_fwd"
WGMMA_TARGET_INIT = "based_jax_linear_attention_wgmma_fwd_init"
WGMMA_TARGET_INTO = "based_jax_linear_attention_wgmma_fwd_into"
KERNELS = ("wgmma", "wgmma_smem", "mma_sync", "wgmma_gram")
DEFAULT_KERNEL = "wgmma"  # the fastest measured at every batch size (s11f)
MAX_SEGMENTS = 1024  # segments= bound (the kernel caps it at one per 64-token chunk)
# Under jax.vmap the FFI call gets the mapped axis in front of every argument (broadcast if
# unbatched); the kernel folds all leading axes into B, so one launch covers the whole batch.
VMAP_METHOD = "broadcast_all"


def _result_types(q, v, rows: int = EXPANDED_DIM, gram_sums: bool = False):
  """Result shapes; rows = E for the mma.sync kernel, R (psi layout) for the wgmma kernel, whose
  third result with gram_sums is the Gram rows [B, H, 17, 16] instead of k_state."""
  b, _, h, _ = q.shape  # [B, L, H, F]
  dv = v.shape[-1]
  ks_shape = (b, h, psi_layout.GRAM_ROWS, psi_layout.FEATURE_DIM) if gram_sums else (b, h, rows)
  return (
      jax.ShapeDtypeStruct(v.shape, jnp.bfloat16),  # out [B, L, H, Dv]
      jax.ShapeDtypeStruct((b, h, rows, dv), jnp.float32),  # kv [B, H, rows, Dv]
      jax.ShapeDtypeStruct(ks_shape, jnp.float32),  # k_state [B, H, rows] or Gram rows [B, H, 17, 16]
  )


def _is_wgmma(kernel: str) -> bool:
  return kernel.startswith("wgmma")


def _uses_gram(kernel: str, normalize: bool) -> bool:
  """Whether this launch returns Gram rows instead of key sums (wgmma_gram without normalization)."""
  return kernel == "wgmma_gram" and not normalize


def _kernel_attrs(kernel: str, normalize: bool, eps: float, segments: int = 0) -> dict:
  """The FFI attributes of a launch of `kernel`; segments = 0: the kernel's automatic choice."""
  attrs = dict(normalize=bool(normalize), eps=np.float32(eps))
  if _is_wgmma(kernel):
    attrs["register_operands"] = kernel != "wgmma_smem"
    attrs["segments"] = np.int32(segments)
    attrs["gram_sums"] = _uses_gram(kernel, normalize)
  return attrs


def _key_state_from_gram(gram, length: int, ks0_psi):
  """Gram rows [B, H, 17, 16] (+ the initial key sums [B, H, R] in psi rows, or None) -> k_state
  [B, H, E], as to_273 of (the kernel's psi key sums + ks0_psi) would give it (one gather)."""
  ks = psi_layout.key_state_273_from_gram(gram, length)  # [B, H, E]
  return ks if ks0_psi is None else ks + psi_layout.to_273(ks0_psi)


def _targets(kernel: str) -> tuple[str, str, str, int]:
  """(plain, with-initial-state, into) FFI target names and the state rows of `kernel`."""
  if _is_wgmma(kernel):
    return WGMMA_TARGET, WGMMA_TARGET_INIT, WGMMA_TARGET_INTO, psi_layout.PSI_DIM
  return TARGET, TARGET_INIT, TARGET_INTO, EXPANDED_DIM


def _ffi_forward(q, k, v, init, normalize: bool, eps: float, kernel: str = DEFAULT_KERNEL,
                 segments: int = 0):
  """One kernel launch. init: None or (kv0 [B, H, E, Dv] f32, ks0 [B, H, E] f32); returns
  (out, (kv, ks)) with the state in the 273 layout whichever kernel ran."""
  _loader.ensure_registered()
  plain, with_init, _, rows = _targets(kernel)
  attrs = _kernel_attrs(kernel, normalize, eps, segments)
  wgmma = _is_wgmma(kernel)
  gram = _uses_gram(kernel, normalize)
  types = _result_types(q, v, rows, gram)
  ks0 = None
  if init is None:
    call = jax.ffi.ffi_call(plain, types, vmap_method=VMAP_METHOD)
    out, kv, ks = call(q, k, v, **attrs)
  else:
    kv0, ks0 = init
    if wgmma:  # [B, H, E, ...] -> [B, H, R, ...]
      kv0, ks0 = psi_layout.from_273(kv0), psi_layout.from_273(ks0)
    call = jax.ffi.ffi_call(with_init, types, vmap_method=VMAP_METHOD)
    out, kv, ks = call(q, k, v, kv0, ks0, **attrs)
  if gram:  # Gram rows [B, H, 17, 16] -> k_state [B, H, E] (the kernel did not read ks0)
    kv, ks = psi_layout.to_273(kv), _key_state_from_gram(ks, q.shape[-3], ks0)
  elif wgmma:  # [B, H, R, ...] -> [B, H, E, ...]
    kv, ks = psi_layout.to_273(kv), psi_layout.to_273(ks)
  return out, (kv, ks)


def _ffi_forward_into(q, k, v, kv0, ks0, out_buf, kv_buf, ks_buf, *, normalize: bool, eps: float,
                      kernel: str = DEFAULT_KERNEL, internal: bool = False, segments: int = 0):
  """Test hook: the kernel writes into the given output buffers (aliased), e.g. NaN-poisoned ones.

  kv0, ks0, kv_buf, ks_buf are in the 273 layout. For the wgmma kernels the initial state is converted
  to psi rows and the first R rows of kv_buf / ks_buf are the buffers the kernel writes (the Gram
  variant: the first 17 x 16 elements of ks_buf as Gram rows); with internal=True its psi-layout
  state (or Gram rows) comes back unconverted (every element must be written).
  """
  _loader.ensure_registered()
  _, _, into, rows = _targets(kernel)
  gram = _uses_gram(kernel, normalize)
  if gram:  # [B, H, 273] -> [B, H, 17, 16] (its first 272 elements)
    b, h = ks_buf.shape[:2]
    ks_buf = ks_buf[:, :, :psi_layout.GRAM_ROWS * psi_layout.FEATURE_DIM].reshape(
        b, h, psi_layout.GRAM_ROWS, psi_layout.FEATURE_DIM)
  if _is_wgmma(kernel):
    kv0, ks0 = psi_layout.from_273(kv0), psi_layout.from_273(ks0)
    kv_buf = kv_buf[:, :, :rows]
    ks_buf = ks_buf if gram else ks_buf[:, :, :rows]
  call = jax.ffi.ffi_call(
      into, _result_types(q, v, rows, gram), vmap_method=VMAP_METHOD, input_output_aliases={5: 0, 6: 1, 7: 2})
  out, kv, ks = call(q, k, v, kv0, ks0, out_buf, kv_buf, ks_buf,
                     **_kernel_attrs(kernel, normalize, eps, segments))
  if _is_wgmma(kernel) and not internal:
    ks = _key_state_from_gram(ks, q.shape[-3], ks0) if gram else psi_layout.to_273(ks)
    kv = psi_layout.to_273(kv)
  return out, kv, ks


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _attention(q, k, v, init, normalize, eps, kernel, segments):
  return _ffi_forward(q, k, v, init, normalize, eps, kernel, segments)


def _attention_fwd(q, k, v, init, normalize, eps, kernel, segments):
  return _ffi_forward(q, k, v, init, normalize, eps, kernel, segments), (q, k, v, init)


def _attention_bwd(normalize, eps, kernel, segments, residuals, cotangents):
  del kernel, segments  # every kernel and segment count computes the same function
  q, k, v, init = residuals
  state = None if init is None else LinearAttentionState(*init)
  out_ct, (kv_ct, ks_ct) = cotangents
  dq, dk, dv, d_state = chunked_float32_vjp(q, k, v, state, (out_ct, kv_ct, ks_ct),
                                            normalize=normalize, eps=eps)
  return dq, dk, dv, None if d_state is None else tuple(d_state)


_attention.defvjp(_attention_fwd, _attention_bwd)


def check_kernel(kernel) -> None:
  """ValueError naming `kernel` unless it is one of KERNELS."""
  if not isinstance(kernel, str) or kernel not in KERNELS:
    raise ValueError(f"ffi.linear_attention: kernel must be one of {KERNELS}; got {kernel!r}")


def check_segments(segments, kernel) -> None:
  """ValueError naming `segments` unless it is an int in [0, MAX_SEGMENTS] (0 for mma_sync)."""
  if not isinstance(segments, numbers.Integral) or isinstance(segments, (bool, np.bool_)):
    raise ValueError(f"ffi.linear_attention: segments must be an int (0: automatic); got {segments!r}")
  if not 0 <= segments <= MAX_SEGMENTS:
    raise ValueError(f"ffi.linear_attention: segments must be in [0, {MAX_SEGMENTS}] (0: automatic); "
                     f"got {segments}")
  if segments and not _is_wgmma(kernel):
    raise ValueError(f"ffi.linear_attention: segments applies to the wgmma kernels only; got segments="
                     f"{segments} with kernel={kernel!r}")


def check_args(q, k, v, *, normalize, eps, initial_state, kernel=DEFAULT_KERNEL, segments=0) -> None:
  """ValueError naming the argument for anything the kernel cannot take; runs before any launch."""
  check_kernel(kernel)
  check_segments(segments, kernel)
  check_linear_attention_args(q, k, v, initial_state)
  for name, x in (("q", q), ("k", k), ("v", v)):
    if jnp.dtype(x.dtype) != jnp.dtype(jnp.bfloat16):
      raise ValueError(f"ffi.linear_attention: {name} must be bfloat16; got {x.dtype}")
  if not availability.supported_value_dim(v.shape[-1]):
    raise ValueError(
        "ffi.linear_attention: v must have Dv a multiple of 64 or 56 ([B, L, H, Dv], Dv in 64, 112, "
        f"128, ...); got shape {v.shape}")
  if not isinstance(normalize, (bool, np.bool_)):
    raise ValueError(f"ffi.linear_attention: normalize must be a Python bool; got {type(normalize).__name__}")
  if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not np.isfinite(eps) or eps < 0:
    raise ValueError(f"ffi.linear_attention: eps must be a finite float >= 0 (static); got {eps!r}")


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    normalize: bool,
    eps: float,
    initial_state: LinearAttentionState | None,
    kernel: str = DEFAULT_KERNEL,
    segments: int = 0,
) -> tuple[jax.Array, LinearAttentionState]:
  """Causal Based linear attention on a CUDA kernel.

  Args:
    q, k: [B, L, H, 16] bfloat16 (raw; the Taylor feature map is applied in the kernel).
    v: [B, L, H, Dv] bfloat16, Dv a multiple of 64 or 56 (64 for based-360m, 112 for based-1b).
    normalize: divide by phi(q_i).(ks0 + sum_{j<=i} phi(k_j)) + eps, or return the numerator.
    eps: static float added to the denominator.
    initial_state: LinearAttentionState(kv [B, H, 273, Dv], k_state [B, H, 273]) or None (zeros).
    kernel: "wgmma" (default) or "wgmma_smem" (based_attention_wgmma.cu, the H100/H200 wgmma
      kernel with two products' A operands in registers or in shared memory), or "mma_sync"
      (based_attention.cu, the first kernel, half as fast); same Dv support. The wgmma kernels
      keep states in the symmetric psi layout, so an initial kv whose x_a x_b and x_b x_a rows
      differ comes back symmetrised (same readout). "wgmma_gram": "wgmma" with, for
      normalize=False, no ones column in the products (key sums as Gram rows, rebuilt here).
    segments: sequence segments per (batch, head) for the wgmma kernels (at most one per 64
      tokens; equal segments, so e.g. 33 chunks in 16 segments run as 11 of 3); 0 (default): the
      kernel's automatic choice. For measurements; the result does not depend on it beyond
      float32 summation order.

  Returns:
    (out [B, L, H, Dv] bfloat16, LinearAttentionState(kv [B, H, 273, Dv] float32,
    k_state [B, H, 273] float32)).

  Raises:
    ValueError: bad shapes/dtypes/attributes (naming the argument), before anything runs.
    RuntimeError: the kernel cannot run here (no Hopper GPU, library missing and no nvcc).
  """
  check_args(q, k, v, normalize=normalize, eps=eps, initial_state=initial_state, kernel=kernel,
             segments=segments)
  reason = availability.gpu_reason() or availability.library_reason()
  if reason is not None:
    raise RuntimeError(f"ffi.linear_attention cannot run here: {reason}")
  init = None
  if initial_state is not None:
    init = (initial_state.kv.astype(jnp.float32), initial_state.k_state.astype(jnp.float32))
  out, (kv, ks) = _attention(q, k, v, init, bool(normalize), float(eps), kernel, int(segments))
  return out, LinearAttentionState(kv, ks)
