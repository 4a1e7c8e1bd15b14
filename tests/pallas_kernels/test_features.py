"""The kernel's psi_q / psi_k feature maps and state conversions against the contract's phi."""

import ml_dtypes
import numpy as np
import pytest

from pallas_kernels.based_attention import features


@pytest.fixture
def rng():
  return np.random.default_rng()


def test_psi_inner_product_is_taylor_kernel(rng):
  q = rng.standard_normal((7, 16))
  k = rng.standard_normal((9, 16))
  s = q @ k.T / 4
  want = 1 + s + s * s / 2                                            # [7, 9]
  got = features.psi_numpy(q, "q") @ features.psi_numpy(k, "k").T     # [7, 9]
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(features.phi_numpy(q) @ features.phi_numpy(k).T, want,
                             rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("side", ["q", "k"])
def test_matrix_construction_matches_psi(rng, side):
  x = rng.standard_normal((11, 16))
  np.testing.assert_array_equal(features.psi_from_matrices(x, side), features.psi_numpy(x, side))


def test_build_matrices_are_exact_in_bf16():
  m = features.build_matrices()
  assert m.shape == (features.NUM_MATS, 16, 64)
  as_bf16 = m.astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(as_bf16, m)
  assert set(np.unique(m)) <= {0.0, 0.125, 0.25, 0.5, 1.0}


def test_to_273_maps_accumulated_state(rng):
  k = rng.standard_normal((13, 16))
  v = rng.standard_normal((13, 5))
  kernel_state = features.psi_numpy(k, "k").T @ v                    # [192, 5]
  np.testing.assert_allclose(features.TO_273 @ kernel_state, features.phi_numpy(k).T @ v,
                             rtol=1e-12, atol=1e-12)


def test_from_273_keeps_readout_of_any_state(rng):
  state = rng.standard_normal((273, 6))                              # not symmetric
  q = rng.standard_normal((8, 16))
  np.testing.assert_allclose(features.psi_numpy(q, "q") @ (features.FROM_273 @ state),
                             features.phi_numpy(q) @ state, rtol=1e-11, atol=1e-11)


def test_padding_rows_are_zero(rng):
  x = rng.standard_normal((4, 16))
  for side in ("q", "k"):
    assert np.all(features.psi_numpy(x, side)[:, features.CONST_ROW + 1:] == 0)
  assert np.all(features.TO_273[:, features.CONST_ROW + 1:] == 0)
