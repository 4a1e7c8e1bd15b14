"""The symmetric 192-row Taylor feature layout used inside the Pallas kernel.

The contract's feature map (docs/design.md) has 273 features:
`phi(x) = [1, x / 2, vec(x x^T) / (4 sqrt 2)]`, so `phi(q).phi(k) = 1 + s + s^2 / 2`, `s = q.k / 4`.
Its 256 quadratic features hold every product twice (`x_a x_b` and `x_b x_a`). The kernel uses a
pair of maps (`psi_q` for queries, `psi_k` for keys) with each unordered pair once, arranged in
16-wide "shift tiles" so that they can be built exactly from two tensor-core products with 0 /
power-of-two matrices (see `build_matrices`); all scales are powers of two:

  row 16 d + a, d = 0      : psi_q = x_a^2 / 4,        psi_k = x_a^2 / 8          (diagonal)
  row 16 d + a, d = 1..7   : psi_q = psi_k = x_a x_{a+d} / 4    (indices mod 16; each pair once)
  row 16 d + a, d = 8      : psi_q = x_a x_{a+8} / 4,  psi_k = x_a x_{a+8} / 8   (pairs twice)
  row 144 + b              : x_b / 2                              (linear)
  row 160                  : 1                                    (constant)
  rows 161..191            : 0                                    (padding to 3 x 64)

`psi_q(q).psi_k(k) = phi(q).phi(k)` exactly, with 161 live features instead of 273 (the kernel
carries 192 = 3 groups of 64 rows). Kernel states hold sums of `psi_k(k) v^T` and convert
linearly: `S_273 = TO_273 @ S_psi` for states the kernel accumulated, and
`S_psi = FROM_273 @ S_273` for any initial state (the map that keeps
`phi(q).S_273 = psi_q(q).S_psi` for every q).
"""

import numpy as np

FEATURE_DIM = 16
EXPANDED_DIM = 273
PSI_DIM = 192          # rows of the kernel's state: 3 wgmma groups of 64
PSI_GROUPS = 3
LINEAR_ROW = 144
CONST_ROW = 160
SQRT2 = float(np.sqrt(2.0))
QUAD_SCALE = 1.0 / (4.0 * SQRT2)   # the contract's 1 / (4 sqrt 2)


def _quad_index(a: int, b: int) -> int:
  """Row of x_a x_b in the 273 layout (i-major, after the constant and linear rows)."""
  return 1 + FEATURE_DIM + a * FEATURE_DIM + b


def _tile_scale(d: int, side: str) -> float:
  if side == "q" or d not in (0, 8):
    return 0.25
  return 0.125


def psi_numpy(x: np.ndarray, side: str) -> np.ndarray:
  """Reference psi_q (side "q") or psi_k (side "k") in NumPy: x [..., 16] -> [..., 192]."""
  if side not in ("q", "k"):
    raise ValueError(f"psi_numpy: side must be 'q' or 'k'; got {side!r}")
  x = np.asarray(x)
  out = np.zeros(x.shape[:-1] + (PSI_DIM,), x.dtype)
  for d in range(9):
    rolled = np.roll(x, -d, axis=-1)                 # rolled[..., a] = x[..., (a + d) % 16]
    out[..., 16 * d:16 * d + 16] = _tile_scale(d, side) * x * rolled
  out[..., LINEAR_ROW:LINEAR_ROW + 16] = x / 2
  out[..., CONST_ROW] = 1
  return out


def phi_numpy(x: np.ndarray) -> np.ndarray:
  """The contract's 273-feature map in NumPy: x [..., 16] -> [..., 273]."""
  x = np.asarray(x)
  quad = (x[..., :, None] * x[..., None, :]).reshape(x.shape[:-1] + (256,))  # [..., 256]
  ones = np.ones(x.shape[:-1] + (1,), x.dtype)
  return np.concatenate([ones, x / 2, quad * QUAD_SCALE], axis=-1)         # [..., 273]


def _to_273() -> np.ndarray:
  """[273, 192] map from a psi_k-state the kernel accumulated to the 273-layout state."""
  m = np.zeros((EXPANDED_DIM, PSI_DIM))
  m[0, CONST_ROW] = 1
  for b in range(FEATURE_DIM):
    m[1 + b, LINEAR_ROW + b] = 1
  for a in range(FEATURE_DIM):
    for b in range(FEATURE_DIM):
      d = (b - a) % FEATURE_DIM
      if d == 0 or d == 8:
        m[_quad_index(a, b), 16 * d + a] = SQRT2                # (1/8) -> 1/(4 sqrt 2)
      elif d <= 7:
        m[_quad_index(a, b), 16 * d + a] = 1 / SQRT2            # pair (a, a + d), 1/4
      else:
        m[_quad_index(a, b), 16 * (16 - d) + b] = 1 / SQRT2     # pair (b, b + 16 - d)
  return m


def _from_273() -> np.ndarray:
  """[192, 273] map from any 273-layout state to the psi_k-state with the same readout."""
  m = np.zeros((PSI_DIM, EXPANDED_DIM))
  m[CONST_ROW, 0] = 1
  for b in range(FEATURE_DIM):
    m[LINEAR_ROW + b, 1 + b] = 1
  for a in range(FEATURE_DIM):
    m[a, _quad_index(a, a)] = 1 / SQRT2
    m[128 + a, _quad_index(a, (a + 8) % 16)] = 1 / SQRT2
    for d in range(1, 8):
      b = (a + d) % FEATURE_DIM
      m[16 * d + a, _quad_index(a, b)] = 1 / SQRT2
      m[16 * d + a, _quad_index(b, a)] = 1 / SQRT2
  return m


TO_273 = _to_273()      # [273, 192]
FROM_273 = _from_273()  # [192, 273]

# Rows of `build_matrices()`.
MAT_TILE, MAT_SHIFT0_Q, MAT_SHIFT1, MAT_LEFT2, MAT_RIGHT2_Q, MAT_SHIFT0_K, MAT_RIGHT2_K = range(7)
NUM_MATS = 7


def build_matrices() -> np.ndarray:
  """The constant [7, 16, 64] matrices (entries 0, 1, 1/2, 1/4, 1/8: exact in bf16) that build
  psi on tensor cores. For a tile X [64 tokens, 16] and column j of a 64-wide group:

    T   = X @ M[MAT_TILE]:      T[:, j] = x_{j % 16}              (left factor of groups 0, 1)
    R_0 = X @ M[MAT_SHIFT0_*]:  x_{(j % 16 + d) % 16} * scale(d), d = j // 16      (group 0)
    R_1 = X @ M[MAT_SHIFT1]:    x_{(j % 16 + d) % 16} / 4,        d = 4 + j // 16  (group 1)
    A_2 = X @ M[MAT_LEFT2]:     x_j for j < 16, else 0
    B_2 = X @ M[MAT_RIGHT2_*]:  x_{(j + 8) % 16} * scale(8) for j < 16, x_{j - 16} / 2 for
                                16 <= j < 32, else 0
  Groups: psi[0:64] = T * R_0, psi[64:128] = T * R_1,
  psi[128:192] = (A_2 + [j >= 16]) * (B_2 + [j == 32]). Products of bf16 values and powers of two
  are exact in fp32, so each feature is rounded once, to bf16.
  """
  m = np.zeros((NUM_MATS, FEATURE_DIM, 64), np.float32)
  for j in range(64):
    a = j % 16
    m[MAT_TILE, a, j] = 1
    d0, d1 = j // 16, 4 + j // 16
    m[MAT_SHIFT0_Q, (a + d0) % 16, j] = _tile_scale(d0, "q")
    m[MAT_SHIFT0_K, (a + d0) % 16, j] = _tile_scale(d0, "k")
    m[MAT_SHIFT1, (a + d1) % 16, j] = 0.25
    if j < 16:
      m[MAT_LEFT2, j, j] = 1
      m[MAT_RIGHT2_Q, (j + 8) % 16, j] = _tile_scale(8, "q")
      m[MAT_RIGHT2_K, (j + 8) % 16, j] = _tile_scale(8, "k")
    elif j < 32:
      m[MAT_RIGHT2_Q, j - 16, j] = 0.5
      m[MAT_RIGHT2_K, j - 16, j] = 0.5
  return m


def psi_from_matrices(x: np.ndarray, side: str) -> np.ndarray:
  """psi built the kernel's way (exact products with build_matrices()); x [..., 16] -> [..., 192].

  Used by tests to check the kernel's construction against psi_numpy without a GPU.
  """
  m = build_matrices().astype(np.float64)
  x = np.asarray(x, np.float64)
  j = np.arange(64)
  shift0 = MAT_SHIFT0_Q if side == "q" else MAT_SHIFT0_K
  right2 = MAT_RIGHT2_Q if side == "q" else MAT_RIGHT2_K
  tile = x @ m[MAT_TILE]                                                   # [..., 64]
  g0 = tile * (x @ m[shift0])                                              # [..., 64]
  g1 = tile * (x @ m[MAT_SHIFT1])                                          # [..., 64]
  g2 = (x @ m[MAT_LEFT2] + (j >= 16)) * (x @ m[right2] + (j == 32))        # [..., 64]
  return np.concatenate([g0, g1, g2], axis=-1)                             # [..., 192]
