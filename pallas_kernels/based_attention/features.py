"""The symmetric 192-row Taylor feature layout used inside the Pallas kernel.

The contract's feature map (docs/design.md) has 273 features:
`phi(x) = [1, x / 2, vec(x x^T) / (4 sqrt 2)]`, so `phi(q).phi(k) = 1 + s + s^2 / 2`, `s = q.k / 4`.
Its 256 quadratic features hold every product twice (`x_a x_b` and `x_b x_a`). The kernel uses an
equivalent map `psi` with each unordered pair once, arranged in 16-wide "shift tiles" so that it
can be built from two tensor-core products (see `build_matrices`):

  row 16 d + a, d = 0      : x_a^2            / (4 sqrt 2)        (diagonal)
  row 16 d + a, d = 1..7   : x_a x_{a+d}      / 4                 (indices mod 16; each pair once)
  row 16 d + a, d = 8      : x_a x_{a+8}      / (4 sqrt 2)        (each pair twice, like phi)
  row 144 + b              : x_b / 2                              (linear)
  row 160                  : 1                                    (constant)
  rows 161..191            : 0                                    (padding to 3 x 64)

`psi(q).psi(k) = phi(q).phi(k)` exactly, with 161 live features instead of 273 (the kernel
carries 192 = 3 groups of 64 rows). States convert linearly: `S_273 = TO_273 @ S_psi` for
states the kernel produced, and `S_psi = FROM_273 @ S_273` for any initial state (the map that
keeps `phi(q).S_273 = psi(q).S_psi` for every q).
"""

import numpy as np

FEATURE_DIM = 16
EXPANDED_DIM = 273
PSI_DIM = 192          # rows of the kernel's state: 3 wgmma groups of 64
PSI_GROUPS = 3
LINEAR_ROW = 144
CONST_ROW = 160
QUAD_SCALE = 1.0 / (4.0 * np.sqrt(2.0))   # 1 / (4 sqrt 2): diagonal and d = 8 tiles
PAIR_SCALE = 0.25                          # d = 1..7 tiles


def _quad_index(a: int, b: int) -> int:
  """Row of x_a x_b in the 273 layout (i-major, after the constant and linear rows)."""
  return 1 + FEATURE_DIM + a * FEATURE_DIM + b


def psi_numpy(x: np.ndarray) -> np.ndarray:
  """Reference psi in NumPy: x [..., 16] -> [..., 192] (float64 recommended)."""
  x = np.asarray(x)
  out = np.zeros(x.shape[:-1] + (PSI_DIM,), x.dtype)
  for d in range(9):
    scale = QUAD_SCALE if d in (0, 8) else PAIR_SCALE
    rolled = np.roll(x, -d, axis=-1)                 # rolled[..., a] = x[..., (a + d) % 16]
    out[..., 16 * d:16 * d + 16] = scale * x * rolled
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
  """[273, 192] map from a psi-state the kernel accumulated to the 273-layout state."""
  m = np.zeros((EXPANDED_DIM, PSI_DIM))
  m[0, CONST_ROW] = 1
  for b in range(FEATURE_DIM):
    m[1 + b, LINEAR_ROW + b] = 1
  for a in range(FEATURE_DIM):
    for b in range(FEATURE_DIM):
      d = (b - a) % FEATURE_DIM
      if d == 0 or d == 8:
        m[_quad_index(a, b), 16 * d + a] = 1                   # same scale, same slot
      elif d <= 7:
        m[_quad_index(a, b), 16 * d + a] = 1 / np.sqrt(2)      # pair (a, a + d)
      else:
        m[_quad_index(a, b), 16 * (16 - d) + b] = 1 / np.sqrt(2)  # pair (b, b + 16 - d)
  return m


def _from_273() -> np.ndarray:
  """[192, 273] map from any 273-layout state to the psi-state with the same readout."""
  m = np.zeros((PSI_DIM, EXPANDED_DIM))
  m[CONST_ROW, 0] = 1
  for b in range(FEATURE_DIM):
    m[LINEAR_ROW + b, 1 + b] = 1
  for a in range(FEATURE_DIM):
    m[a, _quad_index(a, a)] = 1
    m[128 + a, _quad_index(a, (a + 8) % 16)] = 1
    for d in range(1, 8):
      b = (a + d) % FEATURE_DIM
      m[16 * d + a, _quad_index(a, b)] = 1 / np.sqrt(2)
      m[16 * d + a, _quad_index(b, a)] = 1 / np.sqrt(2)
  return m


TO_273 = _to_273()      # [273, 192]
FROM_273 = _from_273()  # [192, 273]


def build_matrices() -> np.ndarray:
  """The constant [5, 16, 64] 0/1/0.5 matrices that build psi on tensor cores, exactly in fp32.

  For a tile X [64 tokens, 16] and column j of a 64-wide group:
    T    = X @ M[0]: T[:, j]  = x_{j % 16}                  (shared by groups 0 and 1)
    R_g  = X @ M[1 + g], g = 0, 1: R_g[:, j] = x_{(j % 16 + d) % 16}, d = 4 g + j // 16
    A_2  = X @ M[3]: x_j for j < 16, else 0
    B_2  = X @ M[4]: x_{(j + 8) % 16} for j < 16, x_{j - 16} / 2 for 16 <= j < 32, else 0
  The kernel then forms group 0/1 = T * R_g * scale, group 2 = (A_2 + [j >= 16]) * (B_2 + [j == 32])
  * scale, with the per-column scales of the module docstring. All entries are exact in bf16.
  """
  m = np.zeros((5, FEATURE_DIM, 64), np.float32)
  for j in range(64):
    m[0, j % 16, j] = 1
    for g in range(2):
      d = 4 * g + j // 16
      m[1 + g, (j % 16 + d) % 16, j] = 1
    if j < 16:
      m[3, j, j] = 1
      m[4, (j + 8) % 16, j] = 1
    elif j < 32:
      m[4, j - 16, j] = 0.5
  return m
