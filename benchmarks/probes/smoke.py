"""Quick GPU check of the Pallas kernel vs the float32 XLA path; exit 1 past 1e-2 relative error.

  PYTHONPATH=. python3 benchmarks/probes/smoke.py
"""
import sys
import numpy as np, jax.numpy as jnp
from pallas_kernels import based_attention as ba
from based_jax.ops import linear_attention
ok = True
for (b, l, h, dv, norm) in [(2, 1000, 4, 64, False), (1, 333, 2, 112, True), (3, 8192, 16, 64, False)]:
  rng = np.random.default_rng()
  q = jnp.asarray(rng.standard_normal((b, l, h, 16)) * 0.5, jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((b, l, h, 16)) * 0.5, jnp.bfloat16)
  v = jnp.asarray(rng.standard_normal((b, l, h, dv)), jnp.bfloat16)
  o, st = ba.linear_attention(q, k, v, normalize=norm)
  o2, st2 = linear_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), normalize=norm, impl="chunked")
  rel = lambda a, r: float(jnp.linalg.norm((a.astype(jnp.float32) - r).ravel()) / jnp.linalg.norm(r.ravel()))
  errs = (rel(o, o2), rel(st.kv, st2.kv), rel(st.k_state, st2.k_state))
  print(b, l, h, dv, norm, errs, flush=True)
  ok &= all(e < 1e-2 for e in errs) and bool(jnp.isfinite(o.astype(jnp.float32)).all())
print("SMOKE", "OK" if ok else "BAD")
sys.exit(0 if ok else 1)
