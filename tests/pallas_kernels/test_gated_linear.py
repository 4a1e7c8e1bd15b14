"""The gated-linear Pallas kernel (SwiGLU fc1 + gate) against float64 NumPy: in the Mosaic GPU
interpreter on the CPU, its CUDA lowering at based-360m's shapes, and (gpu-marked) on the H200.
Fresh random inputs every run; row counts that are not a multiple of the block cover the padding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.gated_linear import GatedLinearConfig, gated_linear, unavailable_reason

TOL = 1e-2


def _inputs(lead, k, n):
  rng = np.random.default_rng()
  x = jnp.asarray(rng.standard_normal(lead + (k,)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((k, 2 * n)) / np.sqrt(k), jnp.bfloat16)
  return x, w


def _reference(x, w):
  h = np.asarray(x, np.float64) @ np.asarray(w, np.float64)             # [..., 2N]
  n = w.shape[1] // 2
  value, gate = h[..., :n], h[..., n:]
  return value * gate / (1.0 + np.exp(-gate))


def _rel_err(got, want):
  got = np.asarray(got, np.float64)
  assert np.isfinite(got).all(), "NaN/inf in the output (an unwritten tile?)"
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("lead, k, n, config", [
    ((600,), 128, 192, GatedLinearConfig()),                 # 3 row blocks x 3 column blocks
    ((3, 37), 192, 128, GatedLinearConfig()),                 # 111 rows: padded to 256
    ((2, 100), 128, 64, GatedLinearConfig(tile_m=64, max_concurrent_steps=2)),
    ((1,), 64, 128, GatedLinearConfig(tile_m=64, tile_n=128)),
    ((700,), 128, 192, GatedLinearConfig(persistent=True)),  # 9 tiles dealt to 3 blocks
])
def test_interpreted_kernel_matches_float64(lead, k, n, config):
  x, w = _inputs(lead, k, n)
  y = jax.jit(lambda x, w: gated_linear(x, w, config=config,
                                        interpret=plgpu.InterpretGPUParams()))(x, w)
  assert y.shape == lead + (n,) and y.dtype == jnp.bfloat16
  assert _rel_err(y, _reference(x, w)) <= TOL


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="tile_m and tile_n must be 64 or 128"):
    GatedLinearConfig(tile_m=256)
  with pytest.raises(ValueError, match="128 x 128 needs 256 accumulator registers"):
    GatedLinearConfig(tile_m=128, tile_n=128)
  with pytest.raises(ValueError, match="tile_k must be 64"):
    GatedLinearConfig(tile_k=32)
  with pytest.raises(ValueError, match="max_concurrent_steps must be >= 2"):
    GatedLinearConfig(max_concurrent_steps=1)


def test_default_config_is_half_height_for_few_rows_and_persistent_for_many():
  from pallas_kernels.gated_linear.api import SMALL_ROWS, default_config

  assert default_config(256).tile_m == 64 and default_config(SMALL_ROWS).tile_m == 64
  assert not default_config(SMALL_ROWS).persistent
  assert default_config(SMALL_ROWS + 1) == GatedLinearConfig(persistent=True)


def test_gradient_is_the_xla_definitions():
  """custom_vjp: the backward pass differentiates the XLA definition (fp32 reference here)."""
  x, w = _inputs((70,), 64, 64)
  kernel = lambda x, w: gated_linear(x, w, interpret=plgpu.InterpretGPUParams())

  def loss(fn, x, w):
    return jnp.sum(fn(x, w).astype(jnp.float32) ** 2)

  def xla(x, w):
    h = jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32), precision="highest")
    return h[:, :64] * jax.nn.silu(h[:, 64:])

  gx, gw = jax.jit(jax.grad(lambda x, w: loss(kernel, x, w), argnums=(0, 1)))(x, w)
  rx, rw = jax.grad(lambda x, w: loss(xla, x, w), argnums=(0, 1))(x.astype(jnp.float32),
                                                                   w.astype(jnp.float32))
  assert gx.dtype == x.dtype and gw.dtype == w.dtype
  for got, want in ((gx, rx), (gw, rw)):
    assert _rel_err(got, np.asarray(want, np.float64)) <= 2e-2


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("rows", [32000, 1000])
def test_kernel_lowers_for_cuda_at_based_360m_shapes(rows, persistent):
  """The Mosaic GPU lowering (warp-specialized pipeline, TMA, wgmma) runs on the CPU."""
  x = jax.ShapeDtypeStruct((rows, 1024), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16)
  config = GatedLinearConfig(persistent=persistent)
  lowered = jax.jit(lambda x, w: gated_linear(x, w, config=config)).trace(x, w).lower(
      lowering_platforms=("cuda",))
  assert "mosaic_gpu" in lowered.as_text()


@pytest.mark.parametrize("x_shape, w_shape, dtype, match", [
    ((8, 64), (64, 128), jnp.float32, "bfloat16"),
    ((8, 96), (96, 128), jnp.bfloat16, "K = 96 must be a multiple of 64"),
    ((8, 64), (64, 96), jnp.bfloat16, "2N = 96"),
    ((8, 64), (128, 128), jnp.bfloat16, "last dim 64 must equal w's rows 128"),
    ((8, 64), (64,), jnp.bfloat16, "w \\[K, 2N\\]"),
])
def test_bad_shapes_and_dtypes_are_named_errors(x_shape, w_shape, dtype, match):
  x, w = jnp.zeros(x_shape, dtype), jnp.zeros(w_shape, dtype)
  with pytest.raises(ValueError, match=match):
    gated_linear(x, w)
  assert unavailable_reason(x, w) is not None


def test_unavailable_without_a_hopper_gpu():
  x, w = _inputs((4,), 64, 64)
  reason = unavailable_reason(x, w)
  if jax.default_backend() != "gpu":
    assert "no GPU visible" in reason


@pytest.mark.gpu
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("rows, k, n", [(32000, 1024, 2048), (777, 1024, 2048), (256, 256, 64)])
def test_kernel_matches_float64_on_gpu(rows, k, n, persistent):
  x, w = _inputs((rows,), k, n)
  config = GatedLinearConfig(tile_m=64 if rows <= 4096 else 128, persistent=persistent)
  y = jax.jit(lambda x, w: gated_linear(x, w, config=config))(x, w)
  assert _rel_err(y, _reference(x, w)) <= TOL
