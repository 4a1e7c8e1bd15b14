"""Summarise ffi.bench JSON files into the two decisions of issue #4's segment / Gram experiment.

    python -m ffi.bench_report bench_wgmma.json [bench_gram.json ...]

For every (B, L, normalize) it prints the default kernel's time with automatic segments, the best
explicit segment count of each kernel and its gain over automatic, and wgmma_gram's time against
wgmma's (both automatic, and both at their best count). Rows that failed or are missing print "-".
Runs anywhere (no GPU): it only reads the files.
"""

import argparse
import json
import sys

REFERENCE = "wgmma"  # the default kernel, the baseline of every ratio


def load_rows(paths) -> list[dict]:
  """The timed rows (no error) of every file; a partial file (timeout) counts as far as it got."""
  rows = []
  for path in paths:
    try:
      with open(path) as f:
        rows += [r for r in json.load(f).get("results", []) if "median_ms" in r]
    except (OSError, ValueError) as e:
      print(f"bench_report: skipping {path}: {type(e).__name__}: {e}", file=sys.stderr)
  return rows


def index(rows) -> dict:
  """{(kernel, B, L, normalize): {segments: median_ms}} (0 = automatic)."""
  table = {}
  for r in rows:
    key = (r["kernel"], r["B"], r["L"], r["normalize"])
    table.setdefault(key, {})[r.get("segments", 0)] = r["median_ms"]
  return table


def best_explicit(times: dict) -> tuple[int, float] | None:
  """(segments, ms) of the fastest explicit count, or None."""
  explicit = [(ms, s) for s, ms in times.items() if s]
  if not explicit:
    return None
  ms, s = min(explicit)
  return s, ms


def _fmt(ms) -> str:
  return "-" if ms is None else f"{ms:.4f}"


def report_lines(rows) -> list[str]:
  """One line per (B, L, normalize): automatic and best-count times per kernel, ratios to wgmma."""
  table = index(rows)
  cases = sorted({k[1:] for k in table}, key=lambda c: (c[2], c[1], c[0]))  # normalize, L, B
  kernels = sorted({k[0] for k in table}, key=lambda k: (k != REFERENCE, k))
  lines = []
  for b, length, normalize in cases:
    ref_auto = table.get((REFERENCE, b, length, normalize), {}).get(0)
    parts = [f"B={b:4d} L={length:6d} normalize={normalize!s:5}"]
    for kernel in kernels:
      times = table.get((kernel, b, length, normalize))
      if not times:
        continue
      auto = times.get(0)
      text = f"{kernel} auto {_fmt(auto)}"
      best = best_explicit(times)
      if best is not None:
        s, ms = best
        gain = f" ({(auto / ms - 1) * 100:+.1f}% vs auto)" if auto else ""
        text += f", best seg={s} {ms:.4f}{gain}"
      if kernel != REFERENCE and ref_auto and auto:
        text += f", auto/wgmma auto {auto / ref_auto:.3f}"
      parts.append(text)
    lines.append(" | ".join(parts))
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ffi.bench_report", description=__doc__.split("\n\n")[0])
  parser.add_argument("files", nargs="+", help="ffi.bench --out JSON files")
  args = parser.parse_args(argv)
  rows = load_rows(args.files)
  if not rows:
    print("bench_report: no timed rows")
    return 1
  for line in report_lines(rows):
    print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
