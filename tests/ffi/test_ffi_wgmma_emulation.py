"""A NumPy emulation of based_attention_wgmma.cu's index arithmetic, chunk by chunk, on CPU.

The CUDA kernel cannot run here, so this file transcribes every address and fragment computation of
its chunk loop (tile_off stores, cp.async destinations, ldmatrix.trans, descriptor start addresses,
accumulator fragment coordinates, the A-fragment packing of the register variant) and runs them on an
emulated shared memory. The hardware side is modelled from the PTX ISA independently of tile_off: a
K-major operand slice is read at start + (r / 8) * SBO + (r % 8) * 32 + k * 2 with the 32-byte
swizzle applied to the address bits (bit 4 ^= bit 7), and reading a slot nothing wrote fails. If the
transcription matches the kernel (keep them in step), a wrong offset in the kernel shows up here as a
wrong result against the float64 oracle. The Gram variant (kGram: no ones column, N = GV, the K^T
operand built by ldmatrix.trans, Gram rows accumulated from group 2's left factor) and the host's
segment plan and scratch-slot layout are transcribed too.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from tests.ffi.ffi_oracle import draw_inputs
from tests.float64_reference import linear_attention_f64 as oracle
from tests.float64_reference import rel_err

from ffi import psi_layout

ATOM, MAT, VSTRIDE = 256, 2048, 72


def tile_off(r, c, mn_atoms):
  rr = r & 7
  return ((c >> 4) * mn_atoms + (r >> 3)) * ATOM + rr * 32 + ((((c >> 3) & 1) ^ (rr >> 2)) << 4) + (c & 7) * 2


def bf16(x):
  return np.asarray(np.asarray(x, np.float32).astype(jnp.bfloat16).astype(np.float32), np.float64)


def frag(i, warp, lane):
  """Accumulator fragment element i of (warp, lane) -> (row, column)."""
  return 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * (lane & 3) + (i & 1)


def fragment_elements(count, step=1):
  """(row, column) of fragment elements 0, step, .. < count of every (warp, lane) of the
  warpgroup: the loop that the kernel's 128 threads run side by side."""
  for warp in range(4):
    for lane in range(32):
      for i in range(0, count, step):
        yield frag(i, warp, lane)


class Smem:
  """Shared memory as 2-byte slots holding bf16 values (NaN: never written)."""

  def __init__(self, nbytes):
    self.slots = np.full(nbytes // 2, np.nan)

  def st(self, off, values):
    values = bf16(np.atleast_1d(values))
    assert off % 2 == 0 and off // 2 + len(values) <= len(self.slots)
    self.slots[off // 2:off // 2 + len(values)] = values

  def ld(self, off):
    return self.slots[off // 2]

  def operand(self, start, rows):
    """The [rows, 16] K-major operand that a descriptor (start, SBO 256, 32-byte swizzle) names."""
    assert start % ATOM == 0
    r, k = np.meshgrid(np.arange(rows), np.arange(16), indexing="ij")
    addr = start + (r // 8) * ATOM + (r % 8) * 32 + k * 2
    addr = addr ^ (((addr >> 7) & 1) << 4)
    out = self.slots[addr // 2]
    assert not np.isnan(out).any(), "descriptor reads shared memory nothing wrote"
    return out


class Layout:
  def __init__(self, gv, gram=False):
    self.gv, self.n, self.gram = gv, (gv if gram else gv + 8), gram
    self.na = self.n // 8
    self.mats = 0
    self.q = self.mats + 7 * MAT
    self.k = self.q + 2 * MAT
    self.vraw_bytes = 64 * VSTRIDE * 2
    self.vraw = self.k + 2 * MAT
    self.vt = self.vraw + 2 * self.vraw_bytes
    self.psi = self.vt + self.na * 4 * ATOM
    self.p = self.psi + 96 * ATOM
    self.sb = self.p + 32 * ATOM
    self.kt = self.sb + self.na * 12 * ATOM   # gram: K^T [16, 64 tokens]
    self.bytes = self.kt + (8 * ATOM if gram else 0)
    # scratch slot [rows, N]: the state, then (gram) the Gram rows [64, 16] in ceil(1024 / N) rows
    self.slot_rows = 192 + ((64 * 16 + self.n - 1) // self.n if gram else 0)


def fill_matrices(mem, ly):
  m_all = psi_layout.matrices()   # [7, 16 a, 64 j] (the CUDA mat_entry table; see test_ffi_psi_layout)
  for u in range(7 * 64 * 8):
    m, j, a = u // 512, (u // 8) % 64, 2 * (u % 8)
    mem.st(ly.mats + m * MAT + tile_off(j, a, 8), [m_all[m, a, j], m_all[m, a + 1, j]])


def issue_load(mem, ly, q, k, v, buf):
  """q, k [64, 16], v [64, GV] of one chunk (zero-filled past L by the caller)."""
  for tid in range(128):
    row, half = tid >> 1, tid & 1
    dst = tile_off(row, 8 * half, 8) + buf * MAT
    mem.st(ly.k + dst, k[row, 8 * half:8 * half + 8])
    mem.st(ly.q + dst, q[row, 8 * half:8 * half + 8])
  units = ly.gv // 8
  for u in range(64 * units):
    row, part = u // units, u % units
    mem.st(ly.vraw + buf * ly.vraw_bytes + row * VSTRIDE * 2 + part * 16, v[row, 8 * part:8 * part + 8])


def ldsm_x4_trans(mem, row_addr):
  """ldmatrix.x4.trans: row_addr[(m, i)] is the 16-byte row i of 8x8 matrix m (given by lane 8 m + i);
  returns r[lane][m] = (column lane / 4 of rows 2 (lane % 4) and 2 (lane % 4) + 1 of matrix m)."""
  out = {}
  for lane in range(32):
    c, r0 = lane >> 2, 2 * (lane & 3)
    out[lane] = [[mem.ld(row_addr[(m, r0)] + 2 * c), mem.ld(row_addr[(m, r0 + 1)] + 2 * c)] for m in range(4)]
  return out


def build_kt(mem, ly, buf):
  """The Gram variant's build_kt: K^T [16 features, 64 tokens] from the swizzled k tile."""
  kt = ly.k + buf * MAT
  for warp in range(4):
    rows = {}
    for lane in range(32):
      idx = 4 * warp + (lane >> 3)
      rows[(lane >> 3, lane & 7)] = kt + tile_off(8 * (idx & 7) + (lane & 7), 8 * (idx >> 3), 8)
    regs = ldsm_x4_trans(mem, rows)
    for lane in range(32):
      for m in range(4):
        idm = 4 * warp + m
        f, t = 8 * (idm >> 3) + (lane >> 2), 8 * (idm & 7) + 2 * (lane & 3)
        mem.st(ly.kt + tile_off(f, t, 2), regs[lane][m])


def build_vt(mem, ly, buf, valid):
  raw = ly.vraw + buf * ly.vraw_bytes
  mats8 = 8 * (ly.gv // 8)
  for warp in range(4):
    for q4 in range(warp, mats8 // 4, 4):
      rows = {}  # (matrix m, row i) -> address given by lane 8 m + i
      for lane in range(32):
        idx = 4 * q4 + (lane >> 3)
        rows[(lane >> 3, lane & 7)] = raw + (8 * (idx & 7) + (lane & 7)) * VSTRIDE * 2 + (idx >> 3) * 16
      for lane in range(32):
        for m in range(4):  # .trans: lane gets column lane / 4 of rows 2 (lane % 4), 2 (lane % 4) + 1
          c, r0 = lane >> 2, 2 * (lane & 3)
          pair = [mem.ld(rows[(m, r0)] + 2 * c), mem.ld(rows[(m, r0 + 1)] + 2 * c)]
          idm = 4 * q4 + m
          n, t = 8 * (idm >> 3) + (lane >> 2), 8 * (idm & 7) + 2 * (lane & 3)
          mem.st(ly.vt + tile_off(n, t, ly.na), pair)
  if ly.gram:  # no ones column
    return
  for u in range(8 * 32):
    n, t = ly.gv + u // 32, 2 * (u % 32)
    ones = n == ly.gv
    mem.st(ly.vt + tile_off(n, t, ly.na), [float(ones and t < valid), float(ones and t + 1 < valid)])


def psi_values(g, t, r, transposed):
  """t, r: [64, 64] products; the kernel's per-fragment formula, applied over all (warp, lane, i)."""
  x = np.empty((64, 64))
  for row, col in fragment_elements(32):
    a, b = t[row, col], r[row, col]
    if g == 2:
      j = row if transposed else col
      a += 1.0 if j >= 16 else 0.0
      b += 1.0 if j == 32 else 0.0
    x[row, col] = a * b
  return x


def store_psi_group(mem, ly, g, x, transposed):
  for row, col in fragment_elements(32, step=2):
    off = tile_off(64 * g + row, col, 24) if transposed else tile_off(row, 64 * g + col, 8)
    mem.st(ly.psi + off, [x[row, col], x[row, col + 1]])


def products(mem, ly, x_tile, transposed, side):
  mat = lambda m: mem.operand(ly.mats + m * MAT, 64)
  x = mem.operand(x_tile, 64)
  prod = (lambda m: mat(m) @ x.T) if transposed else (lambda m: x @ mat(m).T)
  shift0, right2 = ((psi_layout.SHIFT0_K, psi_layout.RIGHT2_K) if side == "k"
                    else (psi_layout.SHIFT0_Q, psi_layout.RIGHT2_Q))
  tile = prod(psi_layout.TILE)
  return [(tile, prod(shift0)), (tile, prod(psi_layout.SHIFT1)), (prod(psi_layout.LEFT2), prod(right2))]


def gram_left_values(t):
  """gram_left_values: group 2's left factor (M_left2^T K^T) + [j >= 16], over all fragments."""
  x = np.empty((64, 64))
  for row, col in fragment_elements(32):
    x[row, col] = t[row, col] + (1.0 if row >= 16 else 0.0)
  return x


def store_gram_rows(gram):
  """The last segment's store of the m64n16 Gram accumulator: rows 0..16 -> [17, 16]."""
  out = np.full((17, 16), np.nan)
  for j, c in fragment_elements(8, step=2):
    if j <= 16:
      out[j, c], out[j, c + 1] = gram[j, c], gram[j, c + 1]
  assert not np.isnan(out).any(), "a Gram row element is never stored"
  return out


def taylor_values(sc):
  x = np.empty((64, 64))
  for row, col in fragment_elements(32):
    s = 0.25 * sc[row, col]
    x[row, col] = 1 + s + 0.5 * s * s if col <= row else 0.0
  return x


def a_from_fragments(x):
  """A [64, 64] as the register variant feeds it: pack_a_slice of x read in fragment order, placed
  where the m64k16 A fragment says (a[0] row, k 2c; a[1] row + 8; a[2] k + 8; a[3] both)."""
  a = np.full((64, 64), np.nan)
  for warp in range(4):
    for lane in range(32):
      vals = {}
      for i in range(32):
        vals[i] = x[frag(i, warp, lane)]
      row, c = 16 * warp + (lane >> 2), 2 * (lane & 3)
      for ks in range(4):
        regs = [(vals[8 * ks], vals[8 * ks + 1]), (vals[8 * ks + 2], vals[8 * ks + 3]),
                (vals[8 * ks + 4], vals[8 * ks + 5]), (vals[8 * ks + 6], vals[8 * ks + 7])]
        places = [(row, c), (row + 8, c), (row, c + 8), (row + 8, c + 8)]
        for (lo, hi), (rr, cc) in zip(regs, places):
          a[rr, 16 * ks + cc], a[rr, 16 * ks + cc + 1] = lo, hi
  assert not np.isnan(a).any()
  return bf16(a)


def store_state_bf16(mem, ly, s):
  for g in range(3):
    for row, n in fragment_elements(ly.n // 2):
      mem.st(ly.sb + tile_off(n, 64 * g + row, ly.na), s[g][row, n])


def emulate(q, k, v, s0, *, gv, normalize, eps, reg_a, gram=False):
  """One CTA (one (b, h), one value group, one segment) over all chunks. q, k [L, 16], v [L, GV],
  s0 [192, N] the starting state (N = GV + 8, or GV with gram). Returns out [L, GV] and the final
  state [192, N]; with gram also the stored Gram rows [17, 16]."""
  assert not (gram and (normalize or not reg_a)), "the Gram variant: normalize=False, register operands"
  ly = Layout(gv, gram)
  mem = Smem(ly.bytes)
  length = len(q)
  nchunks = -(-length // 64)
  pad = lambda x: np.pad(x, ((0, nchunks * 64 - length), (0, 0)))
  q, k, v = pad(q), pad(k), pad(v)
  fill_matrices(mem, ly)
  s = [s0[64 * g:64 * g + 64].copy() for g in range(3)]
  gram_acc = np.zeros((64, 16))
  store_state_bf16(mem, ly, s)
  out = np.zeros((nchunks * 64, gv))
  for c in range(nchunks):
    buf, rows = c & 1, slice(64 * c, 64 * c + 64)
    issue_load(mem, ly, q[rows], k[rows], v[rows], buf)
    qt, kt = ly.q + buf * MAT, ly.k + buf * MAT
    build_vt(mem, ly, buf, length - 64 * c)
    if gram:
      build_kt(mem, ly, buf)
    for g, (t, r) in enumerate(products(mem, ly, qt, False, "q")):
      store_psi_group(mem, ly, g, psi_values(g, t, r, False), False)
    sc = mem.operand(qt, 64) @ mem.operand(kt, 64).T
    p_values = taylor_values(sc)
    if reg_a:
      p_operand = a_from_fragments(p_values)
    else:
      for warp in range(4):
        for lane in range(32):
          for i in range(0, 32, 2):
            row, col = frag(i, warp, lane)
            mem.st(ly.p + tile_off(row, col, 8), [p_values[row, col], p_values[row, col + 1]])
      p_operand = np.concatenate([mem.operand(ly.p + ks * 8 * ATOM, 64) for ks in range(4)], axis=1)
    o = sum(mem.operand(ly.psi + ks * 8 * ATOM, 64) @ mem.operand(ly.sb + ks * ly.na * ATOM, ly.n).T
            for ks in range(12))
    vt_full = np.concatenate([mem.operand(ly.vt + ks * ly.na * ATOM, ly.n) for ks in range(4)], axis=1)
    o = o + p_operand @ vt_full.T                                            # [64, N]
    if gram:
      assert o.shape[1] == gv
      out[rows] = o
    else:
      den = o[:, gv]
      out[rows] = o[:, :gv] / (den[:, None] + eps) if normalize else o[:, :gv]
    for g, (t, r) in enumerate(products(mem, ly, kt, True, "k")):
      x = psi_values(g, t, r, True)
      if reg_a:
        a = a_from_fragments(x)
      else:
        store_psi_group(mem, ly, g, x, True)
        a = np.concatenate([mem.operand(ly.psi + (ks * 24 + 8 * g) * ATOM, 64) for ks in range(4)], axis=1)
      s[g] = s[g] + a @ vt_full.T
      if gram and g == 2:
        ktt = np.concatenate([mem.operand(ly.kt + ks * 2 * ATOM, 16) for ks in range(4)], axis=1)  # [16, 64]
        gram_acc = gram_acc + a_from_fragments(gram_left_values(t)) @ ktt.T
    store_state_bf16(mem, ly, s)
  if gram:
    return out[:length], np.concatenate(s), store_gram_rows(gram_acc)
  return out[:length], np.concatenate(s)


@pytest.mark.parametrize("length,gv,normalize,with_state,reg_a", [
    (100, 64, True, True, False),
    (100, 64, False, False, True),
    (64, 56, True, True, True),
    (70, 56, False, True, False),
])
def test_emulated_kernel_matches_float64(length, gv, normalize, with_state, reg_a):
  q, k, v, init = draw_inputs(length + gv, 1, length, 1, gv, with_state=with_state)
  q, k, v = (np.asarray(x.astype(jnp.float32), np.float64)[0, :, 0] for x in (q, k, v))  # [L, .]
  s0 = np.zeros((192, gv + 8))
  if init is not None:
    s0[:, :gv] = np.asarray(psi_layout.from_273(jnp.asarray(init[0])))[0, 0]
    s0[:, gv] = np.asarray(psi_layout.from_273(jnp.asarray(init[1])))[0, 0]
  out, state = emulate(q, k, v, s0, gv=gv, normalize=normalize, eps=1e-6, reg_a=reg_a)
  ref_out, ref_kv, ref_ks = oracle(q[None, :, None], k[None, :, None], v[None, :, None], normalize=normalize,
                                   eps=1e-6, kv0=None if init is None else init[0],
                                   ks0=None if init is None else init[1])
  kv = np.asarray(psi_layout.to_273(jnp.asarray(state[None, None, :, :gv], jnp.float32)))
  ks = np.asarray(psi_layout.to_273(jnp.asarray(state[None, None, :, gv], jnp.float32)))
  assert rel_err(out, ref_out[0, :, 0]) <= 1e-2
  assert rel_err(kv, ref_kv) <= 1e-2
  assert rel_err(ks, ref_ks) <= 1e-2
  assert np.all(state[:, gv + 1:] == 0)  # the padding columns of [V, 1, 0] stay zero


@pytest.mark.parametrize("num_segments", [1, 2, 8, 9, 16, 17])
def test_prefix_kernel_loop(num_segments):
  """prefix_kernel's batched running sum: slot 0 = initial, slot s = slot s - 1 + partial s."""
  rng = np.random.default_rng(num_segments)
  slots = rng.normal(size=num_segments)          # slot 0: the initial state, then the partial sums
  want = np.cumsum(slots)
  acc, out = slots[0], slots.copy()
  for s0 in range(1, num_segments, 8):            # transcription of the CUDA loop
    x = [out[s0 + j] if s0 + j < num_segments else 0.0 for j in range(8)]
    for j in range(8):
      acc += x[j]
      if s0 + j < num_segments:
        out[s0 + j] = acc
  np.testing.assert_allclose(out, want)


@pytest.mark.parametrize("length,gv,with_state", [(100, 64, True), (64, 56, False), (130, 56, True)])
def test_emulated_gram_variant_matches_float64(length, gv, with_state):
  """kGram: N = GV products, no ones column; k_state from the stored Gram rows + the initial one."""
  q, k, v, init = draw_inputs(length + 3 * gv, 1, length, 1, gv, with_state=with_state)
  q, k, v = (np.asarray(x.astype(jnp.float32), np.float64)[0, :, 0] for x in (q, k, v))  # [L, .]
  s0 = np.zeros((192, gv))
  ks0_psi = np.zeros(192)
  if init is not None:
    s0[:, :gv] = np.asarray(psi_layout.from_273(jnp.asarray(init[0])))[0, 0]
    ks0_psi = np.asarray(psi_layout.from_273(jnp.asarray(init[1])))[0, 0]
  out, state, gram = emulate(q, k, v, s0, gv=gv, normalize=False, eps=1e-6, reg_a=True, gram=True)
  ref_out, ref_kv, ref_ks = oracle(q[None, :, None], k[None, :, None], v[None, :, None], normalize=False,
                                   eps=1e-6, kv0=None if init is None else init[0],
                                   ks0=None if init is None else init[1])
  ks_psi = np.asarray(psi_layout.key_sums_from_gram(jnp.asarray(gram, jnp.float32), length)) + ks0_psi
  kv = np.asarray(psi_layout.to_273(jnp.asarray(state[None, None], jnp.float32)))
  ks = np.asarray(psi_layout.to_273(jnp.asarray(ks_psi[None, None], jnp.float32)))
  assert state.shape == (192, gv)
  assert rel_err(out, ref_out[0, :, 0]) <= 1e-2
  assert rel_err(kv, ref_kv) <= 1e-2
  assert rel_err(ks, ref_ks) <= 1e-5  # the Gram products are exact: only float32 sums round


def test_gram_variant_shared_memory_and_scratch_slot():
  """The Gram variant needs no more shared memory than the default (two CTAs per SM stay), and its
  Gram rows fit in the scratch slot after the state (the prefix kernel's `f >= 192` entries)."""
  for gv in (56, 64):
    plain, gram = Layout(gv), Layout(gv, gram=True)
    assert gram.bytes <= plain.bytes
    assert plain.slot_rows == 192  # the default kernels' slot is unchanged
    n = gram.n
    first, last = 192 * n, 192 * n + 63 * 16 + 15  # start + kPsi * N + j * 16 + c
    assert first // n == 192 and last < gram.slot_rows * n
  assert Layout(64).bytes + 1024 <= 116 * 1024  # 2 x (bytes + alignment slack) within an SM's 228 KiB


def plan_segments(nchunks, blocks, segments, sms=132):
  """Transcription of the host's plan_segments -> (NS, cps)."""
  slots = 2 * sms
  ns = 1
  if segments > 0:
    ns = min(segments, nchunks)
  elif blocks < slots:
    ns = max(min(slots // blocks, max(1, nchunks // 4)), 1)
  cps = -(-nchunks // ns)
  return -(-nchunks // cps), cps


@pytest.mark.parametrize("nchunks", [1, 2, 33, 128, 129, 1024])
@pytest.mark.parametrize("segments", [0, 1, 4, 8, 16, 32, 1024])
def test_segment_plan(nchunks, segments):
  """Every chunk in exactly one non-empty segment; a request is an upper bound; 0 = automatic."""
  for blocks in (16, 64, 256, 4096):
    ns, cps = plan_segments(nchunks, blocks, segments)
    covered = [c for seg in range(ns) for c in range(seg * cps, min(seg * cps + cps, nchunks))]
    assert covered == list(range(nchunks))
    assert all(seg * cps < nchunks for seg in range(ns))
    if segments:
      assert ns <= min(segments, nchunks)
      if nchunks % segments == 0:
        assert ns == segments
  # L = 8192 (128 chunks), H = 16: the automatic plan at B = 1 is 16 segments (s11f's breakdown)
  assert plan_segments(128, 16, 0) == (16, 8)
  assert plan_segments(128, 16, 8) == (8, 16)


def test_transcribed_cuda_lines_are_in_the_source():
  """The lines this file transcribes for the Gram variant and the segment plan, as they stand in
  based_attention_wgmma.cu: editing one there without here fails this test."""
  from pathlib import Path

  source = (Path(__file__).resolve().parents[2] / "ffi" / "based_attention_wgmma.cu").read_text()
  for line in (
      # plan_segments
      "ns = std::min(segments, p.nchunks);",
      "ns = static_cast<int>(std::min<int64_t>(slots / blocks, std::max(1, p.nchunks / 4)));",
      "p.cps = (p.nchunks + ns - 1) / ns;",
      "p.NS = (p.nchunks + p.cps - 1) / p.cps;",
      # build_kt
      "const int id = 4 * warp + (lane >> 3);",
      "ldsm_x4_t(r, kt + tile_off(8 * (id & 7) + (lane & 7), 8 * (id >> 3), 8));",
      "const int f = 8 * (idm >> 3) + (lane >> 2), t = 8 * (idm & 7) + 2 * (lane & 3);",
      "st_u32(ktt + tile_off(f, t, 2), r[m]);",
      # the Gram product, its left factor and the row store
      "x[i] = t[i] + (row >= kFeat ? 1.f : 0.f);",
      "wgmma_bf16_rs<16, 1>(gram, left[ks], make_desc(ktt + ks * 2 * kAtom));",
      "} else if (use_gram && j <= kFeat) {",
      "p.ks + (bh * (kFeat + 1) + j) * kFeat + c",
      # the Gram variant's layout
      "static constexpr int N = kGram ? GV : GV + 8;",
      "static constexpr int kBytes = kKt + (kGram ? 8 * kAtom : 0);",
      "static constexpr int kGramRows = kGram ? (64 * kFeat + N - 1) / N : 0;",
  ):
    assert line in source, line
