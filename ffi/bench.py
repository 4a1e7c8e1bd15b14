"""Time the CUDA kernels on a Hopper GPU and write the results as JSON.

    python -m ffi.bench [--out benchmarks/results/ffi.json] [--iterations 30]
                        [--kernel wgmma|wgmma_smem|mma_sync|wgmma_gram|all|K1,K2,...] [--batches 1,16,256]
                        [--segments 0,4,8,16,32] [--segment-batches 1,4]

--kernel names one of ffi.linear_attention's kernels (default: its default, "wgmma"), a comma-separated
list of them, or all of them. --segments times each case once per segment count (ffi.linear_attention's
segments=, wgmma kernels only; 0 = the kernel's automatic choice, the default); with --segment-batches
the nonzero counts run at those batch sizes only (a segment sweep at small batches beside an automatic
batch sweep, in one process). "wgmma_gram" with normalize=True is the "wgmma" launch, so those cases
are skipped.

Shapes: H=16, Dv=64, L=8192 with B in {1, 4, 16, 64, 128, 256}, and B=16 with L from 1k to 64k,
normalize=True (--both adds the batch sweep with normalize=False). Each time is the median over
`--iterations` runs of the summed GPU kernel time of one call, measured with CUPTI
(`jax.experimental.mosaic.gpu.profiler.measure`) after a warm-up call; inputs are random normal
bf16. FLOP counts use 80,128 FLOP per token and head (chunked algorithm: 4 * 273 * Dv for phi(Q) S
and S += phi(K)^T V, plus 160 * 64 for the 64-token intra-chunk block).
"""

import argparse
import functools
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import ffi
from ffi import based_attention as ffi_kernels

HEADS = 16
VALUE_DIM = 64
BATCH_SWEEP = (1, 4, 16, 64, 128, 256)
LENGTH_SWEEP = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
FLOP_PER_TOKEN_HEAD = 4 * 273 * VALUE_DIM + 160 * 64


@functools.lru_cache(maxsize=2)  # kernels and segment counts of one case share the inputs (B = 256: 6.4 GB each)
def _inputs(batch: int, length: int, seed: int = 0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (batch, length, HEADS, 16), jnp.bfloat16)  # [B, L, H, F]
  k = jax.random.normal(kk, (batch, length, HEADS, 16), jnp.bfloat16)  # [B, L, H, F]
  v = jax.random.normal(kv, (batch, length, HEADS, VALUE_DIM), jnp.bfloat16)  # [B, L, H, Dv]
  return q, k, v


def time_case(batch: int, length: int, normalize: bool, iterations: int,
              kernel: str = ffi_kernels.DEFAULT_KERNEL, segments: int = 0) -> dict:
  from jax.experimental.mosaic.gpu import profiler

  q, k, v = _inputs(batch, length)
  fn = jax.jit(lambda q, k, v: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-12, initial_state=None,
                                                    kernel=kernel, segments=segments))
  jax.block_until_ready(fn(q, k, v))  # compile + warm-up
  _, times = profiler.measure(fn, iterations=iterations)(q, k, v)
  median_ms = statistics.median(times)
  flops = FLOP_PER_TOKEN_HEAD * batch * length * HEADS
  return {
      "kernel": kernel, "segments": segments, "B": batch, "L": length, "H": HEADS, "Dv": VALUE_DIM,
      "normalize": normalize,
      "median_ms": median_ms, "min_ms": min(times), "max_ms": max(times), "runs": len(times),
      "tflops": flops / (median_ms * 1e-3) / 1e12,
  }


def breakdown(batch: int, length: int, kernel: str, segments: int = 0) -> list[str]:
  """Per-kernel CUPTI times of one call (benchmarks.common.kernel_breakdown): normalize=True, except
  for wgmma_gram (normalize=False, the launch it changes)."""
  from benchmarks.common import kernel_breakdown

  normalize = kernel != "wgmma_gram"
  q, k, v = _inputs(batch, length)
  fn = jax.jit(lambda q, k, v: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-12, initial_state=None,
                                                    kernel=kernel, segments=segments))
  return kernel_breakdown(fn, q, k, v)


def parse_kernels(text: str) -> tuple[str, ...]:
  """--kernel: "all", one kernel or a comma-separated list (argparse error for unknown names)."""
  if text == "all":
    return ffi_kernels.KERNELS
  names = tuple(x for x in text.split(",") if x)
  bad = [x for x in names if x not in ffi_kernels.KERNELS]
  if bad or not names:
    raise argparse.ArgumentTypeError(f"unknown kernel(s) {bad or text!r}; choose from {ffi_kernels.KERNELS} or all")
  return names


def parse_segments(text: str) -> tuple[int, ...]:
  """--segments: comma-separated segment counts, each checked like ffi.linear_attention does."""
  try:
    counts = tuple(int(x) for x in text.split(",") if x)
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--segments takes comma-separated ints; got {text!r}") from e
  for s in counts:
    if not 0 <= s <= ffi_kernels.MAX_SEGMENTS:
      raise argparse.ArgumentTypeError(f"--segments: each count in [0, {ffi_kernels.MAX_SEGMENTS}]; got {s}")
  return counts or (0,)


def runs(kernels, segment_counts, normalize: bool, sweep: bool = True):
  """(kernel, segments) pairs to time for one case: mma_sync only at 0 (automatic), wgmma_gram only
  without normalization (with it, it is the wgmma launch); sweep=False: segment count 0 only."""
  for kernel in kernels:
    if kernel == "wgmma_gram" and normalize:
      continue
    for segments in segment_counts:
      if segments and (not kernel.startswith("wgmma") or not sweep):
        continue
      yield kernel, segments


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ffi.bench", description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="benchmarks/results/ffi.json")
  parser.add_argument("--iterations", type=int, default=30)
  parser.add_argument("--quick", action="store_true", help="L=8192 batch sweep only, normalize=True")
  parser.add_argument("--both", action="store_true", help="also the batch sweep with normalize=False")
  parser.add_argument("--kernel", default=(ffi_kernels.DEFAULT_KERNEL,), type=parse_kernels,
                      help="which kernel(s) to time: one of " + ", ".join(ffi_kernels.KERNELS) + ", a "
                      "comma-separated list, or all (default: ffi.linear_attention's default); wgmma_gram is "
                      "timed with normalize=False only")
  parser.add_argument("--segments", default=(0,), type=parse_segments,
                      help="comma-separated sequence-segment counts to time each wgmma case with "
                      "(ffi.linear_attention(segments=...); 0 = automatic, the default; mma_sync runs at 0 only)")
  parser.add_argument("--segment-batches", default="",
                      help="comma-separated batch sizes at which the nonzero --segments counts run (default: "
                      "every batch size); the other cases run with automatic segments (if 0 is among --segments)")
  parser.add_argument("--breakdown-batches", default="",
                      help="after timing, print the per-kernel CUPTI breakdown of one call at these batch sizes "
                      "(L=8192, normalize=True; wgmma_gram: normalize=False), for each timed kernel, at the first "
                      "--segments count")
  parser.add_argument("--batches", help="comma-separated batch sizes for the L=8192 sweep (default: "
                      + ",".join(map(str, BATCH_SWEEP)) + ")")
  args = parser.parse_args(argv)
  batches = tuple(int(x) for x in args.batches.split(",")) if args.batches else BATCH_SWEEP
  kernels = args.kernel
  sweep_batches = {int(x) for x in args.segment_batches.split(",") if x}
  reason = ffi.unavailable_reason(*_inputs(1, 64))
  if reason is not None:
    print(f"ffi.bench: cannot run: {reason}", file=sys.stderr)
    return 1
  cases = [(b, 8192, True) for b in batches]
  if args.both:
    cases += [(b, 8192, False) for b in batches]
  if not args.quick:
    cases += [(16, length, True) for length in LENGTH_SWEEP if length != 8192]
  results = []
  for batch, length, normalize in cases:
    sweep = not sweep_batches or (batch in sweep_batches and length == 8192)
    for kernel, segments in runs(kernels, args.segments, normalize, sweep):
      label = f"{kernel:10s} seg={segments if segments else 'auto':>4}"
      try:
        row = time_case(batch, length, normalize, args.iterations, kernel, segments)
      except Exception as e:  # one failing kernel must not hide the other's numbers
        print(f"{label} B={batch:4d} L={length:6d}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
        results.append({"kernel": kernel, "segments": segments, "B": batch, "L": length, "normalize": normalize,
                        "error": f"{type(e).__name__}: {str(e)[:1000]}"})
        continue
      results.append(row)
      print(f"{label} B={batch:4d} L={length:6d} normalize={normalize!s:5}  median {row['median_ms']:.4f} ms  "
            f"({row['tflops']:.0f} TFLOP/s at {FLOP_PER_TOKEN_HEAD} FLOP/token-head)", flush=True)
      with open(args.out, "w") as f:  # after every case, so a timeout keeps what was measured
        json.dump({"partial": True, "results": results}, f, indent=1)
  for batch in (int(x) for x in args.breakdown_batches.split(",") if x):
    for kernel in kernels:
      try:
        for line in breakdown(batch, 8192, kernel, args.segments[0] if kernel.startswith("wgmma") else 0):
          print(f"breakdown {kernel} B={batch}: {line}", flush=True)
      except Exception as e:
        print(f"breakdown {kernel} B={batch}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
  device = jax.devices()[0]
  report = {
      "what": "ffi CUDA kernels (" + ", ".join(kernels) + "), forward, bf16 in/out, fp32 state; median GPU "
              "kernel time per call (all kernels of the jitted call, layout gathers included)",
      "timer": f"jax.experimental.mosaic.gpu.profiler.measure (CUPTI), {args.iterations} runs after warm-up",
      "device": device.device_kind, "jax": jax.__version__, "python": platform.python_version(),
      "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "results": results,
  }
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
