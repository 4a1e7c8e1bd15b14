"""Probe of the gated-linear Pallas kernel (SwiGLU fc1 + gate) against XLA's gemm + gate.

  PYTHONPATH=. python3 benchmarks/probes/probe_gated_linear.py [ROWS ...]

At based-360m's fc1 (K = 1024, 2N = 4096) for each row count (default 32000 = B 4 x L 8000,
256 = a B = 256 decode step, 1024000 = B 128 x L 8000): the XLA path of the model (bf16 gemm
writing h, then value * silu(gate)) and the kernel under several GatedLinearConfig tilings
("default": api.default_config), as CUPTI medians (benchmarks.common.time_jax) with TFLOP/s
against the 790 TFLOP/s peak, and each kernel's relative error against the XLA path. Prints one
line per measurement.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops import gated_linear_xla
from benchmarks import common
from pallas_kernels.gated_linear import GatedLinearConfig, gated_linear

T0 = time.time()
CONFIGS = {
    "default": None,                                # api.default_config(rows)
    "m128_n64_s4": GatedLinearConfig(),
    "m128_n64_s3": GatedLinearConfig(max_concurrent_steps=3),
    "m128_n64_s2": GatedLinearConfig(max_concurrent_steps=2),
    "m64_n64_s2": GatedLinearConfig(tile_m=64, max_concurrent_steps=2),   # 2 blocks per SM
    "m64_n128_s3": GatedLinearConfig(tile_m=64, tile_n=128, max_concurrent_steps=3),
    "persistent": GatedLinearConfig(persistent=True),
    "persistent_s3": GatedLinearConfig(max_concurrent_steps=3, persistent=True),
    "persistent_m64": GatedLinearConfig(tile_m=64, max_concurrent_steps=2, persistent=True),
}


def log(*parts):
  print(f"[{time.time() - T0:6.1f}s]", *parts, flush=True)


def main(rows_list):
  k, hidden = 1024, 2048
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((k, 2 * hidden)) / 32, jnp.bfloat16)
  for rows in rows_list:
    x = jax.random.normal(jax.random.key(rows), (rows, k), jnp.bfloat16)
    flops = 2 * rows * k * 2 * hidden
    xla = jax.jit(lambda x, w: gated_linear_xla(x, w, dtype=jnp.bfloat16))
    want = xla(x, w).astype(jnp.float32)
    t = common.time_jax(xla, x, w)
    log(f"rows={rows} xla: {t['ms']:.4f} ms ({flops / t['ms'] / 1e9:.0f} TFLOP/s; floor "
        f"{flops / common.PEAK_FLOPS * 1e3:.4f} ms)")
    for name, config in CONFIGS.items():
      fn = jax.jit(lambda x, w, config=config: gated_linear(x, w, config=config))
      try:
        got = fn(x, w).astype(jnp.float32)
        err = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
        t = common.time_jax(fn, x, w)
        log(f"rows={rows} {name}: {t['ms']:.4f} ms ({flops / t['ms'] / 1e9:.0f} TFLOP/s), "
            f"rel. err vs xla {err:.2e}")
      except Exception as e:  # pylint: disable=broad-except
        log(f"rows={rows} {name}: FAILED {type(e).__name__}: {str(e)[:1500]}")
  log("done")


if __name__ == "__main__":
  log("device", jax.devices()[0].device_kind, "jax", jax.__version__)
  main([int(r) for r in sys.argv[1:]] or [32000, 256, 1024000])
