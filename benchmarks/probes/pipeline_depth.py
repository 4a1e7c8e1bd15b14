"""Pallas TMA pipeline depth (max_concurrent_steps 2 vs 3) at L 8192, H 16 (GPU only).

  PYTHONPATH=. python3 benchmarks/probes/pipeline_depth.py
Session 2 output: benchmarks/results/session2/final_gpu0.log (knob3 lines), measured on the
kernel of 7271c43 (P and output tile in one buffer, which made room for a third stage).
"""
import numpy as np, jax, jax.numpy as jnp
from benchmarks import common
from pallas_kernels import based_attention as ba
L = 8192
for B, norm, mcs in [(1, False, 2), (4, False, 2), (16, False, 2), (16, False, 3), (128, False, 2), (128, False, 3),
                     (256, False, 2), (256, False, 3), (128, True, 2), (128, True, 3)]:
  rng = np.random.default_rng(B)
  q = jnp.asarray(rng.standard_normal((B, L, 16, 16)) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((B, L, 16, 16)) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((B, L, 16, 64)), jnp.bfloat16)
  cfg = ba.KernelConfig(max_concurrent_steps=mcs)
  fn = jax.jit(lambda q, k, v: ba.linear_attention(q, k, v, normalize=norm, config=cfg))
  try:
    t = common.time_jax(fn, q, k, v, iterations=20)
    print(f"knob3 B={B} normalize={norm} mcs={mcs}: {t['ms']:.4f} ms (wall {t['wall_ms']:.3f})", flush=True)
  except Exception as e:
    print(f"knob3 B={B} normalize={norm} mcs={mcs}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
