"""The wgmma kernel's psi feature layout and state conversions (ffi.psi_layout) on CPU, and a NumPy
model of the kernel's chunk / segment algorithm in that layout against the float64 oracle."""

from pathlib import Path

import numpy as np
import pytest
from tests.ffi.ffi_oracle import draw_inputs
from tests.float64_reference import linear_attention_f64 as oracle
from tests.float64_reference import phi64, rel_err

from ffi import psi_layout

REPO = Path(__file__).resolve().parents[2]


def _explicit_psi(x, side):
  """psi written from its row table (psi_layout's docstring), not from the matrices."""
  x = np.asarray(x, np.float64)
  out = np.zeros(x.shape[:-1] + (192,))
  for d in range(9):
    for a in range(16):
      scale = 0.125 if side == "k" and d in (0, 8) else 0.25
      out[..., 16 * d + a] = scale * x[..., a] * x[..., (a + d) % 16]
  out[..., 144:160] = x / 2
  out[..., 160] = 1
  return out


@pytest.mark.parametrize("side", ["q", "k"])
def test_matrix_construction_is_the_row_table(side):
  x = np.random.default_rng(0).normal(size=(7, 16))
  np.testing.assert_allclose(psi_layout.psi_from_matrices(x, side), _explicit_psi(x, side), atol=1e-12)


def test_psi_products_are_the_taylor_kernel():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(5, 16)), rng.normal(size=(6, 16))
  got = psi_layout.psi_from_matrices(x, "q") @ psi_layout.psi_from_matrices(y, "k").T  # [5, 6]
  np.testing.assert_allclose(got, phi64(x) @ phi64(y).T, rtol=1e-12)
  s = x @ y.T / 4
  np.testing.assert_allclose(got, 1 + s + s * s / 2, rtol=1e-12)


def test_matrices_are_exact_in_bf16():
  m = psi_layout.matrices()
  assert set(np.unique(m).tolist()) <= {0.0, 0.125, 0.25, 0.5, 1.0}


def test_state_conversions():
  rng = np.random.default_rng(2)
  keys, values = rng.normal(size=(40, 16)), rng.normal(size=(40, 3))
  psi_state = psi_layout.psi_from_matrices(keys, "k").T @ values              # [R, 3]
  phi_state = phi64(keys).T @ values                                          # [E, 3]
  to = np.asarray(psi_layout.to_273(psi_state[None, None].astype(np.float32)))[0, 0]
  np.testing.assert_allclose(to, phi_state, rtol=1e-4, atol=1e-4)
  back = np.asarray(psi_layout.from_273(phi_state[None, None].astype(np.float32)))[0, 0]
  np.testing.assert_allclose(back, psi_state, rtol=1e-4, atol=1e-4)
  # Any (asymmetric) 273 state: same readout for every query after from_273.
  arbitrary = rng.normal(size=(273, 3)).astype(np.float32)
  converted = np.asarray(psi_layout.from_273(arbitrary[None, None]))[0, 0]
  queries = rng.normal(size=(9, 16))
  np.testing.assert_allclose(psi_layout.psi_from_matrices(queries, "q") @ converted,
                             phi64(queries) @ arbitrary, rtol=1e-4, atol=1e-4)
  assert np.all(converted[161:] == 0)


def test_cuda_matrix_table_matches_python():
  """The CUDA `mat_entry` switch states the same seven matrices as psi_layout.matrices() (checked
  line by line against the table that the float64 tests above validate)."""
  source = (REPO / "ffi" / "based_attention_wgmma.cu").read_text()
  assert "enum Mat { kTile = 0, kShift0Q, kShift1, kLeft2, kRight2Q, kShift0K, kRight2K, kNumMats };" in source
  body = source[source.index("__device__ __forceinline__ float mat_entry"):]
  body = body[:body.index("\n}\n")]
  for line in (
      "const int jj = j & 15, d0 = j >> 4, d1 = 4 + (j >> 4);",
      "case kTile: return a == jj ? 1.f : 0.f;",
      "case kShift0Q: return a == ((jj + d0) & 15) ? 0.25f : 0.f;",
      "case kShift0K: return a == ((jj + d0) & 15) ? (d0 == 0 ? 0.125f : 0.25f) : 0.f;",
      "case kShift1: return a == ((jj + d1) & 15) ? 0.25f : 0.f;",
      "case kLeft2: return (j < 16 && a == j) ? 1.f : 0.f;",
      "if (j < 16) return a == ((j + 8) & 15) ? 0.25f : 0.f;",
      "if (j < 16) return a == ((j + 8) & 15) ? 0.125f : 0.f;",
  ):
    assert line in body, line
  assert body.count("return (j < 32 && a == j - 16) ? 0.5f : 0.f;") == 2
  assert body.index("0.25f : 0.f;\n      return (j < 32") < body.index("default:  // kRight2K")


@pytest.mark.parametrize("b,length,h,dv,normalize,with_state,segments", [
    (1, 1, 2, 64, True, False, 1),
    (2, 63, 2, 64, False, True, 1),
    (1, 200, 2, 112, True, True, 3),    # 4 chunks over 3 segments: 2 + 2
    (1, 333, 1, 64, False, False, 6),   # 6 chunks, one per segment
    (1, 130, 2, 56, True, True, 2),
])
def test_kernel_model_matches_float64(b, length, h, dv, normalize, with_state, segments):
  q, k, v, init = draw_inputs(length + 7 * segments, b, length, h, dv, with_state=with_state)
  kv0, ks0 = (None, None) if init is None else init
  out, kv, ks = psi_layout.kernel_model(q, k, v, normalize=normalize, eps=1e-6, kv0=kv0, ks0=ks0,
                                        num_segments=segments)
  ref_out, ref_kv, ref_ks = oracle(q, k, v, normalize=normalize, eps=1e-6, kv0=kv0, ks0=ks0)
  assert rel_err(out, ref_out) <= 1e-2
  assert rel_err(kv, ref_kv) <= 1e-2  # psi_k(K) and V are rounded to bf16, as on the tensor cores
  assert rel_err(ks, ref_ks) <= 1e-2


def test_key_sums_from_gram_rows():
  """Gram rows [sum k k^T; sum k] [17, 16] and the count give sum_t psi_k(k_t), rows 161..191 zero."""
  keys = np.random.default_rng(3).normal(size=(2, 45, 16))                    # [B, T, F]
  left = np.concatenate([keys, np.ones((2, 45, 1))], axis=-1)                 # [B, T, 17]
  gram = np.einsum("btg,btf->bgf", left, keys).astype(np.float32)            # [B, 17, 16]
  got = np.asarray(psi_layout.key_sums_from_gram(gram, 45))                  # [B, R]
  want = psi_layout.psi_from_matrices(keys, "k").sum(axis=1)                 # [B, R]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  assert got.shape == (2, 192) and np.all(got[:, 161:] == 0)
  assert np.all(got[:, psi_layout.CONST_ROW] == 45)


def test_from_gram_table_reads_each_gram_entry_it_needs():
  """Every product k_a k_b (a <= b up to the shift symmetry) and every sum k_b is read."""
  idx, w = psi_layout.FROM_GRAM_INDEX, psi_layout.FROM_GRAM_WEIGHT
  live = w != 0
  assert live.sum() == 161 and np.all(live[:161])
  assert len(set(idx[live].tolist())) == 161  # no Gram entry read twice
  assert idx[psi_layout.CONST_ROW] == 272 and set(idx[144:160].tolist()) == set(range(256, 272))


@pytest.mark.parametrize("b,length,h,dv,with_state,segments", [
    (1, 200, 2, 64, True, 3),
    (2, 63, 1, 56, False, 1),
    (1, 333, 2, 112, True, 6),
])
def test_kernel_model_with_gram_sums_matches_float64(b, length, h, dv, with_state, segments):
  """The Gram variant's key sums (per-segment Gram rows, rebuilt in Python, plus the initial
  k_state) against the oracle."""
  q, k, v, init = draw_inputs(length + 11 * segments, b, length, h, dv, with_state=with_state)
  kv0, ks0 = (None, None) if init is None else init
  out, kv, ks = psi_layout.kernel_model(q, k, v, normalize=False, eps=1e-6, kv0=kv0, ks0=ks0,
                                        num_segments=segments, gram_sums=True)
  ref_out, ref_kv, ref_ks = oracle(q, k, v, normalize=False, eps=1e-6, kv0=kv0, ks0=ks0)
  assert rel_err(out, ref_out) <= 1e-2
  assert rel_err(kv, ref_kv) <= 1e-2
  assert rel_err(ks, ref_ks) <= 1e-5  # exact products summed in float32: far tighter than bf16


def test_key_state_273_from_gram_is_to_273_of_the_psi_sums():
  """The one-gather form equals to_273(key_sums_from_gram(...)) and the phi sums of the keys."""
  keys = np.random.default_rng(4).normal(size=(3, 50, 16))                    # [B, T, F]
  left = np.concatenate([keys, np.ones((3, 50, 1))], axis=-1)                 # [B, T, 17]
  gram = np.einsum("btg,btf->bgf", left, keys).astype(np.float32)            # [B, 17, 16]
  one = np.asarray(psi_layout.key_state_273_from_gram(gram, 50))             # [B, E]
  two = np.asarray(psi_layout.to_273(psi_layout.key_sums_from_gram(gram, 50)[:, None])[:, 0])
  np.testing.assert_allclose(one, two, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(one, phi64(keys).sum(axis=1), rtol=1e-5, atol=1e-4)
