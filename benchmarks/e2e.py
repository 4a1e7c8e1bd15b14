"""End-to-end generation benchmark: prefill + decode of based-360m and attn-360m (random bf16).

What it measures (H200 targets in brackets), with `based_jax.generation.generate`: per (model,
batch) a compiled prefill program and a compiled decode-loop program, run back to back.
- Prefill: an 8000-token random prompt + 1 generated token, B in {4, 16, 32, 64, 128}
  (time to first token: until the first sampled token is on the host; runs before session 8's
  fifth call read it from a host callback inside a single prefill + decode program).
  [based-360m: B=128 <= 1.1 s, B=4 <= 40 ms]
- Decode: after an 8000-token prompt, `--decode-steps` further tokens, B in {1, 64, 256}:
  ms/step = (total - time to first token) / (steps - 1); tokens/s = B / (ms/step).
  [based-360m: B=256 <= 1.5 ms/step]
Every batch size gets both numbers (each program runs prefill then the decode loop); the
prefill and decode sets above choose which batch sizes run.
- Memory: the compiled programs' own estimate (`memory_analysis()`: arguments + outputs + temps
  - aliased; the larger of the prefill and decode programs) per config, and the process peak
  (`memory_stats()["peak_bytes_in_use"]`; each config runs in its own process unless
  --no-isolate, so this is that config's peak).
  `--memory-lengths` compiles (without running) the B=4 program at shorter prompts to show how
  prefill memory grows with L.

Weights are random, drawn directly in bf16 on the device inside one jit (no fp32 copy): matrices
~ N(0, 1/fan_in), embeddings ~ N(0, 0.02^2), norm weights 1, biases 0. Token ids are random
(never zeros). Timing: one compile+run, then `--repeats` timed runs; the median is reported.

Floors (printed beside each result; H200 bf16 dense 790 TFLOP/s, HBM 4.3 TB/s, both measured
on this workplace's H200s: see /work/.library/device/KINDS.md):
  P = non-embedding parameters, V = padded vocab, d = width, H/Dh = heads/head dim,
  E = 273 Taylor features, Dv = linear-attention value dim, w = window_size // 2.
  Prefill FLOPs (B, L) = 2 B L P                          dense matmuls
                       + 2 B d V                          LM head at the last position only
                       + sum_LA  4 B L H E Dv             state update phi(k) v^T + query phi(q) S
                       + sum_SWA 4 B L H (w + 1) Dh       QK^T and PV over the window
                       + sum_MHA 2 B H Dh L (L + 1)       causal QK^T and PV
  Prefill bytes        = 2 (P + V d)  (bf16 weights, read once) + cache bytes written
  Decode FLOPs / step  = 2 B (P + V d) + sum_LA 4 B H E Dv + sum_SWA 4 B H (w+1) Dh
                       + sum_MHA 4 B H Dh C               (C = context length)
  Decode bytes / step  = 2 (P + V d) + recurrent state read + written (conv history,
                         linear-attention kv and k_state) + attention K/V read (SWA: its w+1
                         ring; MHA: C entries)
  floor = max(FLOPs / 790e12, bytes / 4.3e12).

Usage: python benchmarks/e2e.py [--models based-360m,attn-360m] [--time-budget-s 150]
Writes benchmarks/results/e2e.json and benchmarks/results/e2e.png (or --out / --plot).
"""

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

PEAK_FLOPS = 790e12
PEAK_BYTES = 4.3e12
PRESETS = ("based-360m", "attn-360m")
TARGETS = {  # (model, kind, B) -> seconds
    ("based-360m", "prefill", 128): 1.1,
    ("based-360m", "prefill", 4): 0.040,
    ("based-360m", "decode_step", 256): 1.5e-3,
}


def parse_args(argv=None):
  return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description="End-to-end prefill/decode benchmark of based-360m and attn-360m (random bf16 "
      "weights) through based_jax.generation.generate. Writes JSON (benchmarks/results/e2e.json) "
      "and a PNG bar chart.", formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default=",".join(PRESETS),
                      help=f"comma-separated presets, run in this order ({', '.join(PRESETS)})")
  parser.add_argument("--prompt-len", type=int, default=8000, help="prompt tokens (default 8000)")
  parser.add_argument("--prefill-batch-sizes", default="4,16,32,64,128",
                      help="batch sizes for the prefill table (default 4,16,32,64,128)")
  parser.add_argument("--decode-batch-sizes", default="1,64,256",
                      help="batch sizes for the decode table (default 1,64,256)")
  parser.add_argument("--priority", default="4,128,256,64,1,16,32",
                      help="order in which batch sizes run, so the targets come first")
  parser.add_argument("--decode-steps", type=int, default=65,
                      help="tokens generated per run (default 65: prefill token + 64 decode steps)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per config (median)")
  parser.add_argument("--impl", default="auto", help="linear-attention implementation")
  parser.add_argument("--attn-impl", default="auto", choices=("auto", "xla", "cudnn"),
                      help="softmax-attention prefill (attn-360m's MHA, based-360m's sliding "
                      "window): BasedLM(attn_impl=...), 'auto' (the library default: cuDNN flash "
                      "attention where it runs), the XLA scan / banded blocks, or cuDNN. Runs "
                      "before session 5 used 'xla' unless marked cudnn")
  parser.add_argument("--fallback-impl", default="chunked",
                      help="when a config fails (not OOM) under --impl, record the error and rerun "
                      "it and the rest with this implementation ('' to stop instead)")
  parser.add_argument("--memory-lengths", default="2000,4000",
                      help="extra prompt lengths compiled (not run) at B=4 for memory vs L "
                      "('' to skip)")
  parser.add_argument("--memory-after", type=int, default=3,
                      help="run the --memory-lengths compiles after this many based-360m batch "
                      "sizes (default 3: after the targets)")
  parser.add_argument("--mlp-impl", default="xla", choices=("xla", "pallas", "auto"),
                      help="SwiGLU fc1 + gate: BasedLM(mlp_impl=...), 'xla' (the library default), "
                      "'pallas' (the gate fused into a Mosaic GPU gemm) or 'auto' (pallas for "
                      "more than 4096 rows, xla below)")
  parser.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE",
                      help="an XLA option for the generate programs only (repeatable), e.g. "
                      "xla_gpu_enable_triton_gemm=false: generate(compiler_options=...); values "
                      "true/false become bools, integers ints")
  parser.add_argument("--decode-state", default="symmetric", choices=("full", "symmetric"),
                      help="generate(decode_state=...): the linear-attention states of the "
                      "decode loop converted to the 153-row symmetric form ('symmetric', the "
                      "library default: the same attention, 56%% of the state bytes per step) "
                      "or as the prefill returns them, 273 rows ('full'); the floors count 273 "
                      "rows, as the issue's targets do")
  parser.add_argument("--decode-unroll", type=auto_or_count, default="auto", metavar="U",
                      help="generate(decode_unroll=U): 'auto' (the library default: 4 on a Hopper "
                      "GPU from B = 256 up, with the decode program's Triton gemm fusions off; "
                      "else 1) or decode steps per iteration of the device loop; on a GPU "
                      "each iteration reads the loop condition back "
                      "to the host before launching the next. Pick U dividing --decode-steps "
                      "minus 1, or up to U - 1 wasted steps are timed too")
  parser.add_argument("--decode-check-every", type=auto_or_count, default="auto", metavar="N",
                      help="generate(decode_check_every=N): decode steps the device runs between "
                      "two reads of the stop condition by the host, in an inner loop whose trip "
                      "count XLA knows; 'auto' (the library default): after every iteration")
  parser.add_argument("--defer-state-writes", action="store_true",
                      help="generate(defer_state_writes=True): the linear-attention states written "
                      "once per decode loop iteration instead of every step (opt-in, untimed)")
  parser.add_argument("--left-pad", type=int, default=0, metavar="N",
                      help="mask the first N prompt tokens of every odd row as left padding, so "
                      "generate() takes the masked path of prompt-bucketed calls (default 0: no "
                      "mask; the targets apply to unmasked runs only)")
  parser.add_argument("--time-budget-s", type=float, default=float("inf"),
                      help="skip configs that would start after this many seconds")
  parser.add_argument("--trace", default=None, metavar="DIR",
                      help="after the timed runs of the first config, write a jax.profiler trace "
                      "of one more run to DIR (tar it to bring it back from a device)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny configs and lengths (CPU check of the script itself)")
  parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "e2e.json"),
                      help="JSON output (default benchmarks/results/e2e.json)")
  parser.add_argument("--plot", default=None, help="PNG output (default: --out with .png)")
  parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                      help="run each (model, batch) in a fresh process (default). An out-of-memory "
                      "failure leaves the failed program's effect token in the JAX runtime, and "
                      "every later generate() in that process fails with the same error (seen on "
                      "the H200 after attn-360m at B=128); a fresh process keeps the other "
                      "configs measurable and makes the process peak memory per config")
  return parser


def auto_or_count(text: str) -> int | str:
  """--decode-unroll, --decode-check-every: 'auto' or an int >= 1."""
  if text == "auto":
    return text
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be 'auto' or an int >= 1; got {text!r}")
  return value


def xla_options(pairs: list[str]) -> dict:
  """["KEY=VALUE", ...] -> {KEY: bool | int | str}."""
  options = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key:
      raise ValueError(f"--xla-option must be KEY=VALUE; got {pair!r}")
    if value.lower() in ("true", "false"):
      options[key] = value.lower() == "true"
    else:
      try:
        options[key] = int(value)
      except ValueError:
        options[key] = value
  return options


def ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def batch_order(args) -> tuple[set[int], set[int], list[int]]:
  """(prefill batch sizes, decode batch sizes, the order to run all of them in)."""
  prefill_bs, decode_bs = set(ints(args.prefill_batch_sizes)), set(ints(args.decode_batch_sizes))
  wanted = prefill_bs | decode_bs
  order = [b for b in ints(args.priority) if b in wanted] + sorted(
      wanted - set(ints(args.priority)))
  if args.smoke:
    order = [b for b in order if b <= 4] or [1]
  return prefill_bs, decode_bs, order


# --------------------------------------------------------------------------------------------
# Model and weights
# --------------------------------------------------------------------------------------------


def make_config(name: str, smoke: bool):
  from based_jax.config import BasedConfig

  if smoke:
    return BasedConfig.tiny(attention_only=name.startswith("attn"), n_layer=3 if
                            name.startswith("attn") else 4)
  return {"based-360m": BasedConfig.based_360m, "attn-360m": BasedConfig.attn_360m}[name]()


def random_bf16_params(model, seed: int = 0):
  """Random params drawn directly in bf16 on the default device (one jit, no fp32 copies)."""
  import jax
  import jax.numpy as jnp

  shape_model = model.clone(la_impl="reference", attn_impl="xla", mlp_impl="xla")
  shapes = jax.eval_shape(shape_model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8), jnp.int32))["params"]  # shapes only
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)

  def draw():
    key = jax.random.key(seed)
    leaves = []
    for i, (path, leaf) in enumerate(flat):
      name = jax.tree_util.keystr(path)
      k = jax.random.fold_in(key, i)
      if "embedding" in name:
        leaves.append(jax.random.normal(k, leaf.shape, jnp.bfloat16) * 0.02)
      elif leaf.ndim == 1 and "bias" in name:
        leaves.append(jnp.zeros(leaf.shape, jnp.bfloat16))
      elif leaf.ndim == 1:
        leaves.append(jnp.ones(leaf.shape, jnp.bfloat16))
      else:
        fan_in = math.prod(leaf.shape[:-1])
        leaves.append(jax.random.normal(k, leaf.shape, jnp.bfloat16) * (fan_in ** -0.5))
    return jax.tree_util.tree_unflatten(treedef, leaves)

  return jax.jit(draw)()


def param_counts(params) -> tuple[int, int]:
  """(non-embedding params, embedding params)."""
  import jax

  emb = other = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if "word_embeddings" in jax.tree_util.keystr(path):
      emb += leaf.size
    else:
      other += leaf.size
  return other, emb


def cache_bytes(model, params, batch: int, length: int, max_length: int) -> dict[str, int]:
  """Bytes of the decoding cache by kind (from eval_shape; nothing is allocated)."""
  import jax
  import jax.numpy as jnp

  shape_model = model.clone(la_impl="chunked", attn_impl="xla", mlp_impl="xla")  # any backend
  _, cache = jax.eval_shape(
      lambda p, x: shape_model.apply({"params": p}, x, None, max_length=max_length,
                                     method="prefill"),
      params, jax.ShapeDtypeStruct((batch, length), jnp.int32))
  out = {"recurrent": 0, "kv": 0}
  for path, leaf in jax.tree_util.tree_flatten_with_path(cache)[0]:
    name = jax.tree_util.keystr(path)
    nbytes = leaf.size * jnp.dtype(leaf.dtype).itemsize
    if name.endswith(".history"):   # BaseConv's ring has K slots for the K - 1 inputs it keeps:
      k = leaf.shape[1]             # the floors count the state, K - 1 (as before the ring)
      nbytes = nbytes * (k - 1) // k
    kind = "kv" if name.endswith((".k", ".v", ".valid")) else "recurrent"
    out[kind] += nbytes
  return out


# --------------------------------------------------------------------------------------------
# Floors
# --------------------------------------------------------------------------------------------


def floors(config, n_other: int, n_emb: int, batch: int, length: int, cache: dict) -> dict:
  """FLOP and byte floors for the prefill (B, L) and one decode step at context L (docstring)."""
  d, vp = config.n_embd, config.vocab_size_padded
  e, dv, hla = config.expanded_dim, config.la_head_dim, config.la_num_heads
  h, dh = config.n_head, config.head_dim
  w = config.window_left or 0
  kinds = config.layer_types
  n_la, n_swa, n_mha = (kinds.count(k) for k in ("linear_attention", "sliding_window", "mha"))
  weights = 2 * (n_other + n_emb)
  pf_flops = (2 * batch * length * n_other + 2 * batch * d * vp
              + n_la * 4 * batch * length * hla * e * dv
              + n_swa * 4 * batch * length * h * (w + 1) * dh
              + n_mha * 2 * batch * h * dh * length * (length + 1))
  pf_bytes = weights + cache["recurrent"] + cache["kv"]
  dc_flops = (2 * batch * (n_other + vp * d) + n_la * 4 * batch * hla * e * dv
              + n_swa * 4 * batch * h * (w + 1) * dh + n_mha * 4 * batch * h * dh * length)
  kv_read = n_swa * batch * (w + 1) * 2 * d * 2 + n_mha * batch * length * 2 * d * 2
  dc_bytes = weights + 2 * cache["recurrent"] + kv_read
  return {
      "prefill_flops": pf_flops, "prefill_bytes": pf_bytes,
      "prefill_floor_s": max(pf_flops / PEAK_FLOPS, pf_bytes / PEAK_BYTES),
      "decode_step_flops": dc_flops, "decode_step_bytes": dc_bytes,
      "decode_step_floor_s": max(dc_flops / PEAK_FLOPS, dc_bytes / PEAK_BYTES),
  }


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def device_memory() -> tuple[int | None, int | None]:
  """(bytes_limit, peak_bytes_in_use) of device 0, None where the backend has no stats."""
  import jax

  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit"), stats.get("peak_bytes_in_use")


def footprint(analysis) -> int:
  """Device bytes one compiled program holds while it runs: arguments + outputs + temporaries,
  less the outputs that alias (donated) arguments."""
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def program_bytes() -> int | None:
  """The larger footprint of the latest generation's two programs (prefill, decode loop)."""
  from based_jax import generation

  analyses = [p.memory_analysis() for p in generation.last_programs()]
  if any(a is None for a in analyses):
    return None
  return max(footprint(a) for a in analyses)


def left_pad_mask(batch: int, length: int, left_pad: int) -> np.ndarray | None:
  """[B, L] int32 attention mask with the first `left_pad` tokens of odd rows masked, or None
  when left_pad is 0."""
  if left_pad == 0:
    return None
  if not 0 < left_pad < length:
    raise ValueError(f"--left-pad must be in [0, prompt length {length}); got {left_pad}")
  mask = np.ones((batch, length), np.int32)
  mask[1::2, :left_pad] = 0
  return mask


def run_config(model, params, vocab: int, batch: int, length: int, steps: int,
               repeats: int, trace_dir: str | None = None, left_pad: int = 0,
               compiler_options: dict | None = None, decode_state: str = "symmetric",
               decode_unroll: int | str = "auto", decode_check_every: int | str = "auto",
               defer_state_writes: bool = False) -> dict:
  from based_jax import generation
  from based_jax.generation import generate, resolve_decode_settings

  ids = np.random.default_rng(batch).integers(1, vocab, size=(batch, length)).astype(np.int32)
  mask = left_pad_mask(batch, length, left_pad)

  def once():
    return generate(model, params, ids, mask, max_new_tokens=steps, prompt_buckets=None,
                    compiler_options=compiler_options, decode_state=decode_state,
                    decode_unroll=decode_unroll, decode_check_every=decode_check_every,
                    defer_state_writes=defer_state_writes)

  first = once()
  assert first.steps == steps and (first.lengths == steps).all()
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = once()
    total = time.perf_counter() - t0
    runs.append((out.prefill_s, total, out.decode_s))
  if trace_dir:
    import jax

    with jax.profiler.trace(trace_dir):
      once()
  prefill = float(np.median([r[0] for r in runs]))
  decode = float(np.median([r[2] for r in runs]))
  step = decode / (steps - 1) if steps > 1 else float("nan")
  unroll, decode_options = resolve_decode_settings(batch, decode_unroll, "auto",
                                                   compiler_options)
  per_check = generation.iterations_per_check(
      steps, unroll, generation.resolve_decode_check_every(decode_check_every))
  return {
      "decode_unroll_resolved": unroll, "decode_xla_options_resolved": decode_options,
      "decode_iterations_per_check": per_check,
      "compile_s": first.compile_s, "prefill_s": prefill,
      "total_s": float(np.median([r[1] for r in runs])),
      "decode_step_s": step, "decode_tokens_per_s": batch / step if steps > 1 else None,
      "runs": runs, "program_bytes": program_bytes(), "process_peak_bytes": device_memory()[1],
  }


def compile_only_bytes(model, params, vocab: int, batch: int, length: int, steps: int) -> dict:
  """Compile (without running) the generation programs at this prompt length; their memory."""
  import jax
  import jax.numpy as jnp

  from based_jax import generation
  from based_jax.sampling import SamplingConfig

  t0 = time.perf_counter()
  programs = generation.lower_programs(
      params, jax.ShapeDtypeStruct((batch, length), jnp.int32), None, jax.random.key(0),
      model=model, max_new_tokens=steps, sampling=SamplingConfig(), eos_token_id=None,
      pad_token_id=0, vocab_size=vocab, stream=False)
  prefill, decode = (p.compile().memory_analysis() for p in programs)
  return {"compile_s": time.perf_counter() - t0,                 # the prefill's: it grows with L
          "temp_bytes": int(prefill.temp_size_in_bytes),
          "program_bytes": max(footprint(prefill), footprint(decode))}


def memory_vs_length(results, name, model, params, vocab, lengths, steps, start, budget,
                     last_compile):
  """Compile-only memory of the B=4 program at shorter prompts (prefill memory vs L)."""
  for mlen in lengths:
    if time.perf_counter() - start + last_compile > budget:
      results["skipped"].append({"memory_len": mlen, "reason": "time budget"})
      continue
    entry = {"model": name, "batch": 4, "prompt_len": mlen,
             **compile_only_bytes(model, params, vocab, 4, mlen, steps)}
    results["memory_vs_length"].append(entry)
    print(f"  memory B=4 L={mlen}: program {entry['program_bytes'] / 2**30:.2f} GiB, temps "
          f"{entry['temp_bytes'] / 2**30:.2f} GiB (compile {entry['compile_s']:.1f} s)", flush=True)


def resolved_impl(config, impl: str, batch: int, length: int) -> dict:
  """Which linear-attention implementation `impl` resolves to for the prefill shapes, and why."""
  import jax
  import jax.numpy as jnp

  from based_jax.ops import unavailable_reason

  if "linear_attention" not in config.layer_types:
    return {"resolved": None}
  h = config.la_num_heads
  q = jax.ShapeDtypeStruct((batch, length, h, config.la_feature_dim), jnp.bfloat16)
  v = jax.ShapeDtypeStruct((batch, length, h, config.la_head_dim), jnp.bfloat16)
  if impl != "auto":
    return {"resolved": impl, "reason": unavailable_reason(impl, q, q, v)}
  reasons = {}
  for candidate in ("pallas", "ffi"):
    reasons[candidate] = unavailable_reason(candidate, q, q, v)
    if reasons[candidate] is None:
      return {"resolved": candidate, "reasons": reasons}
  return {"resolved": "chunked", "reasons": reasons}


def fmt_s(s) -> str:
  if s is None or (isinstance(s, float) and math.isnan(s)):
    return "-"
  return f"{s * 1e3:.2f} ms" if s < 10 else f"{s:.1f} s"


def save(results: dict, out: Path, plot: Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1, default=float))
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  models = sorted({r["model"] for r in results["configs"]})
  for ax, (key, table, title, scale) in zip(axes, [
      ("prefill_s", "in_prefill_table", f"prefill {results['prompt_len']} tokens + 1 (ms)", 1e3),
      ("decode_step_s", "in_decode_table", f"decode step after {results['prompt_len']} tokens (ms)",
       1e3)]):
    rows = [r for r in results["configs"] if r.get(key) is not None and r.get(table, True)]
    batches = sorted({r["batch"] for r in rows})
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
      last = {r["batch"]: r for r in rows if r["model"] == m}   # the last run of each batch
      ys = [(last[b][key] if b in last else 0) * scale for b in batches]
      xs = [j + i * width for j in range(len(batches))]
      ax.bar(xs, ys, width, label=m)
      floor_key = key[:-len("_s")] + "_floor_s"           # prefill_floor_s, decode_step_floor_s
      floors = [(x, last[b][floor_key] * scale) for x, b in zip(xs, batches)
                if b in last and last[b].get(floor_key)]
      if floors:                                           # the roofline floor of each bar
        ax.hlines([f for _, f in floors], [x - width / 2 for x, _ in floors],
                  [x + width / 2 for x, _ in floors], colors="black", linewidths=2,
                  label="floor" if i == len(models) - 1 else None)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(batches))],
                  [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_title(title)
    ax.set_yscale("log")
    ax.legend()
  fig.suptitle(f"based-jax e2e ({results['device']}, bf16, random weights)")
  fig.tight_layout()
  fig.savefig(plot, dpi=110)
  plt.close(fig)


def run_isolated(args, argv) -> int:
  """Runs every (model, batch) in its own child process (this process never starts JAX) and
  merges their JSON into one result."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  out = Path(args.out)
  plot = Path(args.plot) if args.plot else out.with_suffix(".png")
  prefill_bs, decode_bs, order = batch_order(args)
  passthrough = _passthrough_args(argv)
  merged, last_child_s, failed = None, 0.0, []
  with tempfile.TemporaryDirectory() as tmp:
    for name in [m for m in args.models.split(",") if m]:
      for done, batch in enumerate(order):
        if time.perf_counter() - start + last_child_s > args.time_budget_s:
          if merged is not None:
            merged["skipped"].append({"model": name, "batch": batch, "reason": "time budget"})
          continue
        child_out = Path(tmp) / f"{name}-{batch}.json"
        memory = done == args.memory_after and (name == "based-360m" or args.smoke)
        cmd = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--no-isolate",
               "--models", name, "--prefill-batch-sizes",
               str(batch) if batch in prefill_bs else "", "--decode-batch-sizes",
               str(batch) if batch in decode_bs else "", "--priority", str(batch),
               "--memory-after", "0" if memory else "-1", "--out", str(child_out)]
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        last_child_s = time.perf_counter() - t0
        if not child_out.exists():
          row = {"model": name, "batch": batch,
                 "error": f"child process exited with {code} before writing results"}
          print(f"  {name} B={batch}: {row['error']}", flush=True)
          failed.append(row)
          continue
        child = json.loads(child_out.read_text())
        if merged is None:
          merged = dict(child, configs=[], memory_vs_length=[], skipped=[])
        merged["configs"].extend(failed)
        failed = []
        for key in ("configs", "memory_vs_length", "skipped"):
          merged[key].extend(child[key])
        save(merged, out, plot)
  if merged is None:
    print(f"no config ran ({len(failed)} child processes failed)", file=sys.stderr)
    return 1
  merged["configs"].extend(failed)
  merged["wall_s"] = time.perf_counter() - start
  merged["isolated"] = True
  save(merged, out, plot)
  print(f"wrote {out} and {plot} in {merged['wall_s']:.0f} s", flush=True)
  return 0


_CHILD_OWNED = ("--models", "--prefill-batch-sizes", "--decode-batch-sizes", "--priority",
                "--memory-after", "--out", "--plot", "--time-budget-s")


def _passthrough_args(argv) -> list[str]:
  """The command-line arguments a child inherits (those the parent sets per child removed)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    if arg in _CHILD_OWNED:
      skip = True
      continue
    if arg.split("=", 1)[0] in _CHILD_OWNED or arg in ("--isolate", "--no-isolate"):
      continue
    kept.append(arg)
  return kept


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.isolate:
    return run_isolated(args, argv)
  start = time.perf_counter()
  import jax
  import jax.numpy as jnp

  from based_jax.model import BasedLM

  out = Path(args.out)
  plot = Path(args.plot) if args.plot else out.with_suffix(".png")
  length = 64 if args.smoke else args.prompt_len
  prefill_bs, decode_bs, order = batch_order(args)
  device = jax.devices()[0]
  limit, _ = device_memory()
  results = {"device": getattr(device, "device_kind", str(device)), "backend": device.platform,
             "jax": jax.__version__, "python": platform.python_version(), "impl": args.impl,
             "attn_impl": args.attn_impl, "mlp_impl": args.mlp_impl, "left_pad": args.left_pad,
             "decode_state": args.decode_state, "decode_unroll": args.decode_unroll,
             "decode_check_every": args.decode_check_every,
             "defer_state_writes": args.defer_state_writes,
             "xla_options": xla_options(args.xla_option),
             "prompt_len": length, "decode_steps": args.decode_steps, "repeats": args.repeats,
             "peak_flops": PEAK_FLOPS, "peak_bytes_per_s": PEAK_BYTES, "smoke": args.smoke,
             "configs": [], "memory_vs_length": [], "skipped": []}
  print(f"device {results['device']}, jax {jax.__version__}, memory limit {limit}", flush=True)

  last_compile = 0.0
  for name in [m for m in args.models.split(",") if m]:
    if name not in PRESETS:
      print(f"unknown model {name!r}; choose from {PRESETS}", file=sys.stderr)
      return 2
    config = make_config(name, args.smoke)
    model = BasedLM(config, dtype=jnp.bfloat16, la_impl=args.impl, attn_impl=args.attn_impl,
                    mlp_impl=args.mlp_impl)
    params = random_bf16_params(model)
    n_other, n_emb = param_counts(params)
    print(f"{name}: {n_other / 1e6:.1f}M non-embedding + {n_emb / 1e6:.1f}M embedding params",
          flush=True)
    for done, batch in enumerate(order):
      if done == args.memory_after and (name == "based-360m" or args.smoke):
        memory_vs_length(results, name, model, params, config.vocab_size,
                         [16, 32] if args.smoke else ints(args.memory_lengths), args.decode_steps,
                         start, args.time_budget_s, last_compile)
      elapsed = time.perf_counter() - start
      if elapsed + last_compile > args.time_budget_s:
        results["skipped"].append({"model": name, "batch": batch, "reason": "time budget"})
        continue
      cache = cache_bytes(model, params, batch, length, length + args.decode_steps)
      row = {"model": name, "batch": batch, "prompt_len": length,
             "in_prefill_table": batch in prefill_bs, "in_decode_table": batch in decode_bs,
             "cache_bytes": cache, **floors(config, n_other, n_emb, batch, length, cache)}
      need = 2 * (n_other + n_emb) + cache["recurrent"] + cache["kv"]
      if limit and need > limit:
        row["error"] = f"skipped: params + cache = {need / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB"
        print(f"  B={batch}: {row['error']}", flush=True)
        results["configs"].append(row)
        continue
      row["impl"] = model.la_impl
      row["la_impl_resolved"] = resolved_impl(config, model.la_impl, batch, length)
      try:
        row.update(run_config(model, params, config.vocab_size, batch, length, args.decode_steps,
                              args.repeats, trace_dir=None if results["configs"] else args.trace,
                              left_pad=args.left_pad, compiler_options=results["xla_options"],
                              decode_state=args.decode_state,
                              decode_unroll=args.decode_unroll,
                              decode_check_every=args.decode_check_every,
                              defer_state_writes=args.defer_state_writes))
        last_compile = row["compile_s"]
      except Exception as e:  # pylint: disable=broad-except  # OOM is a result, not a crash
        message = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
          row["error"] = f"OOM: {message}"
        elif args.fallback_impl and model.la_impl != args.fallback_impl:
          print(f"  B={batch}: impl={model.la_impl} failed ({message}); rerunning with "
                f"{args.fallback_impl}", flush=True)
          row["failed_impl"] = {"impl": model.la_impl, "error": message}
          model = model.clone(la_impl=args.fallback_impl)
          row["impl"] = model.la_impl
          row["la_impl_resolved"] = resolved_impl(config, model.la_impl, batch, length)
          row.update(run_config(model, params, config.vocab_size, batch, length,
                                args.decode_steps, args.repeats, left_pad=args.left_pad,
                                compiler_options=results["xla_options"],
                                decode_state=args.decode_state,
                                decode_unroll=args.decode_unroll,
                                decode_check_every=args.decode_check_every,
                                defer_state_writes=args.defer_state_writes))
          last_compile = row["compile_s"]
        else:
          raise
      for kind, key in (("prefill", "prefill_s"), ("decode_step", "decode_step_s")):
        target = TARGETS.get((name, kind, batch))
        if (args.left_pad or args.xla_option or args.mlp_impl != "xla"
            or args.decode_state != "symmetric" or args.decode_unroll != "auto"
            or args.decode_check_every != "auto" or args.defer_state_writes):
          target = None  # the targets are judged on the library's defaults
        if target is not None and key in row:
          row[f"{kind}_target_s"] = target
          row[f"{kind}_meets_target"] = bool(row[key] <= target)
      results["configs"].append(row)
      save(results, out, plot)
      print(f"  B={batch:4d} prefill {fmt_s(row.get('prefill_s'))} (floor "
            f"{fmt_s(row['prefill_floor_s'])}), decode {fmt_s(row.get('decode_step_s'))}/step "
            f"(floor {fmt_s(row['decode_step_floor_s'])}), "
            f"{(row.get('decode_tokens_per_s') or 0):.0f} tok/s, compile "
            f"{row.get('compile_s', 0):.1f} s, program "
            f"{(row.get('program_bytes') or 0) / 2**30:.2f}"
            f" GiB {row.get('error', '')}", flush=True)
    del params
  results["wall_s"] = time.perf_counter() - start
  save(results, out, plot)
  print(f"wrote {out} and {plot} in {results['wall_s']:.0f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
