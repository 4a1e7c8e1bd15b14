"""Compiled prefill temporaries against the prompt length, and the largest buffers behind them.

  PYTHONPATH=. XLA_FLAGS=--xla_dump_to=/tmp/dump python3 benchmarks/probes/prefill_temp_memory.py \
      [--configs based-d64,attn-d64] [--lengths 4096,8192] [--dtype float32] [--dump /tmp/dump]

For each test config of `tests/based_jax/test_model.py` and length, compiles
`BasedLM.prefill` at B = 1 (as `test_prefill_memory_grows_linearly` does) and prints the
temporaries (`memory_analysis().temp_size_in_bytes`), their growth from one length to the
next (linear in L is x2 per doubling, an [L, L] buffer x4) and the program's largest array
(`tests/compiled_memory.py`). With `--dump DIR` (the directory that XLA_FLAGS=--xla_dump_to=DIR
names) it also prints the head of each prefill program's memory-usage report
(`*jit_apply*memory-usage-report.txt`): the largest slices of the buffer
assignment and the shapes of the values sharing each. On the H200 (s9d)
the fp32 prefill grew 2.28x (based-d64) and 3.29x (attn-d64) from 4096 to 8192 tokens; the
CPU gives 2.00x. s10 (session10_probe2.sh, session10_probe5.sh) found why: both 8192-token
programs send a gemm to cuBLASLt (a 32 MiB workspace; attn-d64's score gemm also keeps a second
[H, L, 256] block live) and neither 4096-token program does; from 8192 to 16384 tokens
attn-d64 grows x2.00, and no array comes near L * L bytes.
"""

import argparse
import functools
import sys
from pathlib import Path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="based-d64,attn-d64")
  parser.add_argument("--lengths", default="4096,8192")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--dump", help="the --xla_dump_to directory: print its memory-usage reports")
  parser.add_argument("--report-lines", type=int, default=14, help="lines of each report")
  args = parser.parse_args(argv)

  import jax
  import jax.numpy as jnp

  from based_jax import BasedLM
  from tests.based_jax.test_model import CONFIGS
  from tests.compiled_memory import largest_array_bytes

  print(f"backend {jax.default_backend()}, jax {jax.__version__}", flush=True)
  lengths = [int(x) for x in args.lengths.split(",")]
  for name in args.configs.split(","):
    model = BasedLM(CONFIGS[name], dtype=getattr(jnp, args.dtype))
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
    temps = []
    for length in lengths:
      fn = jax.jit(functools.partial(model.apply, max_length=length + 16, method=BasedLM.prefill))
      compiled = fn.lower(params, jax.ShapeDtypeStruct((1, length), jnp.int32)).compile()
      temps.append(compiled.memory_analysis().temp_size_in_bytes)
      growth = f" (x{temps[-1] / temps[-2]:.2f})" if len(temps) > 1 else ""
      shape, size = largest_array_bytes(compiled.as_text())
      print(f"{name} {args.dtype} L={length}: temporaries {temps[-1]:,} bytes{growth}; largest "
            f"array {shape} {size:,} bytes (L * L = {length * length:,})", flush=True)
  if args.dump:
    for path in sorted(Path(args.dump).glob("*jit_apply*memory-usage-report.txt")):
      print(f"-- {path.name}")
      print("\n".join(line[:220] for line in path.read_text().splitlines()[:args.report_lines]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
