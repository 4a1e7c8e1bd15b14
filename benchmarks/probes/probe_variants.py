"""Probe of kernel variants (KernelConfig knobs) against the default Pallas kernel.

  PYTHONPATH=. python3 benchmarks/probes/probe_variants.py check:groups time:default,groups

check:NAME  relative error of variant NAME vs the float32 XLA chunked path (fresh random inputs
            each call; odd lengths, an initial state, both variants, Dv 64 and 112, segments).
time:NAMES  CUPTI median of 20 runs of each variant, L = 8192, H = 16, Dv = 64 (batch sizes:
            PROBE_TIME_BATCHES=1,16 for a subset, or PROBE_TIME_SHAPES=1x8192,4x1024).
kernels:NAMES  per-kernel CUPTI breakdown of each variant at B = 16 and 256 (L = 8192; other
            batch sizes with PROBE_BATCHES=1,4,...).
Variants: see VARIANTS. Session-3 output: benchmarks/results/session3/.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from based_jax.ops import LinearAttentionState, linear_attention
from benchmarks import common
from pallas_kernels import based_attention as ba

T0 = time.time()
KERNEL_BATCHES = tuple(int(b) for b in os.environ.get("PROBE_BATCHES", "16,256").split(","))
# time: batch sizes (normalize=False; all of them also run B = 128 with normalize=True)
TIME_BATCHES = os.environ.get("PROBE_TIME_BATCHES")
TIME_SHAPES = os.environ.get("PROBE_TIME_SHAPES")   # BxL list, e.g. 1x8192,4x1024n (n: normalize)
VARIANTS = {
    "default": {},
    "groups": {"schedule": "groups"},
    "two_waits": {"feature_waits": 2},
    "xla_ks": {"key_sums": "xla"},
    "vb32": {"max_value_block": 32},
    "static": {"fresh_views": False},        # the default before session 5
    "fresh": {"fresh_views": True},          # the default since session 5
    "fresh_two_waits": {"fresh_views": True, "feature_waits": 2},
    "fresh_3steps": {"fresh_views": True, "max_concurrent_steps": 3},
    "tb132": {"target_blocks": 132},        # B = 1, L = 8192: 8 segments instead of 16
    "tb66": {"target_blocks": 66},          # 4 segments
    "waves": {"planner": "waves"},          # the segment planner before session 5
    "sm": {"planner": "sm"},                # the segment planner since session 5
    "overlap": {"overlap_output": True},    # k features' first products with the outputs
    "regs": {"operand_staging": "registers"},  # psi_k^T, Gram left factor, P from registers
    "smem_t": {"operand_staging": "smem_t"},   # the same values staged in shared memory
    "regs_p": {"operand_staging": "p_registers"},  # only P from registers
}


def log(*parts):
  print(f"[{time.time() - T0:6.1f}s]", *parts, flush=True)


def inputs(rng, b, length, h, dv):
  q = jnp.asarray(rng.standard_normal((b, length, h, 16)) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((b, length, h, 16)) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((b, length, h, dv)), jnp.bfloat16)
  return q, k, v


def rel(a, r):
  a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
  return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30))


def check(name):
  ok = True
  rng = np.random.default_rng()
  cases = [  # b, length, h, dv, normalize, with_state, min_segment_chunks
      (1, 64, 1, 64, False, False, 4), (2, 1000, 4, 64, False, False, 4),
      (1, 333, 2, 112, True, True, 4), (2, 130, 2, 64, True, True, 1),
      (1, 4096, 4, 64, False, True, 1), (3, 8192, 16, 64, True, False, 4),
      (1, 8192, 16, 112, False, True, 4)]
  for b, length, h, dv, normalize, with_state, min_seg in cases:
    q, k, v = inputs(rng, b, length, h, dv)
    state = None
    if with_state:
      kv0 = jnp.asarray(rng.standard_normal((b, h, 273, dv)) * 0.1, jnp.float32)
      ks0 = jnp.asarray(rng.random((b, h, 273)) + 1.0, jnp.float32)
      state = LinearAttentionState(kv0, ks0)
    cfg = ba.KernelConfig(min_segment_chunks=min_seg, **VARIANTS[name])
    try:
      out, st = jax.block_until_ready(ba.linear_attention(
          q, k, v, normalize=normalize, initial_state=state, config=cfg))
    except Exception as e:  # pylint: disable=broad-except
      log(f"check {b} {length} {h} {dv} {normalize} {with_state}: FAILED {type(e).__name__}: "
          f"{str(e)[:2000]}")
      ok = False
      continue
    f32 = lambda x: x.astype(jnp.float32)
    ro, rst = linear_attention(f32(q), f32(k), f32(v), normalize=normalize, initial_state=state,
                               impl="chunked")
    errs = (rel(out.astype(jnp.float32), ro), rel(st.kv, rst.kv), rel(st.k_state, rst.k_state))
    finite = bool(jnp.isfinite(out.astype(jnp.float32)).all())
    good = finite and all(e < 1e-2 for e in errs)
    ok &= good
    log(f"check {name} B={b} L={length} H={h} Dv={dv} norm={normalize} state={with_state} "
        f"seg>={min_seg}: out {errs[0]:.2e} kv {errs[1]:.2e} ks {errs[2]:.2e} finite={finite} "
        f"{'OK' if good else 'BAD'}")
  log("CHECK", name, "OK" if ok else "BAD")


def timing(names):
  rng = np.random.default_rng(0)
  runs = [(b, 8192, False) for b in (1, 4, 16, 64, 128, 256)] + [(128, 8192, True)]
  if TIME_BATCHES:
    runs = [(int(b), 8192, False) for b in TIME_BATCHES.split(",")]
  if TIME_SHAPES:
    runs = [tuple(map(int, shape.rstrip("n").split("x"))) + (shape.endswith("n"),)
            for shape in TIME_SHAPES.split(",")]
  for b, length, normalize in runs:
    q, k, v = inputs(rng, b, length, 16, 64)
    for name in names:
      cfg = ba.KernelConfig(**VARIANTS[name])
      fn = jax.jit(lambda q, k, v, cfg=cfg, normalize=normalize: ba.linear_attention(
          q, k, v, normalize=normalize, config=cfg))
      try:
        t = common.time_jax(fn, q, k, v)
        log(f"time B={b} L={length} normalize={normalize} {name}: {t['ms']:.4f} ms "
            f"(floor {common.roofline_floor_ms(b, length, 16):.3f})")
      except Exception as e:  # pylint: disable=broad-except
        log(f"time B={b} {name}: FAILED {type(e).__name__}: {str(e)[:1500]}")


def kernels(names):
  rng = np.random.default_rng(0)
  for b in KERNEL_BATCHES:
    q, k, v = inputs(rng, b, 8192, 16, 64)
    for name in names:
      cfg = ba.KernelConfig(**VARIANTS[name])
      fn = jax.jit(lambda q, k, v, cfg=cfg: ba.linear_attention(q, k, v, normalize=False,
                                                                config=cfg))
      lines = common.kernel_breakdown(fn, q, k, v, top=8)
      log(f"kernels B={b} {name}: " + " | ".join(line.strip() for line in lines))


if __name__ == "__main__":
  log("device", jax.devices()[0].device_kind, "jax", jax.__version__)
  for part in sys.argv[1:]:
    what, names = part.split(":")
    if what == "check":
      check(names)
    elif what == "kernels":
      kernels(names.split(","))
    else:
      timing(names.split(","))
  log("done")
