"""Where a profiled run leaves the GPU idle: busy time, idle gaps and what the host did meanwhile.

  python3 benchmarks/probes/trace_gaps.py TRACE [--top 15] [--after-ms 0] [--until-ms inf]
      [--iterations loop_compare_fusion [--steps-per-iteration U]] [--kernels 20 [--families]]

TRACE: a `jax.profiler` trace (e.g. from `benchmarks/e2e.py --trace DIR`): the directory, a
`.tar`/`.tar.gz` of it, or one `*.trace.json.gz` / `perfetto_trace.json.gz` file (Chrome trace
events). The GPU's timeline is the union of the complete ("X") events of every process named
`/device:GPU:*` (kernels and copies on all streams). Prints the span from the first to the last GPU
event, the busy and idle time within it, and the `--top` longest idle gaps, each with the GPU
events before and after it and the host events that overlap it most, leaving out those that span
the whole gap (their callers): what the host was doing while the GPU waited. `--after-ms` / `--until-ms` keep a window (ms from the first GPU event), e.g.
the prefill of a `generate` run. With `--iterations NAME`, also the medians per loop iteration
(split at GPU events named NAME*), and with `--kernels N` the N kernels that take the most GPU time
per iteration (or per step: `--steps-per-iteration U` for `generate(decode_unroll=U)`), over the
iterations after the first; without `--iterations`, `--kernels N` lists them over the whole window
(a program without a loop, e.g. a prefill). `--families` merges names that differ only in XLA's numeric suffix
(`input_reduce_fusion_13`, `_53` -> `input_reduce_fusion`). Needs only the Python standard library.
"""

import argparse
import collections
import gzip
import io
import json
import math
import re
import statistics
import sys
import tarfile
from pathlib import Path


def _load_json_bytes(name: str, data: bytes) -> dict:
  if name.endswith(".gz"):
    data = gzip.decompress(data)
  return json.loads(data)


def load_trace(path: str) -> list[dict]:
  """The trace events of TRACE (see the module doc)."""
  p = Path(path)
  if p.is_dir():
    files = sorted(p.rglob("*.trace.json.gz")) or sorted(p.rglob("perfetto_trace.json.gz"))
    if not files:
      raise SystemExit(f"{path}: no *.trace.json.gz or perfetto_trace.json.gz inside")
    trace = _load_json_bytes(files[-1].name, files[-1].read_bytes())
  elif p.name.endswith((".tar", ".tar.gz", ".tgz")):
    with tarfile.open(p) as tar:
      members = [m for m in tar.getmembers() if m.name.endswith(".trace.json.gz")] or \
                [m for m in tar.getmembers() if m.name.endswith("perfetto_trace.json.gz")]
      if not members:
        raise SystemExit(f"{path}: no *.trace.json.gz or perfetto_trace.json.gz in the archive")
      member = sorted(members, key=lambda m: m.name)[-1]
      trace = _load_json_bytes(member.name, tar.extractfile(member).read())
  elif p.is_file():
    trace = _load_json_bytes(p.name, p.read_bytes())
  else:
    raise SystemExit(f"{path}: no such file or directory")
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def split_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
  """(GPU events, host events): complete events with a duration, by their process's name."""
  names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu, host = [], []
  for e in events:
    if e.get("ph") != "X" or "dur" not in e or "ts" not in e:
      continue
    (gpu if "/device:GPU" in names.get(e.get("pid"), "") else host).append(e)
  return gpu, host


def busy_intervals(events: list[dict]) -> list[tuple[float, float]]:
  """The union of the events' [ts, ts + dur) intervals (microseconds), sorted."""
  merged: list[list[float]] = []
  for start, end in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return [(a, b) for a, b in merged]


def analyse(events: list[dict], top: int = 15, after_ms: float = 0.0,
            until_ms: float = math.inf) -> dict:
  gpu, host = split_events(events)
  if not gpu:
    raise SystemExit("the trace has no GPU events (a process named /device:GPU:*)")
  origin = min(e["ts"] for e in gpu)
  lo, hi = origin + 1e3 * after_ms, origin + 1e3 * until_ms
  gpu = [e for e in gpu if e["ts"] >= lo and e["ts"] + e["dur"] <= hi]
  if not gpu:
    raise SystemExit(f"no GPU event within [{after_ms}, {until_ms}] ms of the first one")
  busy = busy_intervals(gpu)
  span = busy[-1][1] - busy[0][0]
  busy_us = sum(b - a for a, b in busy)
  gaps = sorted(((busy[i + 1][0] - busy[i][1], busy[i][1], busy[i + 1][0])
                 for i in range(len(busy) - 1)), reverse=True)
  report = []
  for length, start, end in gaps[:top]:
    before = max((e for e in gpu if e["ts"] + e["dur"] <= start + 1e-6),
                 key=lambda e: e["ts"] + e["dur"])
    after = min((e for e in gpu if e["ts"] >= end - 1e-6), key=lambda e: e["ts"])
    inside = [e for e in host if e["ts"] < end and e["ts"] + e["dur"] > start   # overlaps the gap
              and not (e["ts"] <= start and e["ts"] + e["dur"] >= end)]       # not an outer caller
    overlapping = sorted(inside, key=lambda e: -(min(end, e["ts"] + e["dur"]) - max(start, e["ts"])))[:3]
    report.append({"gap_us": length, "at_ms": (start - origin) / 1e3,
                   "before": before.get("name", "?"), "after": after.get("name", "?"),
                   "host": [(h.get("name", "?"), h["dur"]) for h in overlapping]})
  return {"gpu_events": len(gpu), "span_ms": span / 1e3, "busy_ms": busy_us / 1e3,
          "idle_ms": (span - busy_us) / 1e3, "gaps": len(gaps),
          "gaps_over_10us_ms": sum(g for g, _, _ in gaps if g > 10) / 1e3, "top": report}


def iterations(events: list[dict], marker: str) -> list[dict]:
  """Per loop iteration: the GPU time from one event whose name starts with `marker` to the next
  (e.g. `loop_compare_fusion`, the condition of an XLA while loop, once per iteration), its busy
  and idle time and its longest gap, in microseconds. The last marker closes the last iteration."""
  gpu, _ = split_events(events)
  marks = sorted(e["ts"] for e in gpu if e.get("name", "").startswith(marker))
  rows = []
  for start, end in zip(marks, marks[1:]):
    window = [e for e in gpu if start <= e["ts"] < end]
    busy = busy_intervals([dict(e, dur=min(e["dur"], end - e["ts"])) for e in window])
    covered = sum(b - a for a, b in busy)
    edges = [start] + [x for iv in busy for x in iv] + [end]
    longest = max(edges[i + 1] - edges[i] for i in range(0, len(edges) - 1, 2))
    rows.append({"span_us": end - start, "busy_us": covered, "idle_us": end - start - covered,
                 "longest_gap_us": longest, "events": len(window)})
  return rows


def kernel_family(name: str) -> str:
  """`input_reduce_fusion_13` -> `input_reduce_fusion`, `fusion.4` -> `fusion` (no XLA numbers)."""
  return re.sub(r"(?:[._]\d+)+$", "", name)


def kernel_totals(events: list[dict], marker: str, per: int = 1,
                  families: bool = False) -> tuple[int, list[tuple[str, float, float]]]:
  """GPU time by kernel name inside the loop iterations that `marker` delimits, the first
  iteration left out (it may hold warm-up work): (iterations counted, [(name, us, launches)]),
  largest first, us and launches per iteration divided by `per` (the steps an iteration runs)."""
  gpu, _ = split_events(events)
  marks = sorted(e["ts"] for e in gpu if e.get("name", "").startswith(marker))
  if len(marks) < 3:
    return 0, []
  start, end, count = marks[1], marks[-1], len(marks) - 2
  return count, _totals(gpu, start, end, count * per, families)


def window_kernel_totals(events: list[dict], after_ms: float = 0.0, until_ms: float = math.inf,
                         families: bool = False) -> list[tuple[str, float, float]]:
  """GPU time by kernel name over the whole trace, or the window of GPU events starting at or
  after `after_ms` and before `until_ms` (ms from the first GPU event): [(name, us, launches)],
  largest first. For programs without a loop, e.g. a prefill."""
  gpu, _ = split_events(events)
  if not gpu:
    return []
  first = min(e["ts"] for e in gpu)
  return _totals(gpu, first + after_ms * 1e3, first + until_ms * 1e3, 1, families)


def _totals(gpu: list[dict], start: float, end: float, scale: float,
            families: bool) -> list[tuple[str, float, float]]:
  time, launches = collections.Counter(), collections.Counter()
  for e in gpu:
    if start <= e["ts"] < end:
      name = e.get("name", "?")
      name = kernel_family(name) if families else name
      time[name] += e["dur"]
      launches[name] += 1
  return [(name, us / scale, launches[name] / scale) for name, us in time.most_common()]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("trace", help="trace directory, .tar(.gz) of one, or a *.trace.json.gz file")
  parser.add_argument("--top", type=int, default=15, help="gaps listed (default 15)")
  parser.add_argument("--after-ms", type=float, default=0.0,
                      help="ignore GPU events starting before this (ms from the first one)")
  parser.add_argument("--until-ms", type=float, default=math.inf,
                      help="ignore GPU events ending after this (ms from the first one)")
  parser.add_argument("--iterations", metavar="NAME",
                      help="also summarise the loop iterations delimited by GPU events whose "
                      "name starts with NAME (e.g. loop_compare_fusion): medians of span, busy, "
                      "idle and longest gap")
  parser.add_argument("--kernels", type=int, default=0, metavar="N",
                      help="the N kernels with the most GPU time per iteration (with "
                      "--iterations) or in the --after-ms/--until-ms window (without)")
  parser.add_argument("--steps-per-iteration", type=int, default=1, metavar="U",
                      help="with --kernels: divide by U, e.g. generate(decode_unroll=U)'s steps")
  parser.add_argument("--families", action="store_true",
                      help="with --kernels: merge names that differ only in XLA's numeric suffix")
  args = parser.parse_args(argv)
  if args.steps_per_iteration < 1:
    parser.error(f"--steps-per-iteration must be >= 1; got {args.steps_per_iteration}")
  events = load_trace(args.trace)
  result = analyse(events, args.top, args.after_ms, args.until_ms)
  out = io.StringIO()
  if args.iterations:
    rows = iterations(events, args.iterations)
    if rows:
      med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
      print(f"{len(rows)} iterations between {args.iterations!r} events; medians: span "
            f"{med['span_us']:.1f} us, busy {med['busy_us']:.1f} us, idle {med['idle_us']:.1f} us, "
            f"longest gap {med['longest_gap_us']:.1f} us, {med['events']:.0f} GPU events", file=out)
    else:
      print(f"fewer than two GPU events named {args.iterations!r}*", file=out)
    if args.kernels:
      count, totals = kernel_totals(events, args.iterations, args.steps_per_iteration,
                                    args.families)
      unit = "step" if args.steps_per_iteration > 1 else "iteration"
      total = sum(us for _, us, _ in totals)
      print(f"GPU time by kernel over {count} iterations after the first: {total:.1f} us and "
            f"{sum(n for _, _, n in totals):.1f} launches per {unit}", file=out)
      for name, us, n in totals[:args.kernels]:
        print(f"  {us:9.1f} us {n:6.1f}x per {unit}  {name[:90]}", file=out)
  if args.kernels and not args.iterations:
    totals = window_kernel_totals(events, args.after_ms, args.until_ms, args.families)
    print(f"GPU time by kernel in the window: {sum(us for _, us, _ in totals) / 1e3:.3f} ms in "
          f"{sum(n for _, _, n in totals):.0f} launches", file=out)
    for name, us, n in totals[:args.kernels]:
      print(f"  {us / 1e3:9.3f} ms {n:6.0f}x  {name[:90]}", file=out)
  print(f"{result['gpu_events']} GPU events; span {result['span_ms']:.3f} ms, busy "
        f"{result['busy_ms']:.3f} ms, idle {result['idle_ms']:.3f} ms in {result['gaps']} gaps "
        f"({result['gaps_over_10us_ms']:.3f} ms in gaps over 10 us)", file=out)
  for g in result["top"]:
    host = "; ".join(f"{name[:60]} {dur / 1e3:.3f} ms" for name, dur in g["host"]) or "-"
    print(f"  {g['gap_us']:9.1f} us at {g['at_ms']:9.3f} ms  after {g['before'][:50]}  before "
          f"{g['after'][:50]}  | host: {host}", file=out)
  sys.stdout.write(out.getvalue())
  return 0


if __name__ == "__main__":
  sys.exit(main())
