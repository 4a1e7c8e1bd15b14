"""Public entry of the Pallas kernel: checks, segment planning, state combine, custom_vjp.

Forward of `linear_attention(q, k, v)` for q, k [B, L, H, 16] and v [B, L, H, Dv] bf16:
  1. L is padded with zero rows up to a multiple of 64 when needed (a zero key adds exactly the
     constant feature to the key sum and nothing to kv; that count is subtracted at the end, and
     the padded output rows are sliced off). This costs one XLA copy of q, k, v (and a slice of
     the output) when L % 64 != 0; the kernel itself only sees whole chunks.
  2. The padded sequence is cut into `num_segments` equal segments so that B * H * segments
     thread blocks fill the GPU (`plan_segments`, KernelConfig.planner). With several segments
     a first kernel pass writes each segment's state sums, XLA takes their exclusive prefix
     sums, and a second pass computes the outputs of all segments in parallel, each starting
     from its prefix state. With one segment a single pass writes outputs and state.
  3. Dv is processed in column blocks of at most `max_value_block` (64 + 48 for Dv = 112).
  4. States convert between the contract's 273 layout and the kernel's psi layout (features.py).
The backward pass is XLA: the float32 VJP of the chunked path
(`based_jax.ops.chunked.chunked_float32_vjp`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops.chunked import chunked_float32_vjp
from based_jax.ops.hardware import hopper_unavailable_reason
from based_jax.ops.state import EXPANDED_DIM, FEATURE_DIM, LinearAttentionState
from based_jax.ops.validation import check_linear_attention_args
from pallas_kernels.based_attention import features, kernel, kernel_groups, reference
from pallas_kernels.based_attention.config import CHUNK, KernelConfig

MAX_VALUE_DIM = 256


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


STATE_PASS_COST = 0.5   # a state-only chunk costs about half a full chunk (FLOP count)


def segment_cost(batch: int, heads: int, num_chunks: int, segments: int, slots: int) -> float:
  """Estimated time in full-chunk steps of one block: waves of blocks x chunks per block."""
  seg_chunks = num_chunks // segments
  waves = -(-batch * heads * segments // slots)
  if segments == 1:
    return float(waves * seg_chunks)
  return waves * seg_chunks * (1.0 + STATE_PASS_COST)


# The "sm" planner's model, fitted to CUPTI times of the session-5 kernel on the H200 (L 1k-128k,
# B 1-16, H 16; docs/benchmarks.md, runs s5c-s5e): two blocks sharing an SM finish 1.3x sooner
# than one after the other (not 2x: the kernel keeps an SM's issue slots and tensor cores busy
# with one block); a block pays a fixed cost of ~7.5 chunk-steps (prologue, state store), and
# the two-pass split twice that plus the XLA prefix of the segment states.
PAIR_SPEEDUP = 1.3
ONE_PASS_FIXED = 7.5
TWO_PASS_FIXED = 15.0


def sm_cost(batch: int, heads: int, num_chunks: int, segments: int, sms: int) -> float:
  """Estimated time in chunk-steps: blocks per SM x (fixed + chunk work) of one block, the SM
  running up to two blocks at once PAIR_SPEEDUP times faster than in turn."""
  seg_chunks = num_chunks // segments
  per_sm = -(-batch * heads * segments // sms)
  if segments == 1:
    block = ONE_PASS_FIXED + seg_chunks
  else:
    block = TWO_PASS_FIXED + seg_chunks * (1.0 + STATE_PASS_COST)
  return per_sm * block / (PAIR_SPEEDUP if per_sm >= 2 else 1.0)


def plan_segments(batch: int, heads: int, num_chunks: int, config: KernelConfig) -> int:
  """Number of equal segments (a divisor of num_chunks) to split each sequence into."""
  limit = max(1, num_chunks // config.min_segment_chunks)
  options = [d for d in _divisors(num_chunks) if d <= limit]
  if config.planner == "sm":
    sms = max(1, config.target_blocks // 2)
    cost = lambda d: sm_cost(batch, heads, num_chunks, d, sms)
    return min(options, key=lambda d: (cost(d), d))
  if config.planner == "waves":
    cost = lambda d: segment_cost(batch, heads, num_chunks, d, config.target_blocks)
    return min(options, key=lambda d: (cost(d), d))
  want = -(-config.target_blocks // (batch * heads))
  bigger = [d for d in options if d >= want]
  return min(bigger) if bigger else max(options)


def value_blocks(value_dim: int, config: KernelConfig) -> list[tuple[int, int]]:
  """(first column, width) of each kernel launch over Dv; widths are multiples of 16."""
  blocks, start = [], 0
  while start < value_dim:
    width = min(config.max_value_block, value_dim - start)
    blocks.append((start, width))
    start += width
  return blocks


def kernel_shape_reason(q, k, v) -> str | None:
  """Why the kernel cannot take these arguments (dtype/shape limits), or None."""
  for name, x in (("q", q), ("k", k), ("v", v)):
    if jnp.dtype(x.dtype) != jnp.dtype(jnp.bfloat16):
      return f"the Pallas kernel takes bfloat16 {name}; got {x.dtype}"
  if q.shape[-1] != FEATURE_DIM:
    return f"the Pallas kernel needs feature dim {FEATURE_DIM}; got q shape {q.shape}"
  dv = v.shape[-1]
  if dv % 16 or not 16 <= dv <= MAX_VALUE_DIM:
    return f"the Pallas kernel needs Dv a multiple of 16 in [16, {MAX_VALUE_DIM}]; got Dv={dv}"
  return None


def _check_kernel_args(q, k, v, normalize, eps, initial_state):
  check_linear_attention_args(q, k, v, initial_state)
  reason = kernel_shape_reason(q, k, v)
  if reason is not None:
    raise ValueError(f"pallas_kernels.linear_attention: {reason}")
  if not isinstance(normalize, bool):
    raise ValueError(
        f"pallas_kernels.linear_attention: normalize must be a bool; got {normalize!r}")
  if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps >= 0):
    raise ValueError(
        f"pallas_kernels.linear_attention: eps must be a finite float >= 0; got {eps!r}")


def _to_psi(kv, ks):
  """273-layout state (kv [B, H, 273, Dv], ks [B, H, 273]) -> psi layout [B, H, 192, ...]."""
  m = jnp.asarray(features.FROM_273, jnp.float32)                        # [192, 273]
  kv_psi = jnp.einsum("fe,bhed->bhfd", m, kv, precision="highest")      # [B, H, 192, Dv]
  ks_psi = jnp.einsum("fe,bhe->bhf", m, ks, precision="highest")        # [B, H, 192]
  return kv_psi, ks_psi


def _as_gather(m, *, every_row: bool = False):
  """(source, scale) with m @ x = x[source] * scale, for m with at most one nonzero per row
  (exactly one with every_row)."""
  nonzeros = np.count_nonzero(m, axis=1)
  assert np.all(nonzeros == 1) if every_row else np.all(nonzeros <= 1)
  source = np.argmax(np.abs(m), axis=1)
  return source, m[np.arange(m.shape[0]), source].astype(np.float32)


# Every row of TO_273 has one nonzero: each 273-layout row is one psi row times a constant.
_TO_273_SOURCE, _TO_273_SCALE = _as_gather(features.TO_273, every_row=True)  # [273] psi row


def _from_psi(kv_psi, ks_psi=None):
  """psi-layout state accumulated by the kernel -> 273 layout (a scaled gather of rows: one
  pass over memory, where the [273, 192] matmul took 7% of the kernel's time at B = 256).
  Returns (kv, ks), ks None when ks_psi is None."""
  scale = jnp.asarray(_TO_273_SCALE, jnp.float32)                       # [273]
  kv = kv_psi[:, :, _TO_273_SOURCE, :] * scale[:, None]                 # [B, H, 273, Dv]
  ks = None if ks_psi is None else ks_psi[:, :, _TO_273_SOURCE] * scale  # [B, H, 273]
  return kv, ks


def _grouped(x):
  """[B, H, S, 192, n] -> [B * H * S, 3, 64, n] (the kernel's flat state blocks)."""
  return x.reshape((-1, features.PSI_GROUPS, CHUNK, x.shape[-1]))


def _ks_columns(ks_psi):
  """[B, H, S, 192] key sums -> [B * H * S, 3, 64, 16], the sum repeated over 16 columns."""
  cols = jnp.broadcast_to(ks_psi[..., None], ks_psi.shape + (16,))      # [B, H, S, 192, 16]
  return _grouped(cols)


def _split_bf16(x):
  """x f32 -> (hi, lo) bf16 with hi + lo = x to ~16 mantissa bits."""
  hi = x.astype(jnp.bfloat16)
  lo = (x - hi.astype(jnp.float32)).astype(jnp.bfloat16)
  return hi, lo


def _kernel_init(s_start, ks_start, *, with_ks: bool = True):
  """Start states [B, H, S, 192, n], [B, H, S, 192] f32 -> (init operands, their f32 value).

  with_ks=False (the kernel carries no psi key sums): (s_hi, s_lo) only, and no key-sum
  operands are built."""
  as_f32 = lambda hi, lo: hi.astype(jnp.float32) + lo.astype(jnp.float32)
  s_hi, s_lo = _split_bf16(_grouped(s_start))                            # [B*H*S, 3, 64, n]
  if not with_ks:
    return (s_hi, s_lo), (as_f32(s_hi, s_lo), None)
  ks_hi, ks_lo = _split_bf16(_ks_columns(ks_start))                      # [B*H*S, 3, 64, 16]
  return (s_hi, s_lo, ks_hi, ks_lo), (as_f32(s_hi, s_lo), as_f32(ks_hi, ks_lo))


BACKENDS = {"kernel": kernel.segment_call, "reference": reference.segment_call}


def _gram_to_psi():
  """[192, 273] map from src = [sum k k^T flattened (256), sum k (16), token count (1)] to the
  psi key sums sum_t psi_k(k_t): psi row 16 d + a holds k_a k_{(a + d) % 16} (d = 0..8), scaled
  1/8 on the diagonals d = 0 and 8 and 1/4 elsewhere; the linear rows hold k / 2, the constant
  row the count."""
  f = features.FEATURE_DIM
  m = np.zeros((features.PSI_DIM, f * f + f + 1))
  for d in range(9):
    for a in range(f):
      m[f * d + a, a * f + (a + d) % f] = 0.125 if d in (0, 8) else 0.25
  m[features.LINEAR_ROW + np.arange(f), f * f + np.arange(f)] = 0.5
  m[features.CONST_ROW, f * f + f] = 1.0
  return m


_GRAM_TO_PSI = _gram_to_psi()                                            # [192, 273]
_PSI_SOURCE, _PSI_SCALE = _as_gather(_GRAM_TO_PSI)
# Each row of TO_273 @ _GRAM_TO_PSI has exactly one nonzero: the 273-layout key state is a
# scaled gather of src.
_GRAM_TO_273_SOURCE, _GRAM_TO_273_SCALE = _as_gather(features.TO_273 @ _GRAM_TO_PSI,
                                                     every_row=True)


def _gram_source(gram, lin, count):
  """src [..., 273] = [gram [..., 16, 16] flattened, lin [..., 16], count (a number)]."""
  f = features.FEATURE_DIM
  count = jnp.full(lin.shape[:-1] + (1,), count, jnp.float32)           # [..., 1]
  return jnp.concatenate([gram.reshape(gram.shape[:-2] + (f * f,)), lin, count], axis=-1)


def psi_key_sums(gram, lin, count):
  """sum_t psi_k(k_t) [..., 192] from gram [..., 16, 16] = sum_t k_t k_t^T, lin [..., 16] =
  sum_t k_t and the token count (a number)."""
  src = _gram_source(gram, lin, count)                                    # [..., 273]
  return src[..., _PSI_SOURCE] * jnp.asarray(_PSI_SCALE)                  # [..., 192]


def key_state_from_gram_rows(rows, count):
  """The kernel's gram_sums output [..., 64, 16] (rows 0..15: sum k k^T, row 16: sum k) and the
  token count (a number) -> the 273-layout key state sum_t phi(k_t) [..., 273]: one gather."""
  f = features.FEATURE_DIM
  src = _gram_source(rows[..., :f, :], rows[..., f, :], count)            # [..., 273]
  return src[..., _GRAM_TO_273_SOURCE] * jnp.asarray(_GRAM_TO_273_SCALE)  # [..., 273]


def key_sums_xla(k):
  """sum_t psi_k(k_t) [B, H, 192] f32 from k [B, L, H, 16] through the Gram matrix.

  For bf16 k the products are exact in fp32 and summed in fp32 (as the kernel's wgmmas do), so
  the Gram matrix needs no fp32 copy of k."""
  gram = jnp.einsum("blhf,blhg->bhfg", k, k, preferred_element_type=jnp.float32,
                    precision="highest")                                  # [B, H, 16, 16]
  lin = jnp.sum(k.astype(jnp.float32), axis=1)                           # [B, H, 16]
  return psi_key_sums(gram, lin, float(k.shape[1]))


@functools.partial(jax.jit, static_argnames=("normalize", "eps", "config", "has_initial_state",
                                             "interpret", "backend"))
def forward(q, k, v, kv0, ks0, *, normalize: bool, eps: float, config: KernelConfig,
            has_initial_state: bool = True, interpret=None, backend: str = "kernel"):
  """Kernel forward. kv0 [B, H, 273, Dv] f32 and ks0 [B, H, 273] f32 (zeros for no state).

  has_initial_state=False promises kv0 = ks0 = 0 and skips their layout change and products.
  backend: "kernel" (Mosaic GPU; CPU interpreter with `interpret`) or "reference" (the pure-JAX
  mirror in reference.py, any platform).

  Returns (out [B, L, H, Dv] bf16, kv [B, H, 273, Dv] f32, k_state [B, H, 273] f32).
  """
  staging = config.resolved_staging(interpret is not None)
  if (interpret is not None and backend == "kernel" and config.schedule == "single"
      and staging in ("registers", "p_registers")):
    raise ValueError(f"KernelConfig(operand_staging={config.operand_staging!r}) cannot run in "
                     "the Mosaic GPU interpreter, which takes only shared-memory wgmma A "
                     "operands; 'smem_t' computes the same values there")
  batch, length, heads, _ = q.shape
  dv = v.shape[-1]
  kernel_ks = normalize or config.key_sums == "kernel"
  xla_ks = None if kernel_ks else key_sums_xla(k)                       # [B, H, 192]
  num_chunks = -(-length // CHUNK)
  pad = num_chunks * CHUNK - length
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q, k, v = (jnp.pad(x, widths) for x in (q, k, v))                    # [B, Lp, H, .]
  nseg = plan_segments(batch, heads, num_chunks, config)
  mats = jnp.asarray(features.build_matrices(), jnp.bfloat16)            # [7, 16, 64]
  if has_initial_state:
    s0, ks0_psi = _to_psi(kv0.astype(jnp.float32), ks0.astype(jnp.float32))
  else:                   # kv0 = ks0 = 0 (promised by the caller): no layout change to run
    s0 = jnp.zeros((batch, heads, features.PSI_DIM, dv), jnp.float32)      # [B, H, 192, Dv]
    ks0_psi = jnp.zeros((batch, heads, features.PSI_DIM), jnp.float32)     # [B, H, 192]
  common = dict(num_segments=nseg, normalize=normalize, eps=float(eps),
                max_concurrent_steps=config.max_concurrent_steps, key_sums=kernel_ks,
                two_waits=config.feature_waits == 2, interpret=interpret)
  if backend == "kernel" and config.schedule == "single":
    common.update(fresh_views=config.fresh_views, overlap_output=config.overlap_output,
                  operand_staging=staging)
  segment_call = BACKENDS[backend]
  groups = backend == "kernel" and config.schedule == "groups"
  gram_sums = False
  if groups:
    segment_call = kernel_groups.segment_call
  elif kernel_ks and not normalize:   # key sums as Gram rows: fewer registers in the kernel
    gram_sums = True
    common["gram_sums"] = True
  # Initial key sums feed the single-warpgroup kernel's denominator only (the groups kernel
  # takes all four init operands).
  init_ks = normalize or groups

  outs, states, ks_sum = [], [], None
  for col0, ncols in value_blocks(dv, config):
    s0_block = s0[..., col0:col0 + ncols]                                # [B, H, 192, n]
    if nseg > 1:
      seg_s, *seg_ks = segment_call(
          q, k, v, mats, col0=col0, ncols=ncols, emit_output=False, emit_state=True, **common)
      seg_s = seg_s.reshape(batch, heads, nseg, features.PSI_DIM, ncols)  # [B, H, S, 192, n]
      if seg_ks and gram_sums:  # only the total is needed (the second pass reads no key sums)
        gram_rows = seg_ks[0].reshape(batch, heads, nseg, CHUNK, 16).sum(axis=2)  # [B, H, 64, 16]
        seg_ks = None
      elif seg_ks:
        seg_ks = seg_ks[0].reshape(batch, heads, nseg, features.PSI_DIM, 16)[..., 0]
      else:                   # key sums come from XLA; the second pass does not read them
        seg_ks = jnp.zeros((batch, heads, nseg, features.PSI_DIM), jnp.float32)
      incl_s = jnp.cumsum(seg_s, axis=2)                                 # [B, H, S, 192, n]
      start_s = s0_block[:, :, None] + incl_s - seg_s                    # [B, H, S, 192, n]
      start_ks = None
      if seg_ks is not None:
        incl_ks = jnp.cumsum(seg_ks, axis=2)                             # [B, H, S, 192]
        start_ks = ks0_psi[:, :, None] + incl_ks - seg_ks                # [B, H, S, 192]
        ks_sum = incl_ks[:, :, -1]                                       # [B, H, 192]
      init, _ = _kernel_init(start_s, start_ks, with_ks=init_ks)
      (out,) = segment_call(
          q, k, v, mats, init, col0=col0, ncols=ncols, emit_output=True, emit_state=False,
          **common)
      states.append(incl_s[:, :, -1])                                    # [B, H, 192, n]
    else:
      init, init_f32 = None, (0.0, 0.0)
      if has_initial_state:
        init, init_f32 = _kernel_init(s0_block[:, :, None], ks0_psi[:, :, None],
                                      with_ks=init_ks)
      out, end_s, *end_ks = segment_call(
          q, k, v, mats, init, col0=col0, ncols=ncols, emit_output=True, emit_state=True,
          **common)
      # The kernel's accumulators started at the (hi + lo) initial state: keep only the sums.
      seg_s = (end_s - init_f32[0]).reshape(batch, heads, features.PSI_DIM, ncols)
      states.append(seg_s)                                               # [B, H, 192, n]
      if end_ks and gram_sums:      # Gram rows hold this call's sums only (no initial state)
        gram_rows = end_ks[0].reshape(batch, heads, CHUNK, 16)           # [B, H, 64, 16]
      elif end_ks:
        end_ks = (end_ks[0] - init_f32[1]).reshape(batch, heads, features.PSI_DIM, 16)
        ks_sum = end_ks[..., 0]                                          # [B, H, 192]
    outs.append(out)

  out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)  # [B, Lp, H, Dv]
  if pad:
    out = out[:, :length]                                                # [B, L, H, Dv]
  # The sums of this call convert to the 273 layout; the initial state is added as given (the
  # 273 layout is redundant, so a round trip through psi would symmetrize it).
  kv_psi = states[0] if len(states) == 1 else jnp.concatenate(states, axis=-1)  # [B, H, 192, Dv]
  if gram_sums:      # pad rows are zero keys: they only count, and the count is the real length
    kv, _ = _from_psi(kv_psi)
    ks = key_state_from_gram_rows(gram_rows, float(length))              # [B, H, 273]
  else:
    if not kernel_ks:
      ks_sum = xla_ks                                                    # unpadded k: no pad rows
    elif pad:
      ks_sum = ks_sum.at[..., features.CONST_ROW].add(-float(pad))       # remove the pad rows
    kv, ks = _from_psi(kv_psi, ks_sum)
  if has_initial_state:
    kv = kv0.astype(jnp.float32) + kv                                    # [B, H, 273, Dv]
    ks = ks0.astype(jnp.float32) + ks                                    # [B, H, 273]
  return out, kv, ks


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10))
def _attention(q, k, v, kv0, ks0, normalize, eps, config, has_initial_state, interpret, backend):
  return forward(q, k, v, kv0, ks0, normalize=normalize, eps=eps, config=config,
                 has_initial_state=has_initial_state, interpret=interpret, backend=backend)


def _attention_fwd(q, k, v, kv0, ks0, normalize, eps, config, has_initial_state, interpret,
                   backend):
  outs = _attention(q, k, v, kv0, ks0, normalize, eps, config, has_initial_state, interpret,
                    backend)
  return outs, (q, k, v, kv0, ks0)


def _attention_bwd(normalize, eps, config, has_initial_state, interpret, backend, residuals,
                   cotangents):
  del config, has_initial_state, interpret, backend
  q, k, v, kv0, ks0 = residuals
  dq, dk, dv, d_state = chunked_float32_vjp(q, k, v, LinearAttentionState(kv0, ks0), cotangents,
                                            normalize=normalize, eps=eps)
  return dq, dk, dv, d_state.kv, d_state.k_state


_attention.defvjp(_attention_fwd, _attention_bwd)


def linear_attention(q, k, v, *, normalize: bool, eps: float = 1e-12,
                     initial_state: LinearAttentionState | None = None,
                     config: KernelConfig = KernelConfig(),
                     interpret=None,
                     backend: str = "kernel") -> tuple[jax.Array, LinearAttentionState]:
  """Causal Based linear attention on the Mosaic GPU kernel (Hopper); see docs/design.md.

  q, k: [B, L, H, 16] bf16; v: [B, L, H, Dv] bf16 (Dv a multiple of 16, <= 256).
  initial_state: LinearAttentionState(kv [B, H, 273, Dv] f32, k_state [B, H, 273] f32) or None.
  Returns (out [B, L, H, Dv] bf16, final LinearAttentionState in float32).
  interpret: a `plgpu.InterpretGPUParams` to run on the CPU interpreter (tests), else None.
  backend: "kernel", or "reference" for the pure-JAX mirror of the kernel (tests, any platform).
  Raises ValueError naming the argument for bad shapes or dtypes, before any launch.
  """
  _check_kernel_args(q, k, v, normalize, eps, initial_state)
  if backend not in BACKENDS:
    raise ValueError(
        f"pallas_kernels.linear_attention: backend must be one of {tuple(BACKENDS)}; "
        f"got {backend!r}")
  batch, _, heads, _ = q.shape
  has_initial_state = initial_state is not None
  if initial_state is None:
    initial_state = LinearAttentionState.zeros(batch, heads, v.shape[-1])
  out, kv, ks = _attention(q, k, v, initial_state.kv.astype(jnp.float32),
                           initial_state.k_state.astype(jnp.float32), normalize, float(eps),
                           config, has_initial_state, interpret, backend)
  return out, LinearAttentionState(kv, ks)


def unavailable_reason(q, k, v) -> str | None:
  """None when the kernel can run these arguments here (Hopper sm_90 GPU), else why not."""
  reason = kernel_shape_reason(q, k, v)
  if reason is not None:
    return reason
  return hopper_unavailable_reason("the Pallas Mosaic GPU kernel")


__all__ = ["EXPANDED_DIM", "forward", "linear_attention", "unavailable_reason"]
