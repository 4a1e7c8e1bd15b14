"""benchmarks/probes/trace_gaps.py on synthetic Chrome traces, against a brute-force timeline."""

import gzip
import json
import tarfile

import numpy as np
import pytest

from benchmarks.probes import trace_gaps


def synthetic_trace(rng, n_kernels=60):
  """Kernels on two GPU streams (integer microseconds, some overlapping) and host events."""
  events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
  t = 1000
  for i in range(n_kernels):
    t += int(rng.integers(0, 40))                       # a gap of 0-39 us, or an overlap below
    dur = int(rng.integers(1, 30))
    events.append({"ph": "X", "pid": 7, "tid": int(rng.integers(1, 3)), "ts": t, "dur": dur,
                   "name": f"kernel_{i}"})
    if i % 7 == 3 and dur >= 4:                         # a copy on another stream, inside it
      events.append({"ph": "X", "pid": 7, "tid": 3, "ts": t + 1, "dur": dur // 3,
                     "name": f"copy_{i}"})
    t += dur - int(rng.integers(0, 5))
  events.append({"ph": "X", "pid": 1, "tid": 5, "ts": 900, "dur": t, "name": "host_execute"})
  events.append({"ph": "i", "pid": 7, "ts": 1200, "name": "instant, ignored"})
  return events


def brute_force(events, lo_us=-np.inf, hi_us=np.inf):
  """Busy/idle microseconds of the GPU events, by marking every microsecond."""
  gpu = [e for e in events if e.get("pid") == 7 and e.get("ph") == "X"]
  origin = min(e["ts"] for e in gpu)
  gpu = [e for e in gpu if e["ts"] >= origin + lo_us and e["ts"] + e["dur"] <= origin + hi_us]
  start = min(e["ts"] for e in gpu)
  end = max(e["ts"] + e["dur"] for e in gpu)
  timeline = np.zeros(end - start, bool)
  for e in gpu:
    timeline[e["ts"] - start:e["ts"] + e["dur"] - start] = True
  edges = np.flatnonzero(np.diff(timeline.astype(np.int8)))   # busy<->idle transitions
  gaps = [b - a for a, b in zip(edges[0::2], edges[1::2])]    # idle runs (first edge: busy->idle)
  return end - start, int(timeline.sum()), sorted(gaps, reverse=True), len(gpu)


def test_busy_idle_and_gaps_match_a_brute_force_timeline():
  rng = np.random.default_rng()
  events = synthetic_trace(rng)
  span, busy, gaps, count = brute_force(events)
  result = trace_gaps.analyse(events, top=5)
  assert result["gpu_events"] == count
  assert result["span_ms"] == pytest.approx(span / 1e3)
  assert result["busy_ms"] == pytest.approx(busy / 1e3)
  assert result["idle_ms"] == pytest.approx((span - busy) / 1e3)
  assert result["gaps"] == len(gaps)
  assert [g["gap_us"] for g in result["top"]] == pytest.approx(gaps[:5])
  assert result["gaps_over_10us_ms"] == pytest.approx(sum(g for g in gaps if g > 10) / 1e3)
  assert all("host_execute" not in [name for name, _ in g["host"]] for g in result["top"])


def test_a_gap_lists_the_host_events_inside_it_not_their_callers():
  rng = np.random.default_rng()
  events = synthetic_trace(rng)
  top = trace_gaps.analyse(events, top=1)["top"][0]
  origin = min(e["ts"] for e in events if e.get("pid") == 7 and e.get("ph") == "X")
  start = origin + 1e3 * top["at_ms"]
  events += [{"ph": "X", "pid": 1, "tid": 5, "ts": start + 1, "dur": 1, "name": "short_launch"},
             {"ph": "X", "pid": 1, "tid": 5, "ts": start - 5, "dur": 5 + top["gap_us"] / 2,
              "name": "slow_dispatch"}]
  hosts = [name for name, _ in trace_gaps.analyse(events, top=1)["top"][0]["host"]]
  assert hosts == ["slow_dispatch", "short_launch"]   # by overlap with the gap; no outer caller


def test_window_keeps_the_events_inside_it():
  rng = np.random.default_rng()
  events = synthetic_trace(rng, n_kernels=80)
  span, busy, gaps, count = brute_force(events, lo_us=300, hi_us=1200)
  result = trace_gaps.analyse(events, top=3, after_ms=0.3, until_ms=1.2)
  assert (result["gpu_events"], result["gaps"]) == (count, len(gaps))
  assert result["busy_ms"] == pytest.approx(busy / 1e3)
  assert result["span_ms"] == pytest.approx(span / 1e3)


@pytest.mark.parametrize("form", ["dir", "tar", "file"])
def test_loads_a_profile_directory_an_archive_or_a_file(tmp_path, form):
  events = synthetic_trace(np.random.default_rng())
  run = tmp_path / "trace" / "plugins" / "profile" / "2026_11_29"
  run.mkdir(parents=True)
  path = run / "host.trace.json.gz"
  path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
  target = {"dir": tmp_path / "trace", "file": path, "tar": tmp_path / "trace.tar.gz"}[form]
  if form == "tar":
    with tarfile.open(target, "w:gz") as tar:
      tar.add(tmp_path / "trace", arcname="trace")
  assert trace_gaps.load_trace(str(target)) == events


def test_a_trace_without_gpu_events_is_a_clear_error():
  events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "X", "pid": 1, "ts": 0, "dur": 5, "name": "host"}]
  with pytest.raises(SystemExit, match="no GPU events"):
    trace_gaps.analyse(events)


def test_cli_prints_the_summary(tmp_path, capsys):
  events = synthetic_trace(np.random.default_rng())
  path = tmp_path / "x.trace.json.gz"
  path.write_bytes(gzip.compress(json.dumps(events).encode()))
  assert trace_gaps.main([str(path), "--top", "2"]) == 0
  out = capsys.readouterr().out
  assert "GPU events; span" in out and out.count(" us at ") == 2


def test_iterations_split_at_the_marker_and_match_a_brute_force_timeline():
  rng = np.random.default_rng()
  events = synthetic_trace(rng, n_kernels=90)
  kernels = sorted((e for e in events if e.get("pid") == 7 and e["name"].startswith("kernel_")),
                   key=lambda e: e["ts"])
  for e in kernels[::15]:                               # every 15th kernel opens an iteration
    e["name"] = "loop_compare_fusion." + e["name"]
  marks = [e["ts"] for e in kernels[::15]]
  rows = trace_gaps.iterations(events, "loop_compare_fusion")
  assert len(rows) == len(marks) - 1
  gpu = [e for e in events if e.get("pid") == 7 and e.get("ph") == "X"]
  for row, start, end in zip(rows, marks, marks[1:]):
    timeline = np.zeros(end - start, bool)
    window = [e for e in gpu if start <= e["ts"] < end]
    for e in window:
      timeline[e["ts"] - start:min(e["ts"] + e["dur"], end) - start] = True
    idle_runs = [len(run) for run in "".join("i" if not x else "b" for x in timeline).split("b")]
    assert row["span_us"] == end - start and row["events"] == len(window)
    assert row["busy_us"] == timeline.sum() and row["idle_us"] == (~timeline).sum()
    assert row["longest_gap_us"] == max(idle_runs)


def test_kernel_family_drops_xla_numbering_only():
  assert trace_gaps.kernel_family("input_reduce_fusion_13") == "input_reduce_fusion"
  assert trace_gaps.kernel_family("fusion.4") == "fusion"
  assert trace_gaps.kernel_family("loop_add_fusion_1.2") == "loop_add_fusion"
  assert trace_gaps.kernel_family("nvjet_sm90_tst_128x64_64x8_1x2_h_bz_NNT") == \
      "nvjet_sm90_tst_128x64_64x8_1x2_h_bz_NNT"


@pytest.mark.parametrize("families", [False, True])
def test_kernel_totals_sum_each_name_over_the_iterations_after_the_first(families):
  rng = np.random.default_rng()
  events = synthetic_trace(rng, n_kernels=120)
  kernels = sorted((e for e in events if e.get("pid") == 7 and e["name"].startswith("kernel_")),
                   key=lambda e: e["ts"])
  family = {"gemm_1": "gemm", "gemm_2": "gemm", "fusion.7": "fusion", "fusion.9": "fusion",
            "loop_compare_fusion": "loop_compare_fusion", "MemcpyD2H": "MemcpyD2H"}
  for e in kernels:
    e["name"] = str(rng.choice(list(family)[:4]))
  for e in events:
    if e.get("name", "").startswith("copy_"):
      e["name"] = "MemcpyD2H"
  for e in kernels[::20]:                               # every 20th kernel opens an iteration
    e["name"] = "loop_compare_fusion"
  marks = [e["ts"] for e in kernels[::20]]
  per = int(rng.integers(1, 5))
  count, totals = trace_gaps.kernel_totals(events, "loop_compare_fusion", per, families)
  assert count == len(marks) - 2
  gpu = [e for e in events if e.get("pid") == 7 and e.get("ph") == "X"
         and marks[1] <= e["ts"] < marks[-1]]
  expect_us, expect_n = {}, {}
  for e in gpu:
    name = family[e["name"]] if families else e["name"]
    expect_us[name] = expect_us.get(name, 0) + e["dur"]
    expect_n[name] = expect_n.get(name, 0) + 1
  scale = count * per
  assert {n: us for n, us, _ in totals} == pytest.approx(
      {n: t / scale for n, t in expect_us.items()})
  assert {n: k for n, _, k in totals} == pytest.approx({n: k / scale for n, k in expect_n.items()})
  assert [us for _, us, _ in totals] == sorted((us for _, us, _ in totals), reverse=True)


@pytest.mark.parametrize("families", [False, True])
def test_window_kernel_totals_sum_each_name_in_the_window(families):
  """Without loop markers (a prefill): every GPU event starting inside the window, by name."""
  rng = np.random.default_rng()
  events = synthetic_trace(rng, n_kernels=100)
  names = ["gemm_1", "gemm_2", "fusion.7"]
  family = {"gemm_1": "gemm", "gemm_2": "gemm", "fusion.7": "fusion"}
  gpu = [e for e in events if e.get("pid") == 7 and e.get("ph") == "X"]
  for e in gpu:
    e["name"] = str(rng.choice(names))
  origin = min(e["ts"] for e in gpu)
  after_ms, until_ms = float(rng.uniform(0.1, 0.6)), float(rng.uniform(1.0, 1.8))
  expect_us, expect_n = {}, {}
  for e in gpu:
    if origin + after_ms * 1e3 <= e["ts"] < origin + until_ms * 1e3:
      name = family[e["name"]] if families else e["name"]
      expect_us[name] = expect_us.get(name, 0) + e["dur"]
      expect_n[name] = expect_n.get(name, 0) + 1
  totals = trace_gaps.window_kernel_totals(events, after_ms, until_ms, families)
  assert {n: us for n, us, _ in totals} == pytest.approx(expect_us)
  assert {n: k for n, _, k in totals} == expect_n
  assert [us for _, us, _ in totals] == sorted((us for _, us, _ in totals), reverse=True)
  whole = trace_gaps.window_kernel_totals(events)
  assert sum(us for _, us, _ in whole) == pytest.approx(sum(e["dur"] for e in gpu))


def test_cli_kernels_without_iterations_lists_the_window(tmp_path, capsys):
  events = synthetic_trace(np.random.default_rng())
  path = tmp_path / "x.trace.json.gz"
  path.write_bytes(gzip.compress(json.dumps(events).encode()))
  assert trace_gaps.main([str(path), "--kernels", "3", "--top", "0"]) == 0
  out = capsys.readouterr().out
  total_ms = sum(e["dur"] for e in events if e.get("pid") == 7 and e.get("ph") == "X") / 1e3
  assert f"GPU time by kernel in the window: {total_ms:.3f} ms" in out
  assert len([line for line in out.splitlines() if line.startswith("  ") and "x  " in line]) == 3
