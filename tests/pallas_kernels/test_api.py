"""Argument checks, availability, planning and the custom_vjp wiring of pallas_kernels (CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

import pallas_kernels
from based_jax.ops.chunked import chunked_linear_attention
from based_jax.ops.state import LinearAttentionState
from pallas_kernels.based_attention import KernelConfig, api, features
from tests.float64_reference import linear_attention_f64


def _arrays(b=1, length=64, h=2, dv=64, dtype=jnp.bfloat16):
  rng = np.random.default_rng()
  q = jnp.asarray(rng.standard_normal((b, length, h, 16)) * 0.5, dtype)
  k = jnp.asarray(rng.standard_normal((b, length, h, 16)) * 0.5, dtype)
  v = jnp.asarray(rng.standard_normal((b, length, h, dv)), dtype)
  return q, k, v


@pytest.mark.parametrize("mutate,match", [
    (lambda q, k, v: (q.astype(jnp.float32), k.astype(jnp.float32), v), "bfloat16 q"),
    (lambda q, k, v: (q, k, v.astype(jnp.float16)), "bfloat16 v"),
    (lambda q, k, v: (q, k, v[..., :40]), "Dv"),
    (lambda q, k, v: (q[..., :8], k[..., :8], v), "feature dim 16"),
    (lambda q, k, v: (q, k[:, :32], v), "k must have the shape of q"),
    (lambda q, k, v: (q[0], k, v), "q must have rank 4"),
])
def test_bad_arguments_raise_value_error_naming_them(mutate, match):
  q, k, v = mutate(*_arrays())
  with pytest.raises(ValueError, match=match):
    pallas_kernels.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None)


def test_bad_state_and_scalars_raise():
  q, k, v = _arrays(b=2, h=3)
  bad = LinearAttentionState(jnp.zeros((2, 3, 273, 32)), jnp.zeros((2, 3, 273)))
  with pytest.raises(ValueError, match="initial_state.kv"):
    pallas_kernels.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=bad)
  with pytest.raises(ValueError, match="eps"):
    pallas_kernels.linear_attention(q, k, v, normalize=True, eps=-1.0, initial_state=None)
  with pytest.raises(ValueError, match="normalize"):
    pallas_kernels.linear_attention(q, k, v, normalize=1, eps=1e-6, initial_state=None)


def test_unavailable_reason_names_the_problem():
  q, k, v = _arrays()
  assert "bfloat16" in pallas_kernels.unavailable_reason(q.astype(jnp.float32), k, v)
  assert "Dv" in pallas_kernels.unavailable_reason(q, k, v[..., :40])
  reason = pallas_kernels.unavailable_reason(q, k, v)
  if jax.default_backend() == "cpu":
    assert reason is not None and "GPU" in reason


@pytest.mark.parametrize("batch,heads,chunks", [(1, 16, 128), (16, 16, 128), (1, 1, 7),
                                                 (3, 5, 2048), (1, 16, 1), (256, 16, 128)])
def test_fill_planner_fills_the_gpu(batch, heads, chunks):
  config = KernelConfig(planner="fill")
  nseg = api.plan_segments(batch, heads, chunks, config)
  assert chunks % nseg == 0
  assert nseg == 1 or chunks // nseg >= config.min_segment_chunks
  if batch * heads >= config.target_blocks:
    assert nseg == 1
  want = -(-config.target_blocks // (batch * heads))
  if chunks // config.min_segment_chunks >= want and (chunks & (chunks - 1)) == 0:
    assert batch * heads * nseg >= config.target_blocks


@pytest.mark.parametrize("batch,heads,chunks", [(1, 16, 128), (16, 16, 128), (1, 1, 7),
                                                 (3, 5, 2048), (256, 16, 128), (4, 16, 1024)])
def test_waves_planner_picks_the_cheapest_divisor(batch, heads, chunks):
  config = KernelConfig(planner="waves")
  nseg = api.plan_segments(batch, heads, chunks, config)
  assert chunks % nseg == 0
  cost = lambda d: api.segment_cost(batch, heads, chunks, d, config.target_blocks)
  allowed = [d for d in range(1, chunks + 1)
             if chunks % d == 0 and (d == 1 or chunks // d >= config.min_segment_chunks)]
  assert cost(nseg) == min(cost(d) for d in allowed)
  # At these shapes, B * H >= target_blocks means one segment per (b, h).
  if batch * heads >= config.target_blocks:
    assert cost(1) <= cost(nseg) and nseg == 1


@pytest.mark.parametrize("batch,heads,chunks", [(1, 16, 128), (16, 16, 128), (1, 1, 7),
                                                 (3, 5, 2048), (256, 16, 128), (4, 16, 125)])
def test_sm_planner_picks_the_cheapest_divisor(batch, heads, chunks):
  config = KernelConfig()
  assert config.planner == "sm"
  nseg = api.plan_segments(batch, heads, chunks, config)
  assert chunks % nseg == 0
  cost = lambda d: api.sm_cost(batch, heads, chunks, d, config.target_blocks // 2)
  allowed = [d for d in range(1, chunks + 1)
             if chunks % d == 0 and (d == 1 or chunks // d >= config.min_segment_chunks)]
  assert cost(nseg) == min(cost(d) for d in allowed)
  if batch * heads >= config.target_blocks // 2:     # every SM already has a whole sequence
    assert nseg == 1


def test_sm_cost_model():
  """Hand-computed costs: one block per SM pays its fixed cost and chunks; a pair of blocks per
  SM finishes PAIR_SPEEDUP sooner than two in turn; two passes cost 1.5 per chunk."""
  assert api.sm_cost(1, 1, 64, 1, 132) == api.ONE_PASS_FIXED + 64
  assert api.sm_cost(1, 16, 128, 8, 132) == api.TWO_PASS_FIXED + 16 * 1.5      # 128 blocks
  two_per_sm = api.sm_cost(1, 16, 128, 16, 132)                                # 256 blocks
  assert two_per_sm == pytest.approx(2 * (api.TWO_PASS_FIXED + 8 * 1.5) / api.PAIR_SPEEDUP)


@pytest.mark.parametrize("dv", [16, 64, 112, 128, 192, 256])
def test_value_blocks_cover_dv(dv):
  blocks = api.value_blocks(dv, KernelConfig())
  assert blocks[0][0] == 0 and sum(w for _, w in blocks) == dv
  assert all(w % 16 == 0 and w <= 64 for _, w in blocks)
  assert all(a + w == b for (a, w), (b, _) in zip(blocks, blocks[1:]))


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="max_value_block"):
    KernelConfig(max_value_block=40)
  with pytest.raises(ValueError, match="max_concurrent_steps"):
    KernelConfig(max_concurrent_steps=0)
  with pytest.raises(ValueError, match="planner"):
    KernelConfig(planner="greedy")
  with pytest.raises(ValueError, match="key_sums"):
    KernelConfig(key_sums="host")
  with pytest.raises(ValueError, match="schedule"):
    KernelConfig(schedule="warps")
  with pytest.raises(ValueError, match="feature_waits"):
    KernelConfig(feature_waits=1)
  with pytest.raises(ValueError, match="overlap_output needs feature_waits=3"):
    KernelConfig(overlap_output=True, feature_waits=2)
  with pytest.raises(ValueError, match="fresh_views must be a bool"):
    KernelConfig(fresh_views=1)
  with pytest.raises(ValueError, match="operand_staging must be"):
    KernelConfig(operand_staging="tmem")
  for other in ({"feature_waits": 2}, {"overlap_output": True}):
    with pytest.raises(ValueError, match="operand_staging='registers' needs feature_waits=3"):
      KernelConfig(operand_staging="registers", **other)


def test_operand_staging_auto_is_registers_on_the_gpu_and_smem_t_in_the_interpreter():
  auto = KernelConfig()
  assert auto.operand_staging == "auto"
  assert auto.resolved_staging(interpret=False) == "registers"
  assert auto.resolved_staging(interpret=True) == "smem_t"
  for other in ({"feature_waits": 2}, {"overlap_output": True}):   # settings registers can't take
    config = KernelConfig(**other)
    assert config.resolved_staging(interpret=False) == config.resolved_staging(True) == "smem"
  for staging in ("smem", "smem_t", "registers", "p_registers"):   # explicit choices stay
    assert KernelConfig(operand_staging=staging).resolved_staging(interpret=False) == staging


def test_register_operands_in_the_interpreter_is_a_named_error():
  rng = np.random.default_rng()
  q, k, v = (jnp.asarray(rng.standard_normal((1, 64, 1, d)), jnp.bfloat16) for d in (16, 16, 64))
  for staging in ("registers", "p_registers"):
    with pytest.raises(ValueError, match=f"operand_staging='{staging}'.*interpreter.*smem_t"):
      api.linear_attention(q, k, v, normalize=False,
                           config=KernelConfig(operand_staging=staging),
                           interpret=plgpu.InterpretGPUParams())


def test_key_sums_xla_is_the_sum_of_psi_k():
  rng = np.random.default_rng()
  k = rng.standard_normal((2, 37, 3, 16)).astype(np.float32)
  got = np.asarray(api.key_sums_xla(jnp.asarray(k)), np.float64)          # [B, H, 192]
  want = features.psi_numpy(k.astype(np.float64), "k").sum(axis=1)        # [B, H, 192]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_grad_flows_through_custom_vjp():
  """Gradients w.r.t. q, k, v and the initial state equal those of the XLA chunked path run in
  float32 on the same bf16 inputs (the backward's contract), rounded to the inputs' dtypes."""
  rng = np.random.default_rng()
  q, k, v = _arrays(b=1, length=70, h=1, dv=64)
  kv0 = jnp.asarray(rng.standard_normal((1, 1, 273, 64)) * 0.1, jnp.float32)
  ks0 = jnp.asarray(rng.random((1, 1, 273)) + 1.0, jnp.float32)
  # bf16-exact weights: the bf16 output's cotangent is then the same in both paths.
  w = jnp.asarray(rng.standard_normal((1, 70, 1, 64)), jnp.bfloat16).astype(jnp.float32)
  wk = jnp.asarray(rng.standard_normal((1, 1, 273, 64)), jnp.float32)

  def loss(fn, q, k, v, kv0, ks0):
    out, state = fn(q, k, v, LinearAttentionState(kv0, ks0))
    return jnp.sum(out.astype(jnp.float32) * w) + jnp.sum(state.kv * wk) + jnp.sum(state.k_state)

  pallas = lambda q, k, v, s: api.linear_attention(
      q, k, v, normalize=True, eps=1e-6, initial_state=s, interpret=plgpu.InterpretGPUParams())
  xla = lambda q, k, v, s: chunked_linear_attention(q, k, v, normalize=True, eps=1e-6,
                                                    initial_state=s)
  args = (q, k, v, kv0, ks0)
  got = jax.grad(lambda *a: loss(pallas, *a), argnums=(0, 1, 2, 3, 4))(*args)
  f32 = tuple(a.astype(jnp.float32) for a in args)
  want = jax.grad(lambda *a: loss(xla, *a), argnums=(0, 1, 2, 3, 4))(*f32)
  want = tuple(w.astype(a.dtype) for w, a in zip(want, args))
  for name, g, r, a in zip(("q", "k", "v", "kv0", "ks0"), got, want, args):
    assert g.dtype == a.dtype, (name, g.dtype, a.dtype)
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    assert g.shape == r.shape, name
    assert np.all(np.isfinite(g)), name
    # Same float32 math, then one rounding to bf16 for q, k, v: at most a last-bit flip.
    assert np.linalg.norm(g - r) <= 1e-3 * np.linalg.norm(r) + 1e-12, name
    assert np.linalg.norm(r) > 0, name


def test_key_state_from_gram_rows_is_the_sum_of_phi_k():
  """The kernel's Gram rows (sum [k, 1, ..., 1] k^T) and the count -> 273-layout k_state, vs
  the float64 reference's key state of the same keys."""
  rng = np.random.default_rng()
  b, length, h = 2, 37, 3
  k = rng.standard_normal((b, length, h, 16)).astype(np.float32)
  left = np.concatenate([k, np.ones((b, length, h, 48), np.float32)], axis=-1)  # [B, L, H, 64]
  rows = np.einsum("blhr,blhc->bhrc", left.astype(np.float64), k)              # [B, H, 64, 16]
  got = api.key_state_from_gram_rows(jnp.asarray(rows, jnp.float32), float(length))
  zeros = np.zeros((b, length, h, 16))
  _, _, want = linear_attention_f64(zeros, k.astype(np.float64), np.zeros((b, length, h, 8)),
                                    normalize=False, eps=0.0)                 # [B, H, 273]
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-4)


def test_state_leaves_psi_layout_as_the_to_273_map():
  """_from_psi (a scaled row gather) equals the [273, 192] map of features.TO_273 in float64."""
  rng = np.random.default_rng()
  kv_psi = rng.standard_normal((2, 3, 192, 16)).astype(np.float32)       # [B, H, 192, Dv]
  ks_psi = rng.standard_normal((2, 3, 192)).astype(np.float32)           # [B, H, 192]
  from_psi = api._from_psi  # pylint: disable=protected-access
  kv, ks = from_psi(jnp.asarray(kv_psi), jnp.asarray(ks_psi))            # [B, H, 273, ...]
  m = features.TO_273                                                    # [273, 192] float64
  np.testing.assert_allclose(np.asarray(kv), np.einsum("ef,bhfd->bhed", m, kv_psi), rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(ks), np.einsum("ef,bhf->bhe", m, ks_psi), rtol=1e-6,
                             atol=1e-6)
