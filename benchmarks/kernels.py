"""Benchmark of the Based linear-attention prefill forward: Pallas vs FFI vs XLA vs FLA (Triton).

Times, on the same bf16 inputs (q, k [B, L, H, 16], v [B, L, H, 64]):
  pallas         pallas_kernels.linear_attention (Mosaic GPU), normalize=False, KernelConfig()
  pallas_fill    the same with KernelConfig(planner="fill") (opt-in: --impls pallas,pallas_fill)
  pallas_xla_ks  KernelConfig(key_sums="xla") (opt-in, like pallas_fill)
  ffi            ffi.linear_attention (CUDA via the XLA FFI; its default kernel, "wgmma"), when
                 ffi.unavailable_reason is None
  ffi_mma_sync   the same with kernel="mma_sync", the first CUDA kernel (opt-in, like pallas_fill)
  xla_chunked    based_jax.ops.linear_attention(impl="chunked")
  fla_parallel   fla.ops.based.parallel_based(use_norm=False)      (fla-core, PyTorch + Triton)
  fla_chunk      fla.ops.based.fused_chunk_based(use_norm=False)
JAX impls are timed with CUPTI (`profiler.measure`), torch ones with CUDA events; medians of
>= 20 runs after warm-up. Writes JSON (and PNG plots of time vs batch and time vs length with the
roofline floor of kernels.md section 3) to --out-dir.

  python -m benchmarks.kernels --out-dir benchmarks/results
"""

import argparse
import json
import os
import platform
import time
import traceback

import numpy as np

from benchmarks import common

BATCH_SWEEP = [(b, 8192) for b in (1, 4, 16, 64, 128, 256)]
LENGTH_SWEEP = [(16, n) for n in (1024, 2048, 4096, 8192, 16384, 32768, 65536)]
LONG_SWEEP = [(1, n) for n in (8192, 16384, 32768, 65536, 131072)]
IMPLS = ("pallas", "pallas_fill", "pallas_xla_ks", "ffi", "ffi_mma_sync", "xla_chunked",
         "fla_parallel", "fla_chunk")
# The XLA chunked path materialises per-chunk states: at B = 256, L = 8192, H = 16 it asked for
# 80 GiB and the allocator's retries stalled the run, so it is skipped above B = 128 there.
XLA_CHUNKED_MAX_TOKEN_HEADS = 128 * 8192 * 16
DEFAULT_IMPLS = ("pallas", "ffi", "xla_chunked", "fla_parallel", "fla_chunk")


def _jax_impl(name):
  import jax  # pylint: disable=g-import-not-at-top

  if name in ("pallas", "pallas_fill", "pallas_xla_ks"):
    from pallas_kernels import based_attention  # pylint: disable=g-import-not-at-top
    config = {"pallas": based_attention.KernelConfig(),
              "pallas_fill": based_attention.KernelConfig(planner="fill"),
              "pallas_xla_ks": based_attention.KernelConfig(key_sums="xla")}[name]
    fn = lambda q, k, v: based_attention.linear_attention(
        q, k, v, normalize=False, eps=1e-12, initial_state=None, config=config)
    return jax.jit(fn), based_attention.unavailable_reason
  if name in ("ffi", "ffi_mma_sync"):
    import ffi  # pylint: disable=g-import-not-at-top
    kernel = {"ffi": {}, "ffi_mma_sync": {"kernel": "mma_sync"}}[name]
    fn = lambda q, k, v: ffi.linear_attention(q, k, v, normalize=False, eps=1e-12,
                                              initial_state=None, **kernel)
    return jax.jit(fn), ffi.unavailable_reason
  if name == "xla_chunked":
    from based_jax.ops import linear_attention  # pylint: disable=g-import-not-at-top
    fn = lambda q, k, v: linear_attention(q, k, v, normalize=False, impl="chunked")
    return jax.jit(fn), lambda *_: None
  raise ValueError(name)


def _torch_impl(name):
  from fla.ops.based import fused_chunk_based, parallel_based  # pylint: disable=g-import-not-at-top
  op = parallel_based if name == "fla_parallel" else fused_chunk_based
  return op


def _inputs(batch, length, heads, dv, seed):
  rng = np.random.default_rng(seed)
  q = (rng.standard_normal((batch, length, heads, 16), np.float32) * 0.5)
  k = (rng.standard_normal((batch, length, heads, 16), np.float32) * 0.5)
  v = rng.standard_normal((batch, length, heads, dv), np.float32)
  return q, k, v


def run(shapes, impls, heads, dv, iterations, max_call_s, on_row=lambda rows: None):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  results = []
  for batch, length in shapes:
    q, k, v = _inputs(batch, length, heads, dv, seed=batch * 1_000_003 + length)
    jq, jk, jv = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
    floor = common.roofline_floor_ms(batch, length, heads)
    row = {"B": batch, "L": length, "H": heads, "Dv": dv, "floor_ms": floor, "impls": {}}
    for name in impls:
      entry = {}
      start = time.perf_counter()
      try:
        if name.startswith("fla"):
          import torch  # pylint: disable=g-import-not-at-top
          op = _torch_impl(name)
          tq, tk, tv = (torch.from_dlpack(x) for x in (jq, jk, jv))
          fn = lambda: op(tq, tk, tv, use_norm=False)
          t0 = time.perf_counter()
          fn()
          torch.cuda.synchronize()
          if time.perf_counter() - t0 > max_call_s:
            raise TimeoutError(f"one call took {time.perf_counter() - t0:.1f} s > {max_call_s} s")
          fn()
          torch.cuda.synchronize()
          if time.perf_counter() - t0 > 3 * max_call_s:
            raise TimeoutError("warm-up took too long")
          entry = common.time_torch(fn, iterations)
          del tq, tk, tv
        else:
          if name == "xla_chunked" and batch * length * heads > XLA_CHUNKED_MAX_TOKEN_HEADS:
            raise RuntimeError(
                f"B*L*H = {batch * length * heads} > {XLA_CHUNKED_MAX_TOKEN_HEADS}: the per-chunk "
                "states do not fit in GPU memory")
          fn, reason_fn = _jax_impl(name)
          reason = reason_fn(jq, jk, jv)
          if reason is not None:
            raise RuntimeError(f"unavailable: {reason}")
          t0 = time.perf_counter()
          jax.block_until_ready(fn(jq, jk, jv))
          first = time.perf_counter() - t0
          t0 = time.perf_counter()
          jax.block_until_ready(fn(jq, jk, jv))
          if time.perf_counter() - t0 > max_call_s:
            raise TimeoutError(f"one call took {time.perf_counter() - t0:.1f} s > {max_call_s} s")
          entry = common.time_jax(fn, jq, jk, jv, iterations=iterations)
          entry["first_call_s"] = first
        entry["x_floor"] = entry["ms"] / floor
      except Exception as e:  # OOM, time-out, unavailable: record why and go on
        entry = {"skipped": f"{type(e).__name__}: {str(e)[:300]}"}
        if not isinstance(e, (RuntimeError, TimeoutError, ImportError)):
          traceback.print_exc()
      entry["total_s"] = time.perf_counter() - start
      row["impls"][name] = entry
      shown = f"{entry['ms']:.4f} ms" if "ms" in entry else entry["skipped"][:80]
      print(f"B={batch:4d} L={length:6d} {name:13s} {shown}", flush=True)
    results.append(row)
    on_row(results)
  return results


def plot(results, out_dir, heads):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def panel(ax, rows, key, title):
    xs = [r[key] for r in rows]
    ax.plot(xs, [r["floor_ms"] for r in rows], "k--", label="roofline floor (790 TF/s, 4.3 TB/s)")
    for name in IMPLS:
      pts = [(r[key], r["impls"][name]["ms"]) for r in rows
             if name in r["impls"] and "ms" in r["impls"][name]]
      if pts:
        ax.plot(*zip(*pts), "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel("forward time (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)

  groups = [
      ("batch", [r for r in results if r["L"] == 8192 and (r["B"], r["L"]) in BATCH_SWEEP], "B",
       f"L=8192, H={heads}, Dv=64"),
      ("length", [r for r in results if r["B"] == 16], "L", f"B=16, H={heads}, Dv=64"),
      ("length_b1", [r for r in results if r["B"] == 1], "L", f"B=1, H={heads}, Dv=64"),
  ]
  for suffix, rows, key, title in groups:
    rows = sorted(rows, key=lambda r: r[key])
    if len(rows) < 2:        # a sweep with fewer than two measured shapes makes no plot
      continue
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    panel(ax, rows, key, "Based linear attention forward, H200: " + title)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"kernels_{suffix}.png"), dpi=120)
    plt.close(fig)


def replot(json_path, out_dir):
  """Re-draws the PNGs from a kernels.json written earlier (no GPU needed)."""
  with open(json_path) as f:
    data = json.load(f)
  heads = data["results"][0]["H"] if data["results"] else 16
  plot(data["results"], out_dir, heads)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out-dir", default="benchmarks/results", help="where JSON and PNGs go")
  parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                      help="comma-separated subset of " + ",".join(IMPLS))
  parser.add_argument("--sweeps", default="batch,length,long",
                      help="comma-separated subset of batch,length,long")
  parser.add_argument("--shapes", default="",
                      help="explicit BxL list instead of the sweeps, e.g. 256x8192,16x65536")
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--iterations", type=int, default=20, help="timed runs per point (>= 20)")
  parser.add_argument("--max-call-s", type=float, default=2.0,
                      help="skip an impl at a shape when one call takes longer than this")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes (for checking the script, e.g. on a CPU)")
  parser.add_argument("--replot", metavar="JSON",
                      help="only redraw the PNGs from this kernels.json into --out-dir")
  args = parser.parse_args(argv)
  if args.replot:
    replot(args.replot, args.out_dir)
    return
  impls = [i for i in args.impls.split(",") if i]
  for i in impls:
    if i not in IMPLS:
      parser.error(f"unknown impl {i!r}; choose from {IMPLS}")
  sweeps = {"batch": BATCH_SWEEP, "length": LENGTH_SWEEP, "long": LONG_SWEEP}
  shapes = []
  for s in args.sweeps.split(","):
    for shape in sweeps[s]:
      if shape not in shapes:
        shapes.append(shape)
  if args.shapes:
    try:
      shapes = [tuple(int(n) for n in item.split("x")) for item in args.shapes.split(",")]
    except ValueError:
      parser.error(f"--shapes must look like 256x8192,16x1024; got {args.shapes!r}")
  if args.smoke:
    shapes = [(1, 128), (2, 128)]
  os.makedirs(args.out_dir, exist_ok=True)

  import jax  # pylint: disable=g-import-not-at-top
  meta = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
          "python": platform.python_version(), "iterations": args.iterations,
          "note": "inputs reused across timed runs (L2-resident when q, k, v, o < 60 MB); "
                  "pallas/ffi/xla_chunked: normalize=False, no initial state, final state "
                  "returned; fla: use_norm=False, default scale (= the same function)"}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    meta["torch"] = torch.__version__
    import fla  # pylint: disable=g-import-not-at-top
    meta["fla"] = getattr(fla, "__version__", "?")
  except ImportError as e:
    meta["fla"] = f"not importable: {e}"

  def save(rows):          # after every shape, so an interrupted run keeps what it measured
    with open(os.path.join(args.out_dir, "kernels.json"), "w") as f:
      json.dump({"meta": meta, "results": rows}, f, indent=1)

  results = run(shapes, impls, args.heads, 64, args.iterations, args.max_call_s, save)
  save(results)
  plot(results, args.out_dir, args.heads)
  print(f"wrote {args.out_dir}/kernels.json")


if __name__ == "__main__":
  main()
