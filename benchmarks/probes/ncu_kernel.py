"""Runs the Pallas kernel a few times on one shape, for Nsight Compute to capture one launch.

  ncu --clock-control none --kernel-name regex:mosaic --launch-skip 2 --launch-count 1 \
      --set full --import-source yes -o REPORT \
      python3 benchmarks/probes/ncu_kernel.py --batch 16 --length 8192 [--normalize]

Arguments pick the shape (H = 16, Dv = 64 unless given) and KernelConfig fields; inputs are
random bf16. Prints the kernel's CUPTI time so the report can be matched to the benchmarks.
"""

import argparse

import jax
import jax.numpy as jnp

from pallas_kernels.based_attention import api
from pallas_kernels.based_attention.config import KernelConfig


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=8192)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--value-dim", type=int, default=64)
  parser.add_argument("--normalize", action="store_true")
  parser.add_argument("--runs", type=int, default=4)
  args = parser.parse_args()
  keys = jax.random.split(jax.random.key(0), 3)
  shape = (args.batch, args.length, args.heads)
  q = jax.random.normal(keys[0], shape + (16,), jnp.bfloat16)               # [B, L, H, 16]
  k = jax.random.normal(keys[1], shape + (16,), jnp.bfloat16)               # [B, L, H, 16]
  v = jax.random.normal(keys[2], shape + (args.value_dim,), jnp.bfloat16)   # [B, L, H, Dv]
  fn = jax.jit(lambda q, k, v: api.linear_attention(q, k, v, normalize=args.normalize,
                                                    config=KernelConfig()))
  for _ in range(args.runs):
    jax.block_until_ready(fn(q, k, v))
  print(f"ran B={args.batch} L={args.length} H={args.heads} Dv={args.value_dim} "
        f"normalize={args.normalize} x{args.runs}", flush=True)


if __name__ == "__main__":
  main()
