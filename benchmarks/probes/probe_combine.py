"""Times the XLA combine between the Pallas kernel's two passes on its own (B = 1, L = 8192,
H = 16, Dv = 64: 16 segments), as jnp.cumsum (api.forward's code) and as S running additions
(tried in session 4: the same time on the H200, run s4e), each followed by the bf16 hi/lo split
of the start states.

  PYTHONPATH=. python3 benchmarks/probes/probe_combine.py
"""

import jax
import jax.numpy as jnp

from benchmarks import common
from pallas_kernels.based_attention import api

SEGMENTS, HEADS, PSI, DV = 16, 16, 192, 64


def with_cumsum(seg_s, seg_ks):
  incl_s, incl_ks = jnp.cumsum(seg_s, axis=2), jnp.cumsum(seg_ks, axis=2)
  start_s, start_ks = incl_s - seg_s, incl_ks - seg_ks
  init, _ = api._kernel_init(start_s, start_ks, with_ks=False)  # pylint: disable=protected-access
  return init, incl_s[:, :, -1], incl_ks[:, :, -1]


def segment_prefix(x):
  """(exclusive prefix sums over axis 2, total) of x [B, H, S, ...] as S running additions."""
  parts = [jnp.zeros_like(x[:, :, 0])]
  for i in range(x.shape[2] - 1):
    parts.append(parts[-1] + x[:, :, i])
  return jnp.stack(parts, axis=2), parts[-1] + x[:, :, -1]


def with_prefix(seg_s, seg_ks):
  excl_s, total_s = segment_prefix(seg_s)
  excl_ks, total_ks = segment_prefix(seg_ks)
  init, _ = api._kernel_init(excl_s, excl_ks, with_ks=False)  # pylint: disable=protected-access
  return init, total_s, total_ks


def main():
  keys = jax.random.split(jax.random.key(0), 2)
  seg_s = jax.random.normal(keys[0], (1, HEADS, SEGMENTS, PSI, DV), jnp.float32)
  seg_ks = jax.random.normal(keys[1], (1, HEADS, SEGMENTS, PSI), jnp.float32)
  for name, fn in (("cumsum", with_cumsum), ("segment_prefix", with_prefix)):
    fn = jax.jit(fn)
    t = common.time_jax(fn, seg_s, seg_ks)
    lines = [t["method"]]
    if jax.default_backend() == "gpu":
      lines = common.kernel_breakdown(fn, seg_s, seg_ks, top=6)
    print(f"combine {name}: {t['ms']:.4f} ms | " + " | ".join(x.strip() for x in lines),
          flush=True)


if __name__ == "__main__":
  main()
