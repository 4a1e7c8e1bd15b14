"""MQAR recall vs recurrent-state size: Based (conv + LA + SWA) against linear attention only.

Trains each (model, d_model) pair with `based-jax train --data mqar` (same data, optimizer and
steps for all), evaluates answer accuracy on fresh examples, and writes
`--out` (JSON) and prints a Markdown table (docs/mqar.md quotes it).

    python -m benchmarks.mqar                         # docs/mqar.md table 1 (~15 min, 2 cores)
    python -m benchmarks.mqar --sizes 32 --steps 50   # a smoke run

Recurrent state (floats per sequence, what decoding carries; MLPs carry none):
    conv layer: (K - 1) * d_inner      linear attention: H * 273 * (Dv + 1)
    SWA layer:  2 * (w + 1) * d  (the K/V ring of w + 1 = window // 2 + 1 slots)
"""

import argparse
import json
import os
import platform
import time

MODELS = {
    # name: (layer kinds, description)
    "based": ("conv,la,swa,la", "Based: BaseConv + Taylor linear attention + sliding window"),
    "la_only": ("la,la,la,la", "linear attention only (same Taylor map, no conv, no SWA)"),
}


def state_floats(config) -> int:
  """Floats of decoding state per sequence (see the module doc)."""
  total = 0
  for kind in config.layer_types:
    if kind == "conv":
      total += (config.conv_kernel_size - 1) * config.conv_d_inner
    elif kind == "linear_attention":
      total += config.la_num_heads * config.expanded_dim * (config.la_head_dim + 1)
    elif kind == "sliding_window":
      total += 2 * (config.window_left + 1) * config.n_embd
    else:
      raise ValueError(f"state_floats: unsupported layer kind {kind!r}")
  return total


def train_args(model: str, d: int, a) -> list[str]:
  heads = max(1, d // a.head_dim)
  return ["--data", "mqar", "--mqar-vocab", str(a.vocab), "--mqar-kv-pairs", str(a.kv_pairs),
          "--seq-len", str(a.seq_len), "--d-model", str(d), "--n-head", str(heads),
          "--layers", MODELS[model][0], "--window", str(a.window), "--steps", str(a.steps),
          "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--warmup", str(a.warmup),
          "--eval-batches", str(a.eval_batches), "--log-every", str(max(1, a.steps // 10)),
          "--max-minutes", str(a.max_minutes), "--data-seed", str(a.seed), "--seed", str(a.seed),
          "--no-save", "--no-progress"]


def markdown(rows: list[dict]) -> str:
  lines = ["| model | d_model | heads | state (floats) | steps run | answer accuracy | eval loss |"
           " train min |", "|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: (r["model"], r["state_floats"])):
    lines.append(f"| {r['model']} | {r['d_model']} | {r['heads']} | {r['state_floats']:,} | "
                 f"{r['steps_run']} | {r['accuracy']:.3f} | {r['eval_loss']:.3f} | "
                 f"{r['minutes']:.1f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--models", default="based,la_only", help=f"subset of {sorted(MODELS)}")
  p.add_argument("--sizes", default="32,64,128", help="d_model values")
  p.add_argument("--head-dim", type=int, default=32, help="Dv per head: heads = d_model / this")
  p.add_argument("--vocab", type=int, default=64)
  p.add_argument("--seq-len", type=int, default=32)
  p.add_argument("--kv-pairs", type=int, default=4)
  p.add_argument("--window", type=int, default=8, help="SWA window_size (sees window//2 back)")
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--warmup", type=int, default=50)
  p.add_argument("--eval-batches", type=int, default=16, help="fresh batches for the accuracy")
  p.add_argument("--max-minutes", type=float, default=8.0, help="wall-time bound per run")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="benchmarks/results/mqar_kv4.json")
  p.add_argument("--resume", action="store_true",
                 help="keep the finished runs of the same settings found in --out")
  a = p.parse_args(argv)

  import contextlib
  import io

  from based_jax.training import cli

  models = [m.strip() for m in a.models.split(",")]
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    p.error(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
  rows = []
  task = vars(a) | {"out": None, "resume": None}
  if a.resume and os.path.exists(a.out):  # keep finished runs of an interrupted sweep
    with open(a.out) as f:
      rows = [r for r in json.load(f)["rows"] if r.get("task") == task]
  for model in models:
    for d in (int(s) for s in a.sizes.split(",")):
      if any(r["model"] == model and r["d_model"] == d for r in rows):
        continue
      argv_run = train_args(model, d, a)
      args = cli.build_parser().parse_args(argv_run)
      t0 = time.perf_counter()
      log = io.StringIO()
      with contextlib.redirect_stdout(log):
        summary = cli.run(args)
      minutes = (time.perf_counter() - t0) / 60
      config = cli.build_config(args)
      row = {"model": model, "layers": MODELS[model][0], "d_model": d, "heads": args.n_head,
             "state_floats": state_floats(config), "steps_run": summary["step"],
             "accuracy": summary["eval_accuracy"], "eval_loss": summary["eval_loss"],
             "params": summary["params"], "minutes": minutes, "argv": argv_run,
             "task": task}
      rows.append(row)
      print(json.dumps({k: v for k, v in row.items() if k not in ("argv", "task")}), flush=True)
      os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
      with open(a.out, "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} CPU cores",
                   "rows": rows}, f, indent=1)
  print(markdown(rows))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
