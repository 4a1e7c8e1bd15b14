"""Probe: does a Mosaic GPU kernel cost more wall time inside an XLA program than its kernel time?

  PYTHONPATH=. python3 benchmarks/probes/probe_launch_overhead.py

Why: in s8a/s8b the based-360m prefill at B = 4 with mlp_impl "auto" (27 more Mosaic GPU launches,
the gated-linear kernel) summed 1.5 ms less kernel time than with "xla" (CUPTI) but took 2.05 ms
more end to end. This times chains of N back-to-back calls in one jitted program, each call
consuming the previous output, for N = 1 and N = 16: host wall time per call ((wall(16) -
wall(1)) / 15, block_until_ready, median of 20) against CUPTI kernel time per call (the sum of
the chain's kernels / 16). The chains:

  la_pallas     the linear-attention kernel, B = 1, L = 8192, H = 16 (normalize=True), v <- out
  la_xla_matmul control: an XLA matmul of similar time, [32768, 1024] @ [1024, 1024]
  gl_pallas     the gated-linear kernel at 32000 rows (fc1 of based-360m + SwiGLU gate), x <- y[:, :1024]
  gl_xla        the same on XLA's gemm + gate fusion

Prints one line per chain. SMOKE=1 runs the XLA chains on the CPU (the script's own check).
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from based_jax import ops
from benchmarks import common

SMOKE = os.environ.get("SMOKE") == "1"
T0 = time.time()


def log(*parts):
  print(f"[{time.time() - T0:6.1f}s]", *parts, flush=True)


def chain(step, n: int):
  """jit of x -> step(x, *consts) applied n times in a row."""
  def run(x, *consts):
    for _ in range(n):
      x = step(x, *consts)
    return x
  return jax.jit(run)


def measure(name: str, step, x, *consts, n: int = 16):
  runs = {k: common.time_jax(chain(step, k), x, *consts) for k in (1, n)}
  walls = {k: r["wall_ms"] for k, r in runs.items()}
  per_call_wall = (walls[n] - walls[1]) / (n - 1)
  if SMOKE:
    log(f"{name:14s} wall/call {per_call_wall:.4f} ms (CPU: no kernel time)")
    return
  kernel = runs[n]["ms"] / n
  log(f"{name:14s} wall/call {per_call_wall:.4f} ms  kernel/call {kernel:.4f} ms  "
      f"difference {per_call_wall - kernel:+.4f} ms  (wall of 1 call {walls[1]:.4f}, of {n} "
      f"{walls[n]:.4f}) XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")


def main():
  rng = np.random.default_rng(0)
  bf16 = jnp.bfloat16

  def normal(*shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), bf16)

  batch, length = (1, 256) if SMOKE else (1, 8192)
  q, k, v = normal(batch, length, 16, 16), normal(batch, length, 16, 16), normal(batch, length, 16, 64)
  if not SMOKE:
    measure("la_pallas",                                   # v [B, L, H, 64] -> out [B, L, H, 64]
            lambda v, q, k: ops.linear_attention(q, k, v, normalize=True, impl="pallas")[0], v, q, k)
  rows = 512 if SMOKE else 32768
  w = normal(1024, 1024, scale=1 / 32)
  measure("la_xla_matmul", lambda x, w: x @ w, normal(rows, 1024), w)   # [rows, 1024]
  rows = 512 if SMOKE else 32000
  fc1 = normal(1024, 4096, scale=1 / 32)
  x = normal(rows, 1024)
  for impl in (("xla",) if SMOKE else ("pallas", "xla")):
    measure(f"gl_{impl}",                                   # x [rows, 1024] -> y [rows, 2048]
            lambda x, w, impl=impl: ops.gated_linear(x, w, dtype=bf16, impl=impl)[:, :1024], x, fc1)
  log("done")


if __name__ == "__main__":
  main()
