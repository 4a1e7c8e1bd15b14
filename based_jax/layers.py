"""Leaf layers of the Based LMs: RMSNorm, SwiGLU MLP, dense helper and NeoX rotary embeddings.

Shape legend: B batch, L length, H heads, D head dim, R rotary dim, d model width.
Dtype policy: `dtype` is the compute dtype; parameters (fp32 or bf16) are cast to it at use.
Norms compute in fp32. In fp32 runs matmuls use full precision (no TF32).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from based_jax import ops

Dtype = jnp.dtype


def matmul_precision(dtype) -> jax.lax.Precision:
  """HIGHEST for fp32 compute (the correctness mode), DEFAULT for bf16/fp16 (the speed mode)."""
  if jnp.dtype(dtype) == jnp.dtype(jnp.float32):
    return jax.lax.Precision.HIGHEST
  return jax.lax.Precision.DEFAULT


def dense(features: int, *, use_bias: bool, dtype, name: str) -> nn.Dense:
  """nn.Dense (kernel [in, out] = torch weight.T) computing in `dtype`."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, precision=matmul_precision(dtype),
                  name=name)


class RMSNorm(nn.Module):
  """y = x * rsqrt(mean(x^2, -1) + eps) * weight, in fp32, cast back to x's dtype.

  Param `weight` [D] (torch `norm.weight`). x: [..., D] -> [..., D].
  """

  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    rstd = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)  # [..., 1]
    return (x32 * rstd * weight.astype(jnp.float32)).astype(x.dtype)


class GatedLinear(nn.Module):
  """fc1 of a SwiGLU MLP with its gate: y = h[..., :N] * silu(h[..., N:]), h = x @ kernel + bias.

  Params as flax nn.Dense(2N): kernel [d, 2N] (torch weight.T), bias [2N] when use_bias.
  x: [..., d] -> [..., N] in `dtype`. impl: based_jax.ops.gated_linear's ("xla" or "pallas").
  """

  features: int  # 2N
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    return ops.gated_linear(x, kernel, bias, dtype=self.dtype,
                            precision=matmul_precision(self.dtype), impl=self.impl)


class SwiGLU(nn.Module):
  """GatedMlp: fc1 -> [value | gate], y = fc2(value * silu(gate)).

  x: [B, L, d] -> [B, L, d]. Params fc1/kernel [d, 2*hidden], fc2/kernel [hidden, d].
  impl: how fc1 and the gate run (based_jax.ops.gated_linear: "xla" or "pallas").
  """

  hidden: int
  use_bias1: bool = False
  use_bias2: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    y = GatedLinear(2 * self.hidden, self.use_bias1, self.dtype, self.impl, name="fc1")(x)
    return dense(d, use_bias=self.use_bias2, dtype=self.dtype, name="fc2")(y)  # [B, L, d]


def rotary_cos_sin(positions: jax.Array, rotary_dim: int, base: float,
                   dtype) -> tuple[jax.Array, jax.Array]:
  """NeoX rotary tables for integer positions.

  positions: [...] int -> cos, sin: [..., R/2], rounded to `dtype` (as flash-attn does) and
  returned in fp32. inv_freq_i = base^(-2i/R) and theta = p * inv_freq, both in fp32.
  """
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  theta = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., R/2]
  cos = jnp.cos(theta).astype(dtype).astype(jnp.float32)
  sin = jnp.sin(theta).astype(dtype).astype(jnp.float32)
  return cos, sin


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotate the first R dims of each head (GPT-NeoX halves); dims >= R pass through.

  x: [B, L, H, D]; cos, sin: [B, L, R/2] -> [B, L, H, D] in x's dtype (fp32 arithmetic).
  """
  half = cos.shape[-1]
  if half == 0:
    return x
  rot = 2 * half
  x32 = x[..., :rot].astype(jnp.float32)  # [B, L, H, R] = [x1 | x2]
  # [x2 | x1] as a reversal of the two halves, and the tables widened to R, so that the rotation
  # is one elementwise expression: x * [c | c] + [x2 | x1] * [-s | s] = [x1 c - x2 s | x2 c + x1 s],
  # the same floats as the two halves computed apart, with no concatenation of halves for XLA to
  # run as a kernel of its own (one for q and one for k in every sliding-window layer of a
  # decode step, s10d).
  swapped = jnp.flip(x32.reshape(x32.shape[:-1] + (2, half)), axis=-2).reshape(x32.shape)
  c = jnp.concatenate([cos, cos], axis=-1)[:, :, None, :]  # [B, L, 1, R]
  s = jnp.concatenate([-sin, sin], axis=-1)[:, :, None, :]  # [B, L, 1, R]
  out = (x32 * c + swapped * s).astype(x.dtype)  # [B, L, H, R]
  if rot == x.shape[-1]:
    return out
  return jnp.concatenate([out, x[..., rot:]], axis=-1)  # [B, L, H, D]
