"""Compile the CUDA kernel into the shared library that the XLA FFI loads.

Usage (one command; needs nvcc with sm_90a support and jaxlib's FFI headers, no GPU):

    python -m ffi.build [--out DIR] [--nvcc PATH]

Without --out the library goes to the per-user cache `~/.cache/based_jax/ffi/<key>/`, where <key>
hashes the CUDA source, the nvcc flags and the jaxlib version, so a changed source or an upgraded
jaxlib gets a fresh build. `BASED_JAX_CACHE_DIR` moves the cache root. The build targets sm_90a
(H100/H200) only: the kernel is Hopper-specific.
"""

import argparse
import sys

from ffi._compile import BuildError, build


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ffi.build", description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="output directory (default: the per-user cache)")
  parser.add_argument("--nvcc", help="nvcc to use (default: found on PATH / CUDA_HOME)")
  parser.add_argument("-v", "--verbose", action="store_true", help="print the nvcc command")
  args = parser.parse_args(argv)
  try:
    path = build(args.out, nvcc=args.nvcc, verbose=args.verbose)
  except BuildError as e:
    print(f"ffi.build: {e}", file=sys.stderr)
    return 1
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
