"""The Pallas kernel on the CPU, through the Mosaic GPU interpreter, against a float64 oracle.

What the interpreter (jax 0.11.2, `plgpu.InterpretGPUParams`) covers here: TMA copies between
GMEM and SMEM with mbarriers, `plgpu.emit_pipeline` input pipelining, wgmma with SMEM operands
(including the transposed psi_k(K)^T operand) into zero-initialised accumulators, accumulator
reads, register math and SMEM stores, with uninitialised memory filled with NaN (so unwritten
outputs show up). The kernel is written within that subset (the P operand goes through SMEM, the
initial state enters via I @ hi + I @ lo, the output tiles leave by explicit TMA stores).

What it cannot cover, and is left to the gpu-marked tests (test_gpu.py) on an H200: the real
Mosaic lowering and ptxas (tiling/swizzle layouts, register allocation and spills, SMEM limits;
the CUDA *lowering* alone is checked on the CPU below), asynchronous wgmma and TMA timing
(`wgmma_wait` is a no-op in the interpreter), and anything at realistic sizes.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.based_attention import KernelConfig, api
from tests.float64_reference import linear_attention_f64, rel_err
from tests.pallas_kernels.numpy_reference import random_case

TOL = 1e-2


def _check_rows(out, ref):
  """Every output row written and accurate: worst per-token relative error."""
  out = np.asarray(out, np.float64)
  assert np.all(np.isfinite(out)), "kernel left NaN (unwritten) output rows"
  err = np.linalg.norm(out - ref, axis=-1) / (np.linalg.norm(ref, axis=-1) + 1e-30)
  assert float(err.max()) <= 3 * TOL, f"worst row error {err.max():.3g}"


CASES = [
    # b, length, h, dv, normalize, with_state, min_segment_chunks, key_sums
    (1, 1, 1, 64, True, False, 4, "kernel"),       # one token: 63 padded rows
    (1, 100, 2, 64, True, False, 4, "kernel"),     # odd length, one segment
    (2, 130, 1, 64, False, True, 1, "kernel"),     # odd length, 3 segments, initial state
    (1, 256, 1, 112, True, True, 1, "kernel"),     # Dv = 112 (64 + 48 columns), 4 segments
    (1, 100, 1, 64, False, True, 4, "xla"),        # key sums from XLA, one segment
    (1, 70, 2, 64, False, True, 4, "kernel"),      # Gram key sums, one segment, initial state
]


# The interpreter runs each warpgroup of a block as a host thread that blocks inside XLA:CPU
# while it waits at a barrier; with fewer host CPUs than warpgroups that wait can starve the
# warpgroup it waits for (seen with 2 CPUs: the four-warpgroup kernel never finishes).
MIN_CPUS_FOR_GROUPS = 4
_needs_cpus = pytest.mark.skipif(
    (os.cpu_count() or 1) < MIN_CPUS_FOR_GROUPS,
    reason=f"the four-warpgroup kernel needs >= {MIN_CPUS_FOR_GROUPS} host CPUs in the interpreter")
VARIANTS = [pytest.param({}, id="single"),          # operand_staging "auto": "smem_t" here
            pytest.param({"operand_staging": "smem"}, id="keys_smem"),
            pytest.param({"feature_waits": 2}, id="two_waits"),
            pytest.param({"fresh_views": False}, id="static_views"),
            pytest.param({"overlap_output": True}, id="overlap_output"),
            pytest.param({"schedule": "groups"}, id="groups", marks=_needs_cpus)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b,length,h,dv,normalize,with_state,min_seg,key_sums", CASES)
def test_interpreted_kernel_matches_float64(b, length, h, dv, normalize, with_state, min_seg,
                                            key_sums, variant):
  rng = np.random.default_rng()
  q, k, v, kv0, ks0, state = random_case(rng, b, length, h, dv, with_state)
  config = KernelConfig(min_segment_chunks=min_seg, key_sums=key_sums, **variant)
  try:
    out, final = api.linear_attention(q, k, v, normalize=normalize, eps=1e-6,
                                      initial_state=state, config=config,
                                      interpret=plgpu.InterpretGPUParams())
  except Exception:
    # The interpreter keeps global state that must be reset after a failure.
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call  # pylint: disable=all
    interpret_pallas_call.reset_gpu_interpret_mode_state()
    raise
  ref_out, ref_kv, ref_ks = linear_attention_f64(q, k, v, normalize=normalize, eps=1e-6,
                                                 kv0=kv0, ks0=ks0)
  assert out.shape == (b, length, h, dv) and out.dtype == jnp.bfloat16
  assert final.kv.shape == (b, h, 273, dv) and final.kv.dtype == jnp.float32
  assert final.k_state.shape == (b, h, 273) and final.k_state.dtype == jnp.float32
  assert rel_err(out, ref_out) <= TOL
  _check_rows(out, ref_out)
  assert rel_err(final.kv, ref_kv) <= TOL
  assert rel_err(final.k_state, ref_ks) <= TOL


@pytest.mark.parametrize("variant", [{}, {"feature_waits": 2}, {"fresh_views": False},
                                     {"overlap_output": True}, {"operand_staging": "smem_t"},
                                     {"operand_staging": "registers"},
                                     {"operand_staging": "p_registers"}, {"schedule": "groups"}],
                         ids=["single", "two_waits", "static_views", "overlap_output",
                              "keys_transposed", "registers", "p_registers", "groups"])
@pytest.mark.parametrize("normalize,with_state,key_sums", [(True, True, "kernel"),
                                                           (False, True, "kernel"),
                                                           (False, False, "xla")])
def test_kernel_lowers_for_cuda(normalize, with_state, key_sums, variant):
  """The Mosaic GPU lowering (TMA dims, layouts, wgmma shapes) runs on the CPU, no GPU needed."""
  b, length, h = 1, 8192, 16
  spec = lambda *s: jax.ShapeDtypeStruct(s, jnp.bfloat16)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  for dv in (64, 112):
    fn = jax.jit(lambda q, k, v, kv, ks: api.forward(
        q, k, v, kv, ks, normalize=normalize, eps=1e-6,
        config=KernelConfig(key_sums=key_sums, **variant),
        has_initial_state=with_state))
    lowered = fn.trace(spec(b, length, h, 16), spec(b, length, h, 16), spec(b, length, h, dv),
                       f32(b, h, 273, dv), f32(b, h, 273)).lower(lowering_platforms=("cuda",))
    assert "mosaic_gpu" in lowered.as_text()
