"""The dispatch point of the SwiGLU gated layer: the XLA definition against float64 NumPy and
flax's nn.Dense, and named errors where an implementation cannot run."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from based_jax.ops import GATED_LINEAR_IMPLS, gated_linear, gated_linear_xla


def _inputs(bias: bool, dtype=jnp.float32):
  rng = np.random.default_rng()
  x = jnp.asarray(rng.standard_normal((2, 9, 32)), dtype)
  kernel = jnp.asarray(rng.standard_normal((32, 48)) / 6, jnp.float32)
  b = jnp.asarray(rng.standard_normal(48), jnp.float32) if bias else None
  return x, kernel, b


@pytest.mark.parametrize("bias", [False, True])
def test_xla_definition_vs_float64(bias):
  x, kernel, b = _inputs(bias)
  got = gated_linear(x, kernel, b, dtype=jnp.float32, precision=jax.lax.Precision.HIGHEST)
  h = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64)
  if bias:
    h = h + np.asarray(b, np.float64)
  want = h[..., :24] * h[..., 24:] / (1 + np.exp(-h[..., 24:]))
  assert got.shape == (2, 9, 24) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_xla_definition_is_flax_dense_then_the_gate_bit_for_bit(dtype):
  """The model's fc1 params and numerics are those of nn.Dense(2N) before this dispatch point."""
  x, kernel, b = _inputs(True, dtype)
  dense = nn.Dense(48, dtype=dtype)
  h = dense.apply({"params": {"kernel": kernel, "bias": b}}, x)
  want = h[..., :24] * jax.nn.silu(h[..., 24:])
  got = gated_linear_xla(x, kernel, b, dtype=dtype)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_named_errors():
  x, kernel, b = _inputs(True)
  assert GATED_LINEAR_IMPLS == ("xla", "pallas", "auto")
  with pytest.raises(ValueError, match="impl must be one of"):
    gated_linear(x, kernel, dtype=jnp.float32, impl="cublas")
  with pytest.raises(ValueError, match="impl='pallas'.*no bias"):
    gated_linear(x, kernel, b, dtype=jnp.bfloat16, impl="pallas")
  with pytest.raises(ValueError, match="impl='pallas'.*bfloat16"):
    gated_linear(x, kernel, dtype=jnp.float32, impl="pallas")
  if jax.default_backend() != "gpu":
    x64 = jnp.zeros((4, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="impl='pallas'.*no GPU visible"):
      gated_linear(x64, jnp.zeros((64, 128)), dtype=jnp.bfloat16, impl="pallas")


def test_auto_takes_the_kernel_only_above_the_row_threshold_and_where_it_runs(monkeypatch):
  module = importlib.import_module("based_jax.ops.gated_linear")   # the module, not the function

  kernel = jnp.zeros((64, 128), jnp.bfloat16)
  few = jnp.zeros((module.AUTO_MIN_ROWS, 64), jnp.bfloat16)              # [4096, 64]
  many = jnp.zeros((2, module.AUTO_MIN_ROWS // 2 + 1, 64), jnp.bfloat16)  # 4098 rows
  if jax.default_backend() != "gpu":   # no GPU: never the kernel, however many rows
    assert module.resolve_auto(many, kernel, None, jnp.bfloat16) == "xla"
  monkeypatch.setattr(module, "unavailable_reason",
                      lambda impl, *args: None if impl == "pallas" else "unexpected")
  assert module.resolve_auto(few, kernel, None, jnp.bfloat16) == "xla"
  assert module.resolve_auto(many, kernel, None, jnp.bfloat16) == "pallas"


def test_auto_matches_the_definition_where_it_falls_back():
  x, kernel, b = _inputs(True)
  want = gated_linear_xla(x, kernel, b, dtype=jnp.float32)
  got = gated_linear(x, kernel, b, dtype=jnp.float32, impl="auto")
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
