"""Pallas kernel probe: stage ablation, KernelConfig knob sweep, per-kernel breakdown.

  PYTHONPATH=. OUT=/tmp python3 benchmarks/probes/probe_kernel.py   (SMOKE=1: CPU interpreter)

PROBE_PARTS=ablation (or knobs) runs one part only; both by default.

Appends to $OUT/probe2.log; session-2 output: benchmarks/results/session2/probe_kernel.log.
When session 2 ran it, KernelConfig() meant planner="fill": the log's `{}` rows and the "default"
breakdowns are the fill planner; this script now pins planner="fill" where it meant that.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.probes.stage_ablation import ablated_kernel
from pallas_kernels import based_attention as ba
from pallas_kernels.based_attention import api
from pallas_kernels.based_attention import kernel as real_kernel

SMOKE = os.environ.get("SMOKE") == "1"
PARTS = os.environ.get("PROBE_PARTS", "ablation,knobs").split(",")
LENGTH = 256 if SMOKE else 8192
STAGES = ("feat_q", "feat_k", "scores", "out_inter", "out_intra", "out_store", "state", "sb_store")
ABLATIONS = [(), ("feat_q",), ("feat_k",), ("feat_q", "feat_k"), ("scores",), ("out_inter",),
             ("out_intra",), ("out_store",), ("state",), ("sb_store",), STAGES]
FILL = dict(planner="fill")
KNOBS = {  # batch -> KernelConfig keyword sets, L = 8192, H = 16, Dv = 64
    1: [FILL, dict(planner="waves"), dict(FILL, target_blocks=132), dict(FILL, target_blocks=528),
        dict(FILL, min_segment_chunks=8), dict(FILL, min_segment_chunks=2),
        dict(FILL, key_sums="xla"), dict(FILL, max_concurrent_steps=3)],
    16: [FILL, dict(planner="waves"), dict(FILL, max_concurrent_steps=3), dict(FILL, key_sums="xla"),
         dict(planner="waves", key_sums="xla"), dict(FILL, max_value_block=32),
         dict(max_value_block=32, planner="waves")],
    128: [FILL, dict(FILL, max_concurrent_steps=3), dict(FILL, key_sums="xla"),
          dict(FILL, max_value_block=32)],
    256: [FILL, dict(FILL, max_value_block=32)],
}


class Log:
  def __init__(self, path):
    self.file = open(path, "a")
    self.t0 = time.time()

  def __call__(self, *parts):
    line = f"[{time.time() - self.t0:6.1f}s] " + " ".join(str(p) for p in parts)
    print(line, flush=True)
    self.file.write(line + "\n")
    self.file.flush()


def inputs(batch, length, heads=16, dv=64):
  rng = np.random.default_rng(batch * 7 + length)
  q = jnp.asarray(rng.standard_normal((batch, length, heads, 16)) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((batch, length, heads, 16)) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((batch, length, heads, dv)), jnp.bfloat16)
  return q, k, v


def timed(fn, *args):
  if SMOKE:
    jax.block_until_ready(fn(*args))
    return {"ms": float("nan"), "wall_ms": float("nan")}
  return common.time_jax(fn, *args, iterations=20)


def stage_ablation(log):
  """Times the kernel with stages left out, one segment (planner waves at B >= 16)."""
  ablated = ablated_kernel()
  interpret = None
  if SMOKE:
    from jax.experimental.pallas import mosaic_gpu as plgpu  # pylint: disable=g-import-not-at-top
    interpret = plgpu.InterpretGPUParams()
  # The edits cover the shared-memory operand path (stage_ablation.py), not the register one.
  config = ba.KernelConfig(planner="waves", operand_staging="smem")
  api.BACKENDS["kernel"] = ablated.segment_call
  try:
    for batch in ((1,) if SMOKE else (16, 128)):
      q, k, v = inputs(batch, LENGTH)
      for skip in (ABLATIONS[:2] if SMOKE else ABLATIONS):
        ablated.SKIP.clear()
        ablated.SKIP.update(skip)
        jax.clear_caches()       # SKIP is read at trace time
        fn = jax.jit(lambda q, k, v: ba.linear_attention(
            q, k, v, normalize=False, config=config, interpret=interpret))
        try:
          t = timed(fn, q, k, v)
          log(f"ablate B={batch} L={LENGTH} skip={'+'.join(skip) or 'none'}: {t['ms']:.4f} ms")
        except Exception as e:  # pylint: disable=broad-except
          log(f"ablate B={batch} skip={skip}: FAILED {type(e).__name__}: {str(e)[:300]}")
  finally:
    api.BACKENDS["kernel"] = real_kernel.segment_call
    jax.clear_caches()


def knob_sweep(log):
  for batch, configs in KNOBS.items():
    q, k, v = inputs(batch, LENGTH)
    for kw in configs:
      config = ba.KernelConfig(**kw)
      fn = jax.jit(lambda q, k, v, config=config: ba.linear_attention(
          q, k, v, normalize=False, config=config))
      try:
        t = timed(fn, q, k, v)
        log(f"knob B={batch} L={LENGTH} {kw}: {t['ms']:.4f} ms (wall {t['wall_ms']:.3f})")
      except Exception as e:  # pylint: disable=broad-except
        log(f"knob B={batch} {kw}: FAILED {type(e).__name__}: {str(e)[:300]}")
    if batch in (1, 16):
      fn = jax.jit(lambda q, k, v: ba.linear_attention(
          q, k, v, normalize=False, config=ba.KernelConfig(**FILL)))
      lines = common.kernel_breakdown(fn, q, k, v, top=12)
      log(f"breakdown pallas fill B={batch}: {lines[0]}")
      for line in lines[1:]:
        log(line)


def main():
  log = Log(os.path.join(os.environ.get("OUT", "/tmp"), "probe2.log"))
  if "ablation" in PARTS:
    stage_ablation(log)
  if SMOKE:
    log("smoke done")
    return
  if "knobs" in PARTS:
    knob_sweep(log)
  log("done")


if __name__ == "__main__":
  main()
