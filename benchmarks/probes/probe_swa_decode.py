"""Probe: one sliding-window decode step's attention over the ring, formulation by formulation.

  PYTHONPATH=. python3 benchmarks/probes/probe_swa_decode.py [--batch 256] [--heads 16]
      [--slots 65] [--head-dim 64] [--iterations 20]

Why: in s10d's trace a B = 256 decode step of based-360m spends ~40 us per sliding-window layer
in the two reductions of `cache_attention` over the 65-slot ring (K and V [B, S, H, D] bf16,
34 MB each: ~8 us each at 4.3 TB/s), plus ~10 us of small kernels (docs/benchmarks.md,
"Session 10"). This times, on the same inputs (a few random slots invalid, as early in a
left-padded generation):

  ring        based_jax.mixers.mha.cache_attention, the library's decode on its [B, S, H, D] ring
  head_major  the same math on a [B, H, S, D] ring (what a layout change of the cache would give)
  cudnn       jax.nn.dot_product_attention(implementation="cudnn"), q [B, 1, H, D], every slot
              valid (cuDNN masks by sequence lengths only, so this is its time, not a drop-in)

Prints per formulation the CUPTI kernel time (`benchmarks.common.time_jax`; host wall time on a
CPU), the byte floor of reading K and V once, and the largest difference from `ring` computed in
float32 on the same inputs. On a CPU (or with --smoke) it runs small shapes and skips cuDNN.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.mixers.mha import KVCache, cache_attention
from benchmarks import common

PEAK_BYTES_PER_S = 4.3e12   # H200


def head_major_attention(q, k, v, valid, *, scale: float) -> jax.Array:
  """q [B, H, D], k and v [B, H, S, D], valid [B, S] -> [B, H, D]: cache_attention's math."""
  s = jnp.einsum("bhd,bhsd->bhs", q, k, preferred_element_type=jnp.float32) * scale  # [B, H, S]
  mask = valid[:, None, :]  # [B, 1, S]
  s = jnp.where(mask, s, -1e30)
  p = jnp.where(mask, jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)), 0.0)  # [B, H, S]
  den = jnp.sum(p, axis=-1, keepdims=True)  # [B, H, 1]
  o = jnp.einsum("bhs,bhsd->bhd", p.astype(v.dtype), v,
                 preferred_element_type=jnp.float32)  # [B, H, D]
  return (o / jnp.where(den > 0, den, 1.0)).astype(q.dtype)


def make_inputs(batch: int, heads: int, slots: int, head_dim: int, seed: int = 0):
  """q [B, H, D], k and v [B, S, H, D] bf16, valid [B, S] (every row keeps >= 1 valid slot)."""
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, heads, head_dim))
  k = rng.standard_normal((batch, slots, heads, head_dim))
  v = rng.standard_normal((batch, slots, heads, head_dim))
  valid = rng.random((batch, slots)) > 0.05
  valid[:, 0] = True
  bf16 = jnp.bfloat16
  return jnp.asarray(q, bf16), jnp.asarray(k, bf16), jnp.asarray(v, bf16), jnp.asarray(valid)


def formulations(scale: float, with_cudnn: bool) -> dict:
  """name -> (fn, layout): fn(q, k, v, valid) with k, v in `layout` ("bshd" or "bhsd")."""
  fns = {
      "ring": (lambda q, k, v, valid: cache_attention(
          q, KVCache(k=k, v=v, valid=valid), scale=scale, precision=None), "bshd"),
      "head_major": (lambda q, k, v, valid: head_major_attention(q, k, v, valid, scale=scale),
                     "bhsd"),
  }
  if with_cudnn:
    fns["cudnn"] = (lambda q, k, v, valid: jax.nn.dot_product_attention(
        q[:, None], k, v, scale=scale, implementation="cudnn")[:, 0], "bshd")
  return fns


def run(batch: int, heads: int, slots: int, head_dim: int, iterations: int,
        with_cudnn: bool) -> dict:
  """{name: {"ms", "wall_ms", "max_diff"} or {"error"}} plus "floor_ms"; max_diff against
  `ring`'s math in float32."""
  q, k, v, valid = make_inputs(batch, heads, slots, head_dim)
  scale = head_dim ** -0.5
  fns = formulations(scale, with_cudnn)
  # the reference: `ring` in float32 on the same (bf16-rounded) values, every slot valid for
  # cuDNN's row (it cannot mask), the drawn mask for the others
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  reference = {m: np.asarray(cache_attention(f32[0], KVCache(k=f32[1], v=f32[2], valid=mask),
                                             scale=scale, precision="highest"))
               for m, mask in (("drawn", valid), ("all", jnp.ones_like(valid)))}
  results = {"floor_ms": 1e3 * 2 * k.size * k.dtype.itemsize / PEAK_BYTES_PER_S}
  for name, (fn, layout) in fns.items():
    kk, vv = (k, v) if layout == "bshd" else (k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))
    mask = jnp.ones_like(valid) if name == "cudnn" else valid
    jitted = jax.jit(fn)
    try:
      out = np.asarray(jitted(q, kk, vv, mask).astype(jnp.float32))
      timing = common.time_jax(jitted, q, kk, vv, mask, iterations=iterations)
    except Exception as e:  # pylint: disable=broad-except  # e.g. cuDNN refusing the shape
      results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
      continue
    expected = reference["all" if name == "cudnn" else "drawn"]
    results[name] = {"ms": timing["ms"], "wall_ms": timing["wall_ms"],
                     "max_diff": float(np.max(np.abs(out - expected)))}
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--slots", type=int, default=65, help="ring slots, window // 2 + 1")
  parser.add_argument("--head-dim", type=int, default=64)
  parser.add_argument("--iterations", type=int, default=20)
  parser.add_argument("--smoke", action="store_true", help="small shapes, no cuDNN (CPU check)")
  args = parser.parse_args(argv)
  gpu = jax.default_backend() == "gpu"
  shape = (args.batch, args.heads, args.slots, args.head_dim)
  if args.smoke or not gpu:
    shape = (4, 2, 9, 16)
  results = run(*shape, iterations=args.iterations if gpu else 3,
                with_cudnn=gpu and not args.smoke)
  print(f"B, H, S, D = {shape}; backend {jax.default_backend()}; reading K and V once: "
        f"{results['floor_ms'] * 1e3:.2f} us at {PEAK_BYTES_PER_S / 1e12:.1f} TB/s")
  for name, r in results.items():
    if name != "floor_ms" and "error" in r:
      print(f"  {name:11s} failed: {r['error']}")
    elif name != "floor_ms":
      print(f"  {name:11s} {r['ms'] * 1e3:8.1f} us (wall {r['wall_ms'] * 1e3:8.1f} us)  "
            f"max |diff| vs float32 {r['max_diff']:.2e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
