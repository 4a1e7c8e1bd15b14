"""The symmetric 192-row feature layout (psi) of the wgmma kernel, and its conversions (runs anywhere).

Shape legend: B batch, L length, H heads, F = 16, E = 273 phi features, R = 192 psi rows, C = 64
chunk, Dv value dim.

The contract's phi(x) = [1, x/2, vec(x x^T)/(4 sqrt 2)] holds every quadratic product twice. The
kernel (based_attention_wgmma.cu) uses a query map psi_q and a key map psi_k with each unordered pair
once, in 16-row "shift tiles" (indices mod 16), so that psi_q(q).psi_k(k) = phi(q).phi(k):

  row 16 d + a, d = 0     : psi_q = x_a^2 / 4,         psi_k = x_a^2 / 8
  row 16 d + a, d = 1..7  : psi_q = psi_k = x_a x_{a+d} / 4
  row 16 d + a, d = 8     : psi_q = x_a x_{a+8} / 4,   psi_k = x_a x_{a+8} / 8   (each pair twice)
  row 144 + b             : x_b / 2
  row 160                 : 1
  rows 161..191           : 0

The kernel builds psi on the tensor cores as (x @ M_i) * (x @ M_j) with the seven 0 / power-of-two
matrices of `matrices()` (the CUDA `mat_entry` is the same table). Its state is
S_psi = sum_t psi_k(k_t) v_t^T [R, Dv] and KS_psi = sum_t psi_k(k_t) [R]; `to_273` maps a kernel
state to the contract's 273 layout (each phi row is one psi row times a weight), `from_273` maps any
273-layout state to the psi state with the same readout phi(q).S = psi_q(q).S_psi (symmetrising the
x_a x_b / x_b x_a rows, which changes nothing a query can read).

The Gram variant (kernel="wgmma_gram", normalize=False) has no ones column: its third result is the
Gram rows G [..., 17, 16] = sum_t [k_t; 1] k_t^T (rows 0..15: sum k_a k_b, row 16: sum k_b), and
`key_sums_from_gram` rebuilds KS_psi from G and the token count.
"""

import numpy as np

FEATURE_DIM = 16
EXPANDED_DIM = 273
PSI_DIM = 192
LINEAR_ROW = 144
CONST_ROW = 160
SQRT2 = float(np.sqrt(2.0))

# Matrix order shared with the CUDA kernel's `enum Mat`.
TILE, SHIFT0_Q, SHIFT1, LEFT2, RIGHT2_Q, SHIFT0_K, RIGHT2_K = range(7)


def _quad_row(a: int, b: int) -> int:
  """Row of x_a x_b in the 273 layout."""
  return 1 + FEATURE_DIM + FEATURE_DIM * a + b


def _to_273_table() -> tuple[np.ndarray, np.ndarray]:
  """For each of the 273 rows: the psi row it is read from and the weight."""
  index = np.zeros(EXPANDED_DIM, np.int32)
  weight = np.ones(EXPANDED_DIM, np.float32)
  index[0] = CONST_ROW
  index[1:1 + FEATURE_DIM] = LINEAR_ROW + np.arange(FEATURE_DIM)
  for a in range(FEATURE_DIM):
    for b in range(FEATURE_DIM):
      d = (b - a) % FEATURE_DIM
      row = _quad_row(a, b)
      if d in (0, 8):  # psi_k carries 1/8 where phi carries 1/(4 sqrt 2)
        index[row], weight[row] = 16 * d + a, SQRT2
      elif d < 8:      # psi_k carries 1/4
        index[row], weight[row] = 16 * d + a, 1 / SQRT2
      else:            # the pair (b, a) with shift 16 - d
        index[row], weight[row] = 16 * (16 - d) + b, 1 / SQRT2
  return index, weight


def _from_273_table() -> tuple[np.ndarray, np.ndarray]:
  """For each psi row: up to two 273 rows [R, 2] and their weights [R, 2] (weight 0: unused)."""
  index = np.zeros((PSI_DIM, 2), np.int32)
  weight = np.zeros((PSI_DIM, 2), np.float32)
  index[CONST_ROW, 0], weight[CONST_ROW, 0] = 0, 1
  for b in range(FEATURE_DIM):
    index[LINEAR_ROW + b, 0], weight[LINEAR_ROW + b, 0] = 1 + b, 1
  for a in range(FEATURE_DIM):
    index[a, 0], weight[a, 0] = _quad_row(a, a), 1 / SQRT2
    index[128 + a, 0], weight[128 + a, 0] = _quad_row(a, (a + 8) % 16), 1 / SQRT2
    for d in range(1, 8):
      b = (a + d) % FEATURE_DIM
      index[16 * d + a] = (_quad_row(a, b), _quad_row(b, a))
      weight[16 * d + a] = (1 / SQRT2, 1 / SQRT2)
  return index, weight


GRAM_ROWS = FEATURE_DIM + 1  # the Gram variant's rows: sum k k^T (16), then sum k


def _from_gram_table() -> tuple[np.ndarray, np.ndarray]:
  """For each psi row: its source in src = [G flattened (17 x 16 = 272), count] and the weight
  (psi_k's row table: x_a x_{a+d} with 1/8 for d = 0, 8 and 1/4 otherwise, x_b / 2, 1; weight 0:
  the zero rows 161..191)."""
  index = np.zeros(PSI_DIM, np.int32)
  weight = np.zeros(PSI_DIM, np.float32)
  for d in range(9):
    for a in range(FEATURE_DIM):
      index[16 * d + a] = FEATURE_DIM * a + (a + d) % FEATURE_DIM
      weight[16 * d + a] = 0.125 if d in (0, 8) else 0.25
  index[LINEAR_ROW:LINEAR_ROW + FEATURE_DIM] = FEATURE_DIM * FEATURE_DIM + np.arange(FEATURE_DIM)
  weight[LINEAR_ROW:LINEAR_ROW + FEATURE_DIM] = 0.5
  index[CONST_ROW], weight[CONST_ROW] = GRAM_ROWS * FEATURE_DIM, 1.0
  return index, weight


TO_273_INDEX, TO_273_WEIGHT = _to_273_table()        # [E], [E]
FROM_273_INDEX, FROM_273_WEIGHT = _from_273_table()  # [R, 2], [R, 2]
FROM_GRAM_INDEX, FROM_GRAM_WEIGHT = _from_gram_table()  # [R], [R]
# Gram source -> 273 rows in one gather: each phi row reads one psi row, which reads one source entry.
GRAM_TO_273_INDEX = FROM_GRAM_INDEX[TO_273_INDEX]                     # [E]
GRAM_TO_273_WEIGHT = TO_273_WEIGHT * FROM_GRAM_WEIGHT[TO_273_INDEX]   # [E]


def _weights(w: np.ndarray, ndim: int):
  """w [rows] shaped to broadcast over [B, H, rows, ...] with `ndim` dimensions."""
  return w.reshape((-1,) + (1,) * (ndim - 3))


def to_273(state):
  """Kernel state [B, H, R, ...] (psi_k rows) -> [B, H, E, ...] in the contract's phi layout."""
  import jax.numpy as jnp

  return jnp.take(state, TO_273_INDEX, axis=2) * _weights(TO_273_WEIGHT, state.ndim)


def from_273(state):
  """[B, H, E, ...] phi-layout state -> [B, H, R, ...] psi state with the same readout."""
  import jax.numpy as jnp

  first = jnp.take(state, FROM_273_INDEX[:, 0], axis=2) * _weights(FROM_273_WEIGHT[:, 0], state.ndim)
  second = jnp.take(state, FROM_273_INDEX[:, 1], axis=2) * _weights(FROM_273_WEIGHT[:, 1], state.ndim)
  return first + second


def key_sums_from_gram(gram, count: int):
  """Gram rows [..., 17, 16] f32 and the token count -> KS_psi = sum_t psi_k(k_t) [..., R] (f32).

  Zero-filled tokens past L add nothing to G (their keys are 0), so `count` is the real length."""
  import jax.numpy as jnp

  flat = gram.reshape(gram.shape[:-2] + (GRAM_ROWS * FEATURE_DIM,))             # [..., 272]
  count = jnp.full(flat.shape[:-1] + (1,), count, jnp.float32)                   # [..., 1]
  src = jnp.concatenate([flat.astype(jnp.float32), count], axis=-1)              # [..., 273]
  return jnp.take(src, FROM_GRAM_INDEX, axis=-1) * FROM_GRAM_WEIGHT              # [..., R]


def key_state_273_from_gram(gram, count: int):
  """Gram rows [..., 17, 16] and the token count -> sum_t phi(k_t) [..., E] (f32): to_273 of
  key_sums_from_gram, as one gather."""
  import jax.numpy as jnp

  flat = gram.reshape(gram.shape[:-2] + (GRAM_ROWS * FEATURE_DIM,))             # [..., 272]
  count = jnp.full(flat.shape[:-1] + (1,), count, jnp.float32)                   # [..., 1]
  src = jnp.concatenate([flat.astype(jnp.float32), count], axis=-1)              # [..., 273]
  return jnp.take(src, GRAM_TO_273_INDEX, axis=-1) * GRAM_TO_273_WEIGHT          # [..., E]


def matrices() -> np.ndarray:
  """The seven constant matrices [7, 16 a, 64 j] (entries 0, 1/8, 1/4, 1/2, 1: exact in bf16)."""
  m = np.zeros((7, FEATURE_DIM, 64), np.float32)
  for j in range(64):
    jj, d0, d1 = j % 16, j // 16, 4 + j // 16
    m[TILE, jj, j] = 1
    m[SHIFT0_Q, (jj + d0) % 16, j] = 0.25
    m[SHIFT0_K, (jj + d0) % 16, j] = 0.125 if d0 == 0 else 0.25
    m[SHIFT1, (jj + d1) % 16, j] = 0.25
    if j < 16:
      m[LEFT2, j, j] = 1
      m[RIGHT2_Q, (j + 8) % 16, j] = 0.25
      m[RIGHT2_K, (j + 8) % 16, j] = 0.125
    elif j < 32:
      m[RIGHT2_Q, j - 16, j] = 0.5
      m[RIGHT2_K, j - 16, j] = 0.5
  return m


def psi_from_matrices(x: np.ndarray, side: str) -> np.ndarray:
  """psi_q (side "q") or psi_k ("k") of x [..., 16] built the kernel's way -> [..., 192]."""
  m = matrices().astype(np.float64)
  x = np.asarray(x, np.float64)
  j = np.arange(64)
  shift0, right2 = (SHIFT0_Q, RIGHT2_Q) if side == "q" else (SHIFT0_K, RIGHT2_K)
  tile = x @ m[TILE]                                                           # [..., 64]
  group0 = tile * (x @ m[shift0])                                              # [..., 64]
  group1 = tile * (x @ m[SHIFT1])                                              # [..., 64]
  group2 = (x @ m[LEFT2] + (j >= 16)) * (x @ m[right2] + (j == 32))            # [..., 64]
  return np.concatenate([group0, group1, group2], axis=-1)                     # [..., R]


def kernel_model(q, k, v, *, normalize: bool, eps: float, kv0=None, ks0=None, num_segments: int = 1,
                 gram_sums: bool = False):
  """NumPy model of the wgmma kernel (float64 features, bf16 roundings where the kernel rounds).

  q, k: [B, L, H, 16]; v: [B, L, H, Dv]; kv0 [B, H, E, Dv] / ks0 [B, H, E] or None. Chunks of 64
  tokens, segments whose partial states are prefix-summed, psi layout throughout; returns
  (out [B, L, H, Dv] float64, kv [B, H, E, Dv], ks [B, H, E]) in the 273 layout. gram_sums (with
  normalize=False): the key sums come from per-segment Gram rows through key_sums_from_gram, as
  in the Gram variant.
  """
  import jax.numpy as jnp

  def bf16(x):
    return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64)

  q, k, v = (np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64) for x in (q, k, v))
  b, length, h, dv = v.shape
  nchunks = -(-length // 64)
  cps = -(-nchunks // num_segments)
  pad = nchunks * 64 - length
  widen = lambda x: np.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
  q, k, v = widen(q), widen(k), widen(v)
  ones = widen(np.ones((b, length, h, 1)))
  vv = np.concatenate([v, ones], axis=-1)                                     # [B, Lp, H, Dv + 1]
  pq, pk = bf16(psi_from_matrices(q, "q")), bf16(psi_from_matrices(k, "k"))   # [B, Lp, H, R]
  s0 = np.zeros((b, h, PSI_DIM, dv + 1))
  if kv0 is not None:
    s0[..., :dv] = np.asarray(from_273(jnp.asarray(kv0, jnp.float32)))
    s0[..., dv] = np.asarray(from_273(jnp.asarray(ks0, jnp.float32)))
  # Pass 1: partial state per segment; prefix sums give each segment's start.
  starts, acc = [], s0
  for seg in range(num_segments):
    starts.append(acc)
    rows = slice(seg * cps * 64, min(nchunks, (seg + 1) * cps) * 64)
    acc = acc + np.einsum("blhr,blhn->bhrn", pk[:, rows], bf16(vv[:, rows]))
  out = np.zeros(vv.shape)
  for seg in range(num_segments):
    state = starts[seg]
    for c in range(seg * cps, min(nchunks, (seg + 1) * cps)):
      rows = slice(64 * c, 64 * c + 64)
      scores = np.einsum("bihf,bjhf->bhij", q[:, rows], k[:, rows]) / 4
      taylor = bf16(np.tril(1 + scores + scores * scores / 2))               # [B, H, C, C]
      out[:, rows] = (np.einsum("bihr,bhrn->bihn", pq[:, rows], bf16(state)) +
                      np.einsum("bhij,bjhn->bihn", taylor, bf16(vv[:, rows])))
      state = state + np.einsum("bjhr,bjhn->bhrn", pk[:, rows], bf16(vv[:, rows]))
  num, den = out[:, :length, :, :dv], out[:, :length, :, dv:]
  out = num / (den + eps) if normalize else num
  kv = np.asarray(to_273(jnp.asarray(acc[..., :dv])), np.float64)
  ks = np.asarray(to_273(jnp.asarray(acc[..., dv])), np.float64)
  if gram_sums:
    assert not normalize, "the Gram variant has no denominator"
    left = np.concatenate([k, np.ones(k.shape[:-1] + (1,))], axis=-1)       # [B, Lp, H, 17]
    gram = 0.0
    for seg in range(num_segments):  # pass 1 partials + the last segment's, summed like the prefix
      rows = slice(seg * cps * 64, min(nchunks, (seg + 1) * cps) * 64)
      gram = gram + np.einsum("blhg,blhf->bhgf", left[:, rows], k[:, rows])   # [B, H, 17, 16]
    ks_psi = np.asarray(key_sums_from_gram(jnp.asarray(gram, jnp.float32), length))
    if ks0 is not None:
      ks_psi = ks_psi + np.asarray(from_273(jnp.asarray(ks0, jnp.float32)))
    ks = np.asarray(to_273(jnp.asarray(ks_psi, jnp.float32)), np.float64)
  return out, kv, ks
