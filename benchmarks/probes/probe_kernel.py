"""Pallas kernel probe: stage ablation, KernelConfig knob sweep, per-kernel breakdown.

  PYTHONPATH=. OUT=/tmp python3 benchmarks/probes/probe_kernel.py   (SMOKE=1: CPU interpreter)
Appends to $OUT/probe2.log; session 2 output: benchmarks/results/session2/probe_kernel.log.
"""
import os, sys, time
import numpy as np
import jax, jax.numpy as jnp
sys.path.insert(0, os.getcwd())
from benchmarks import common
from pallas_kernels.based_attention import api
from pallas_kernels import based_attention as ba

SMOKE = os.environ.get("SMOKE") == "1"
OUT = os.environ.get("OUT", "/tmp")
LOG = open(os.path.join(OUT, "probe2.log"), "a")
T0 = time.time()
def log(*a):
  s = f"[{time.time()-T0:6.1f}s] " + " ".join(str(x) for x in a)
  print(s, flush=True); LOG.write(s + "\n"); LOG.flush()

from benchmarks.probes.stage_ablation import ablated_kernel
ka = ablated_kernel()

def inputs(B, L, H=16, DV=64):
  rng = np.random.default_rng(B * 7 + L)
  q = jnp.asarray(rng.standard_normal((B, L, H, 16)) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((B, L, H, 16)) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((B, L, H, DV)), jnp.bfloat16)
  return q, k, v

def timed(fn, *args):
  if SMOKE:
    jax.block_until_ready(fn(*args)); return {"ms": float("nan"), "wall_ms": float("nan")}
  return common.time_jax(fn, *args, iterations=20)

def breakdown(fn, *args, top=12, label=""):
  lines = common.kernel_breakdown(fn, *args, top=top)
  log(f"breakdown {label}: {lines[0]}")
  for line in lines[1:]:
    log(line)

L = 256 if SMOKE else 8192
interp = None
if SMOKE:
  from jax.experimental.pallas import mosaic_gpu as plgpu
  interp = plgpu.InterpretGPUParams()

# 1. stage ablation, single pass (planner waves -> 1 segment at B >= 16)
variants = [(), ("feat_q",), ("feat_k",), ("feat_q", "feat_k"), ("scores",), ("out_inter",),
            ("out_intra",), ("out_store",), ("state",), ("sb_store",),
            ("feat_q", "feat_k", "scores", "out_inter", "out_intra", "out_store", "state", "sb_store")]
api.BACKENDS["kernel"] = ka.segment_call
for B in ((1,) if SMOKE else (16, 128)):
  q, k, v = inputs(B, L)
  cfg = ba.KernelConfig(planner="waves")
  for skip in (variants[:2] if SMOKE else variants):
    ka.SKIP.clear(); ka.SKIP.update(skip); jax.clear_caches()
    fn = jax.jit(lambda q, k, v: ba.linear_attention(q, k, v, normalize=False, config=cfg, interpret=interp))
    try:
      t = timed(fn, q, k, v)
      log(f"ablate B={B} L={L} skip={'+'.join(skip) or 'none'}: {t['ms']:.4f} ms")
    except Exception as e:
      log(f"ablate B={B} skip={skip}: FAILED {type(e).__name__}: {str(e)[:300]}")
from pallas_kernels.based_attention import kernel as real_kernel
api.BACKENDS["kernel"] = real_kernel.segment_call
ka.SKIP.clear(); jax.clear_caches()
if SMOKE:
  log("smoke done"); sys.exit(0)

# 2. knob sweep
plan = {
  1: [dict(), dict(planner="waves"), dict(target_blocks=132), dict(target_blocks=528),
      dict(min_segment_chunks=8), dict(min_segment_chunks=2), dict(key_sums="xla"), dict(max_concurrent_steps=3)],
  16: [dict(), dict(planner="waves"), dict(max_concurrent_steps=3), dict(key_sums="xla"),
       dict(planner="waves", key_sums="xla"), dict(max_value_block=32), dict(max_value_block=32, planner="waves")],
  128: [dict(), dict(max_concurrent_steps=3), dict(key_sums="xla"), dict(max_value_block=32)],
  256: [dict(), dict(max_value_block=32)],
}
for B, cfgs in plan.items():
  q, k, v = inputs(B, L)
  for kw in cfgs:
    cfg = ba.KernelConfig(**kw)
    fn = jax.jit(lambda q, k, v, cfg=cfg: ba.linear_attention(q, k, v, normalize=False, config=cfg))
    try:
      t = timed(fn, q, k, v)
      log(f"knob B={B} L={L} {kw}: {t['ms']:.4f} ms (wall {t['wall_ms']:.3f})")
    except Exception as e:
      log(f"knob B={B} {kw}: FAILED {type(e).__name__}: {str(e)[:300]}")
  if B in (1, 16):
    fn = jax.jit(lambda q, k, v: ba.linear_attention(q, k, v, normalize=False))
    breakdown(fn, q, k, v, label=f"pallas default B={B}")
log("done")
