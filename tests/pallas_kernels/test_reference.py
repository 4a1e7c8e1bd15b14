"""The pure-JAX mirror of the kernel (backend="reference") through the full wrapper, vs float64.

Fast on any platform: it covers the wrapper logic (tail padding, segment planning and the
two-pass combine, Dv column blocks, psi <-> 273 state layouts, initial states) at sizes the CPU
interpreter cannot reach, and checks the mirror against the interpreted kernel.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.based_attention import KernelConfig, api
from tests.float64_reference import linear_attention_f64, rel_err
from tests.pallas_kernels.numpy_reference import random_case, random_inputs

TOL = 1e-2


@pytest.mark.parametrize("b,length,h,dv,normalize,with_state,planner,key_sums", [
    (1, 1000, 4, 64, True, True, "fill", "kernel"),    # 16 chunks, segments, padded tail
    (2, 777, 3, 112, False, True, "waves", "kernel"),  # Dv = 64 + 48, odd length
    (2, 777, 3, 112, False, True, "waves", "xla"),     # the same with XLA key sums
    (1, 4096, 2, 64, True, False, "fill", "xla"),      # 64 chunks, 16 segments
    (3, 1, 2, 64, True, False, "fill", "kernel"),      # one token
    (1, 130, 1, 256, False, False, "fill", "xla"),     # Dv = 4 column blocks, 3 segments
    (4, 100, 2, 64, False, True, "waves", "xla"),      # one segment, XLA key sums, pad
])
def test_reference_backend_matches_float64(b, length, h, dv, normalize, with_state, planner,
                                           key_sums):
  rng = np.random.default_rng()
  q, k, v, kv0, ks0, state = random_case(rng, b, length, h, dv, with_state)
  out, final = api.linear_attention(q, k, v, normalize=normalize, eps=1e-6, initial_state=state,
                                    config=KernelConfig(planner=planner, min_segment_chunks=1,
                                                        key_sums=key_sums),
                                    backend="reference")
  ref_out, ref_kv, ref_ks = linear_attention_f64(q, k, v, normalize=normalize, eps=1e-6,
                                                 kv0=kv0, ks0=ks0)
  assert out.shape == ref_out.shape and out.dtype == jnp.bfloat16
  assert rel_err(out, ref_out) <= TOL
  assert rel_err(final.kv, ref_kv) <= TOL
  assert rel_err(final.k_state, ref_ks) <= TOL


def test_reference_mirrors_interpreted_kernel():
  rng = np.random.default_rng()
  q, k, v, _, _, state = random_case(rng, 1, 192, 1, 64, with_state=True)
  config = KernelConfig(min_segment_chunks=1)
  run = lambda **kw: api.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=state,
                                          config=config, **kw)
  want, want_state = run(backend="reference")
  got, got_state = run(interpret=plgpu.InterpretGPUParams())
  ref = np.asarray(want, np.float64)
  assert rel_err(got, ref) <= 2e-3          # same roundings, different fp32 summation orders
  assert rel_err(got_state.kv, np.asarray(want_state.kv, np.float64)) <= 1e-4


def test_unknown_backend_raises():
  q, k, v = random_inputs(np.random.default_rng(), 1, 64, 1, 64)
  with pytest.raises(ValueError, match="backend"):
    api.linear_attention(q, k, v, normalize=True, eps=1e-6, backend="triton")
