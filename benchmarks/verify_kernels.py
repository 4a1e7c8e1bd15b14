"""Quick GPU check of the kernel implementations behind `based_jax.ops.linear_attention`.

For each implementation: relative error against the XLA chunked path computed in float32 at full
precision on the same bf16 inputs (outputs and final states, both variants, an initial state, odd
lengths, Dv 64 and 112), then the median kernel time at one large shape. Prints a table and writes
JSON. Meant to fit in about a minute of GPU time:

    PYTHONPATH=. python3 -m benchmarks.verify_kernels --impls pallas,ffi --out results.json
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from based_jax import ops

CASES = [  # (B, L, H, Dv, normalize, with initial state)
    (1, 65, 2, 64, True, False),
    (2, 1000, 4, 112, True, True),
    (3, 63, 16, 64, False, True),
    (1, 8193, 16, 64, True, False),
]


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def check(impl: str, rng) -> list[dict]:
  rows = []
  for b, length, h, dv, normalize, with_state in CASES:
    q, k = (jnp.asarray(rng.standard_normal((b, length, h, 16)), jnp.bfloat16) for _ in range(2))
    v = jnp.asarray(rng.standard_normal((b, length, h, dv)), jnp.bfloat16)
    state = None
    if with_state:  # a state a real earlier prefill produced
      k0 = jnp.asarray(rng.standard_normal((b, 40, h, 16)), jnp.float32)
      v0 = jnp.asarray(rng.standard_normal((b, 40, h, dv)), jnp.float32)
      _, state = ops.linear_attention(k0, k0, v0, normalize=True, impl="chunked")
    f32 = lambda x: x.astype(jnp.float32)
    want, want_state = ops.linear_attention(f32(q), f32(k), f32(v), normalize=normalize,
                                            initial_state=state, impl="chunked")
    got, got_state = jax.jit(lambda q, k, v, s: ops.linear_attention(
        q, k, v, normalize=normalize, initial_state=s, impl=impl))(q, k, v, state)
    rows.append({
        "impl": impl, "shape": [b, length, h, dv], "normalize": normalize,
        "initial_state": with_state, "finite": bool(jnp.isfinite(got.astype(jnp.float32)).all()),
        "out_rel_err": _rel(got, want), "kv_rel_err": _rel(got_state.kv, want_state.kv),
        "k_state_rel_err": _rel(got_state.k_state, want_state.k_state)})
    row = rows[-1]
    print(f"{impl:7s} {str(row['shape']):22s} norm={normalize!s:5s} init={with_state!s:5s} "
          f"out={row['out_rel_err']:.2e} kv={row['kv_rel_err']:.2e} "
          f"ks={row['k_state_rel_err']:.2e} finite={row['finite']}", flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--impls", default="pallas,ffi")
  parser.add_argument("--time-shape", default="256x8192", help="BxL timed at H=16, Dv=64")
  parser.add_argument("--out", default="verify_kernels.json")
  args = parser.parse_args()
  jax.config.update("jax_default_matmul_precision", "highest")  # the float32 reference
  from benchmarks.common import time_jax  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng()
  results = {"device": jax.devices()[0].device_kind, "checks": [], "timings": []}
  b, length = (int(x) for x in args.time_shape.split("x"))
  for impl in args.impls.split(","):
    results["checks"] += check(impl, rng)
    q, k = (jnp.asarray(rng.standard_normal((b, length, 16, 16)), jnp.bfloat16) for _ in range(2))
    v = jnp.asarray(rng.standard_normal((b, length, 16, 64)), jnp.bfloat16)
    fn = jax.jit(lambda q, k, v: ops.linear_attention(q, k, v, normalize=True, impl=impl))
    results["timings"].append({"impl": impl, "B": b, "L": length, "H": 16, "Dv": 64,
                               **time_jax(fn, q, k, v)})
    print(results["timings"][-1], flush=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  for row in results["timings"]:
    print(f"{row['impl']:7s} B={row['B']} L={row['L']}: {row['ms']:.3f} ms ({row['method']})")


if __name__ == "__main__":
  main()
