"""The pure-JAX model of the CUDA kernel (ffi.reference) on CPU: layout, roundings, segment split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.ffi.ffi_oracle import draw_inputs
from tests.float64_reference import linear_attention_f64 as oracle
from tests.float64_reference import phi64, rel_err

from based_jax.ops import LinearAttentionState
from ffi import reference

TOL = 1e-2


def test_internal_features_give_the_taylor_kernel():
  x = np.random.default_rng(0).normal(size=(5, 16))
  y = np.random.default_rng(1).normal(size=(7, 16))
  fx = np.asarray(reference.internal_features(jnp.asarray(x, jnp.float32)), np.float64)  # [5, P]
  fy = np.asarray(reference.internal_features(jnp.asarray(y, jnp.float32)), np.float64)  # [7, P]
  got = (fx * reference.QUERY_WEIGHTS) @ fy.T  # [5, 7]
  s = x @ y.T / 4
  np.testing.assert_allclose(got, 1 + s + s * s / 2, rtol=1e-5)
  np.testing.assert_allclose(got, phi64(x) @ phi64(y).T, rtol=1e-5)


def test_phi_layout_round_trips():
  assert sorted(reference.PHI_INDEX[reference.PHI_INDEX >= 0].tolist()) == list(range(273))
  kv = jax.random.normal(jax.random.key(0), (2, 3, 273, 5))  # [B, H, E, Dv]
  ks = jax.random.normal(jax.random.key(1), (2, 3, 273))  # [B, H, E]
  np.testing.assert_allclose(reference.from_internal(reference.to_internal(kv)), kv, rtol=1e-6)
  np.testing.assert_allclose(reference.from_internal(reference.to_internal(ks)), ks, rtol=1e-6)
  internal = reference.to_internal(ks)
  assert np.all(np.asarray(internal[:, :, 273:]) == 0)  # padding features stay zero


@pytest.mark.parametrize("b,length,h,dv,normalize,with_state,segments", [
    (1, 1, 2, 64, True, False, 1),
    (2, 63, 2, 64, False, True, 1),
    (1, 200, 2, 112, True, True, 3),   # 4 chunks over 3 segments: 2 + 2, the last one partial
    (1, 333, 1, 64, False, False, 6),  # 6 chunks, one per segment
])
def test_kernel_model_matches_float64(b, length, h, dv, normalize, with_state, segments):
  q, k, v, init = draw_inputs(length + segments, b, length, h, dv, with_state=with_state)
  state = None if init is None else LinearAttentionState(jnp.asarray(init[0]), jnp.asarray(init[1]))
  model = jax.jit(lambda q, k, v, state: reference.kernel_reference(
      q, k, v, normalize=normalize, eps=1e-6, initial_state=state, num_segments=segments))
  out, final = model(q, k, v, state)
  ref_out, ref_kv, ref_ks = oracle(q, k, v, normalize=normalize, eps=1e-6,
                                   kv0=None if init is None else init[0], ks0=None if init is None else init[1])
  assert out.shape == v.shape and out.dtype == jnp.bfloat16
  assert rel_err(out, ref_out) <= TOL
  assert rel_err(final.kv, ref_kv) <= TOL
  assert rel_err(final.k_state, ref_ks) <= TOL
