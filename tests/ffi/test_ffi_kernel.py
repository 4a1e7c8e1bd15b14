"""The CUDA kernels on a Hopper GPU against a float64 NumPy oracle (gpu-marked: skipped without a GPU).

Every forward test runs for every kernel (kernel="wgmma", the default, "wgmma_smem", "mma_sync" and
"wgmma_gram"): fresh random inputs per case, odd lengths, both variants, Dv 64 and 112, initial
states drawn from real prefix sums, outputs poisoned with NaN before the kernel writes them, jit and
vmap, a tensor past 2^31 elements; gradients (the same XLA backward for all) through the default
kernel. "wgmma_gram" differs from "wgmma" only without normalization, so its normalize=True cases
are skipped. Explicit segment counts (segments=) run for the wgmma kernels.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ffi.based_attention import DEFAULT_KERNEL, KERNELS
from tests.ffi.ffi_oracle import draw_inputs as _draw
from tests.float64_reference import linear_attention_f64 as _oracle
from tests.float64_reference import rel_err as _rel

pytestmark = pytest.mark.gpu

TOL = 1e-2  # ||out - ref|| / ||ref|| for bf16 inputs
SEGMENT_KERNELS = ("wgmma", "wgmma_gram")


def _skip_redundant(kernel: str, normalize: bool) -> None:
  """wgmma_gram with normalize=True is the wgmma launch itself: tested there."""
  if kernel == "wgmma_gram" and normalize:
    pytest.skip("wgmma_gram with normalize=True is kernel='wgmma'")


CASES = [  # B, L, H, Dv, normalize, with_state
    (1, 1, 2, 64, True, False),
    (2, 63, 3, 64, False, True),
    (1, 65, 2, 112, True, True),
    (1, 1000, 4, 64, True, False),
    (1, 1000, 2, 112, False, False),
    (2, 1000, 2, 64, False, True),
    (1, 1000, 3, 112, True, True),
    (1, 200, 70, 64, True, False),  # B*H*groups < #SMs but one segment
    (3, 130, 50, 112, False, True),  # B*H*groups > #SMs: no sequence split
    (1, 2049, 2, 64, True, True),  # 33 chunks: sequence split into segments, partial last chunk
    (1, 777, 1, 128, False, True),  # two 64-column groups
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("b,length,h,dv,normalize,with_state", CASES)
def test_matches_float64_oracle_under_jit(b, length, h, dv, normalize, with_state, kernel):
  import ffi
  from based_jax.ops import LinearAttentionState

  _skip_redundant(kernel, normalize)
  q, k, v, init = _draw(hash((b, length, h, dv, normalize, with_state)) % 2**31, b, length, h, dv,
                        with_state=with_state)
  state = None if init is None else LinearAttentionState(jnp.asarray(init[0]), jnp.asarray(init[1]))
  fn = jax.jit(lambda q, k, v, s: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-6,
                                                       initial_state=s, kernel=kernel))
  out, final = fn(q, k, v, state)
  assert out.shape == v.shape and out.dtype == jnp.bfloat16
  assert final.kv.shape == (b, h, 273, dv) and final.kv.dtype == jnp.float32
  assert final.k_state.shape == (b, h, 273) and final.k_state.dtype == jnp.float32
  ref_out, ref_kv, ref_ks = _oracle(q, k, v, normalize=normalize, eps=1e-6,
                                    kv0=None if init is None else init[0],
                                    ks0=None if init is None else init[1])
  assert _rel(out, ref_out) <= TOL
  assert _rel(final.kv, ref_kv) <= TOL
  assert _rel(final.k_state, ref_ks) <= TOL


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("b,length,h,dv,normalize", [(1, 65, 2, 64, True), (2, 1000, 3, 112, False),
                                                       (1, 300, 80, 64, False), (1, 3000, 2, 64, True)])
def test_every_output_element_is_written(b, length, h, dv, normalize, kernel):
  """Outputs aliased to NaN-filled buffers: any element the kernel skips stays NaN."""
  from ffi.based_attention import _ffi_forward_into

  _skip_redundant(kernel, normalize)
  q, k, v, (kv0, ks0) = _draw(7 + length, b, length, h, dv, with_state=True)
  poison = (jnp.full(v.shape, jnp.nan, jnp.bfloat16), jnp.full((b, h, 273, dv), jnp.nan, jnp.float32),
            jnp.full((b, h, 273), jnp.nan, jnp.float32))
  fn = jax.jit(lambda *args: _ffi_forward_into(*args, normalize=normalize, eps=1e-6, kernel=kernel))
  out, kv, ks = fn(q, k, v, jnp.asarray(kv0), jnp.asarray(ks0), *poison)
  if kernel.startswith("wgmma"):  # its own psi-layout state, unconverted: every element written
    raw = jax.jit(lambda *args: _ffi_forward_into(*args, normalize=normalize, eps=1e-6, kernel=kernel,
                                                  internal=True))(q, k, v, jnp.asarray(kv0), jnp.asarray(ks0),
                                                                  *poison)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in raw)
  ref_out, ref_kv, ref_ks = _oracle(q, k, v, normalize=normalize, eps=1e-6, kv0=kv0, ks0=ks0)
  assert _rel(out, ref_out) <= TOL
  assert _rel(kv, ref_kv) <= TOL
  assert _rel(ks, ref_ks) <= TOL


@pytest.mark.parametrize("kernel", KERNELS)
def test_dispatch_impl_ffi_and_vmap(kernel):
  """based_jax.ops dispatch to the kernel, and jax.vmap over an extra leading axis (wgmma_gram:
  without normalization, so that its Gram rows and their conversion are vmapped)."""
  import ffi
  from based_jax.ops import linear_attention

  normalize = kernel != "wgmma_gram"
  q, k, v, _ = _draw(11, 2 * 2, 129, 3, 64, with_state=False)
  qs, ks_, vs = (x.reshape(2, 2, *x.shape[1:]) for x in (q, k, v))  # [V, B, L, H, .]
  batched = jax.jit(jax.vmap(
      lambda q, k, v: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-6, initial_state=None,
                                           kernel=kernel)))
  out, state = batched(qs, ks_, vs)
  assert out.shape == (2, 2, 129, 3, 64) and state.kv.shape == (2, 2, 3, 273, 64)
  ref_out, ref_kv, ref_ks = _oracle(q, k, v, normalize=normalize, eps=1e-6)
  assert _rel(out.reshape(v.shape), ref_out) <= TOL
  assert _rel(state.kv.reshape(ref_kv.shape), ref_kv) <= TOL
  assert _rel(state.k_state.reshape(ref_ks.shape), ref_ks) <= TOL
  out2, _ = jax.jit(lambda q, k, v: linear_attention(q, k, v, normalize=True, eps=1e-6, impl="ffi"))(q, k, v)
  assert _rel(out2, _oracle(q, k, v, normalize=True, eps=1e-6)[0]) <= TOL


@pytest.mark.parametrize("kernel", KERNELS)
def test_past_2_pow_31_elements(kernel):
  """v and out hold more than 2^31 elements: rows at the far end must use 64-bit offsets."""
  import ffi

  b, length, h, dv = 2100, 1000, 16, 64
  assert b * length * h * dv > 2**31
  q, k, v, _ = _draw(5, b, length, h, dv, with_state=False)
  out, state = jax.jit(lambda q, k, v: ffi.linear_attention(q, k, v, normalize=False, eps=0.0,
                                                            initial_state=None, kernel=kernel))(q, k, v)
  for row in (0, b - 1):
    ref_out, ref_kv, ref_ks = _oracle(q[row:row + 1], k[row:row + 1], v[row:row + 1], normalize=False, eps=0.0)
    assert _rel(out[row:row + 1], ref_out) <= TOL
    assert _rel(state.kv[row:row + 1], ref_kv) <= TOL
    assert _rel(state.k_state[row:row + 1], ref_ks) <= TOL


@pytest.mark.parametrize("kernel", SEGMENT_KERNELS)
@pytest.mark.parametrize("b,length,h,dv,normalize,segments", [
    (1, 8192, 4, 64, False, 1),      # one segment: no pass 1, no prefix (no initial state)
    (1, 8192, 4, 64, False, 4),
    (1, 8192, 4, 64, True, 8),
    (1, 8192, 4, 64, False, 32),
    (2, 2049, 2, 112, False, 16),    # 33 chunks in 16 asked: 11 segments of 3, partial last chunk
    (1, 300, 2, 64, False, 1024),    # more segments asked than chunks: one per chunk
])
def test_explicit_segment_counts(b, length, h, dv, normalize, segments, kernel):
  """segments= changes the split of the sequence, not the result (with an initial state: the
  prefix kernel's slot 0; the Gram variant: its Gram rows through pass 1 and the prefix)."""
  import ffi
  from based_jax.ops import LinearAttentionState

  _skip_redundant(kernel, normalize)
  q, k, v, init = _draw(17 + segments, b, length, h, dv, with_state=True)
  state = LinearAttentionState(jnp.asarray(init[0]), jnp.asarray(init[1]))
  fn = jax.jit(lambda q, k, v, s: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-6, initial_state=s,
                                                       kernel=kernel, segments=segments))
  out, final = fn(q, k, v, state)
  ref_out, ref_kv, ref_ks = _oracle(q, k, v, normalize=normalize, eps=1e-6, kv0=init[0], ks0=init[1])
  assert _rel(out, ref_out) <= TOL
  assert _rel(final.kv, ref_kv) <= TOL
  assert _rel(final.k_state, ref_ks) <= TOL
  if kernel == "wgmma_gram":  # exact products summed in float32 (plus the initial state): far below TOL
    assert _rel(final.k_state, ref_ks) <= 1e-4


@pytest.mark.parametrize("segments", [3, 64])
def test_gram_rows_every_element_written_with_segments(segments):
  """The Gram variant's raw Gram rows and psi state are fully written, whatever the segment count."""
  from ffi.based_attention import _ffi_forward_into

  b, length, h, dv = 2, 3000, 3, 112
  q, k, v, (kv0, ks0) = _draw(29 + segments, b, length, h, dv, with_state=True)
  poison = (jnp.full(v.shape, jnp.nan, jnp.bfloat16), jnp.full((b, h, 273, dv), jnp.nan, jnp.float32),
            jnp.full((b, h, 273), jnp.nan, jnp.float32))
  args = (q, k, v, jnp.asarray(kv0), jnp.asarray(ks0), *poison)
  kw = dict(normalize=False, eps=1e-6, kernel="wgmma_gram", segments=segments)
  raw = jax.jit(lambda *a: _ffi_forward_into(*a, internal=True, **kw))(*args)
  assert raw[2].shape == (b, h, 17, 16)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in raw)
  out, kv, ks = jax.jit(lambda *a: _ffi_forward_into(*a, **kw))(*args)
  ref_out, ref_kv, ref_ks = _oracle(q, k, v, normalize=False, eps=1e-6, kv0=kv0, ks0=ks0)
  assert _rel(out, ref_out) <= TOL and _rel(kv, ref_kv) <= TOL and _rel(ks, ref_ks) <= 1e-4


# The backward is the kernel-independent XLA VJP (custom_vjp), and compiling it takes ~50 s on the
# H200: checked once, through the default kernel.
@pytest.mark.parametrize("kernel", [DEFAULT_KERNEL])
def test_grad_matches_float32_reference(kernel):
  import ffi
  from based_jax.ops import LinearAttentionState, quadratic_linear_attention

  q, k, v, (kv0, ks0) = _draw(3, 2, 97, 2, 64, with_state=True)
  state = LinearAttentionState(jnp.asarray(kv0), jnp.asarray(ks0))
  w = jax.random.normal(jax.random.key(9), v.shape, jnp.float32)
  wk = jax.random.normal(jax.random.key(10), (2, 2, 273, 64), jnp.float32)

  def loss(fn, q, k, v, kv0):
    out, final = fn(q, k, v, normalize=True, eps=1e-6, initial_state=LinearAttentionState(kv0, state.k_state))
    return jnp.sum(out.astype(jnp.float32) * w) + 1e-3 * jnp.sum(final.kv * wk)

  attention = functools.partial(ffi.linear_attention, kernel=kernel)
  got = jax.jit(jax.grad(lambda *a: loss(attention, *a), argnums=(0, 1, 2, 3)))(q, k, v, state.kv)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  want = jax.grad(lambda *a: loss(quadratic_linear_attention, *a), argnums=(0, 1, 2, 3))(*f32, state.kv)
  for g, r in zip(got, want):
    assert _rel(g, np.asarray(r, np.float64)) <= 3e-2
