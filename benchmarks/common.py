"""Timing helpers shared by the benchmarks: device-synchronised medians after warm-up."""

import statistics
import time
from typing import Any, Callable

# H200 ceilings measured on this workplace's machines (kernels.md section 3.1).
PEAK_FLOPS = 790e12          # dense bf16 matmul, FLOP/s
PEAK_BYTES = 4.3e12          # device copy bandwidth (read + write), B/s
FLOP_PER_TOKEN_HEAD = 80_128  # chunked Based forward, 273 features, C = 64, Dv = 64
BYTES_PER_TOKEN_HEAD = 320    # read q, k, v and write o once, bf16, Dv = 64


def roofline_floor_ms(batch: int, length: int, heads: int) -> float:
  """max(compute, memory) floor of the Based prefill forward at Dv = 64, in milliseconds."""
  token_heads = batch * length * heads
  state_bytes = batch * heads * 273 * 64 * 2       # the returned state, bf16 as in section 3.2
  compute = token_heads * FLOP_PER_TOKEN_HEAD / PEAK_FLOPS
  memory = (token_heads * BYTES_PER_TOKEN_HEAD + state_bytes) / PEAK_BYTES
  return 1e3 * max(compute, memory)


def time_jax(fn: Callable[..., Any], *args, iterations: int = 20) -> dict:
  """Median device time of a jitted JAX function.

  Uses `jax.experimental.mosaic.gpu.profiler.measure` (CUPTI: the sum of the kernels of one call,
  launch gaps excluded) after a warm-up call; also records the host wall time per call
  (block_until_ready each call, so launch and dispatch overheads included).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic.gpu import profiler  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(fn(*args))                  # compile + warm-up
  jax.block_until_ready(fn(*args))
  wall = []
  for _ in range(iterations):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    wall.append(1e3 * (time.perf_counter() - start))
  if jax.default_backend() != "gpu":                # CPU smoke runs: host wall time only
    return {"ms": statistics.median(wall), "wall_ms": statistics.median(wall),
            "runs": len(wall), "method": "host wall time (no GPU), median"}
  _, per_call = profiler.measure(fn, iterations=iterations)(*args)
  return {"ms": statistics.median(per_call), "wall_ms": statistics.median(wall),
          "runs": len(per_call), "method": "cupti kernel time (profiler.measure), median"}


def time_torch(fn: Callable[[], Any], iterations: int = 20) -> dict:
  """Median CUDA-event time of a PyTorch callable (launch gaps inside the call included)."""
  import torch  # pylint: disable=g-import-not-at-top

  fn()
  fn()
  torch.cuda.synchronize()
  times = []
  for _ in range(iterations):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end))
  return {"ms": statistics.median(times), "runs": len(times),
          "method": "torch.cuda.Event around one call, median"}


def kernel_breakdown(fn: Callable[..., Any], *args, top: int = 12) -> list[str]:
  """CUPTI time of every kernel of one call of a jitted function, summed by kernel name.

  Returns report lines, the largest first: a header with the kernel count and total, then
  `ms  xcount  name` for the `top` names.
  """
  import collections  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic.gpu import profiler  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(fn(*args))
  _, per_kernel = profiler.measure(fn, aggregate=False)(*args)
  totals = collections.defaultdict(lambda: [0.0, 0])
  for name, ms in per_kernel:
    totals[name[:90]][0] += ms
    totals[name[:90]][1] += 1
  lines = [f"{len(per_kernel)} kernels, sum {sum(t[0] for t in totals.values()):.4f} ms"]
  for name, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
    lines.append(f"   {ms:9.4f} ms  x{count:4d}  {name}")
  return lines
