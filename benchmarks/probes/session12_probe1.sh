# Session 12, one H200 (nvidia-h200), about 6 minutes; repo root is the cwd, $OUT the output folder.
# Prepared in session 11 without a GPU (branch ffi-next) for issue #4, the CUDA wgmma kernel behind the
# XLA FFI, which s11f/s11g measured at 0.0863 / 0.6144 / 9.6623 ms (B = 1 / 16 / 256, L 8192, H 16,
# Dv 64, normalize=False; Pallas 0.0694 / 0.3935 / 6.5468, targets 0.08 / 0.45 / 6.8). Two options
# were added, neither of which changes the default kernel (its machine code is byte-identical):
#   * segments= (ffi.linear_attention keyword, FFI attribute `segments`): the sequence-segment count,
#     0 = today's automatic plan (16 at B = 1, the Pallas planner uses 8);
#   * kernel="wgmma_gram": with normalize=False no ones column (m64n64 instead of m64n72 output and
#     state products, 11% fewer tensor-core columns); the key sums come back as Gram rows
#     [B, H, 17, 16] and Python rebuilds k_state (psi_layout.key_sums_from_gram). Never run on a GPU.
# This call:
#   1. builds the library (python3 -m ffi.build);
#   2. ffi.diagnose --kernel wgmma_gram: the Gram self-test (m64n56 smem, build_kt + m64n16 and
#      m64n64 with register A) and every error path with normalize=False. DECIDES: if anything is
#      off, which part (self-test line = a hardware convention; ks only = the Gram rows / their
#      rebuild; out/kv = the N = GV products) -- read this before any Gram timing;
#   3. ffi.bench, default kernel only (own process, so a fault in the new variant cannot cost
#      these numbers): L 8192, H 16, Dv 64, B = 1, 4, 16, 64, 256, normalize True and False with
#      automatic segments, plus segments 4 / 8 / 16 / 32 at B = 1 and 4; the per-kernel breakdown
#      at B = 1 (pass 1 / prefix / pass 2). DECIDES: which segment count (if any) replaces the
#      automatic plan at small B: a count that beats automatic by > 2% at B = 1 or 4 in both
#      normalize modes becomes plan_segments' choice there (else the plan stays);
#   4. ffi.bench --kernel wgmma_gram (normalize=False only: with normalize=True it is "wgmma"),
#      same batches and segment sweep, breakdown at B = 1. DECIDES: whether wgmma_gram's launch
#      becomes the default for normalize=False (it must beat stage 3's normalize=False rows at
#      B = 16 and 256 and not lose at B = 1 / 4, and stages 2 and 6 must be clean);
#   5. python3 -m ffi.bench_report on both JSON files (no GPU, a few seconds): per (B, normalize)
#      automatic vs best segment count and wgmma_gram / wgmma, the lines the decisions above read;
#   6. the gpu-marked tests of the new options (-k "wgmma_gram or segment": the Gram variant
#      against the float64 oracle incl. initial states, NaN-poisoned outputs, vmap, > 2^31
#      elements; explicit segment counts 1..1024 for wgmma and wgmma_gram).
# Stage timeouts sum to 355 s (ffi.bench rewrites its JSON after every case, so a timeout keeps
# what was measured; B = 64 is timed last). The times themselves are printed by stage 5. Files back (8): build.log, diag_gram.log,
# diag_gram.json, bench_wgmma.log, bench_wgmma.json, bench_gram.log, bench_gram.json, pytest.log.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
BATCHES=1,4,16,256,64
SWEEP="--segments 0,4,8,16,32 --segment-batches 1,4"

timeout 75 python3 -m ffi.build -v > $OUT/build.log 2>&1
echo "build rc=$? $(tail -n 1 $OUT/build.log | cut -c1-160)"

timeout 35 python3 -m ffi.diagnose --kernel wgmma_gram --out $OUT/diag_gram.json > $OUT/diag_gram.log 2>&1
echo "diagnose rc=$?"; grep -E "^wgmma|^gram|rror" $OUT/diag_gram.log | cut -c1-260

timeout 90 python3 -m ffi.bench --quick --both --kernel wgmma --batches $BATCHES $SWEEP --iterations 20 \
  --breakdown-batches 1 --out $OUT/bench_wgmma.json > $OUT/bench_wgmma.log 2>&1
echo "bench wgmma rc=$? $(grep -c median $OUT/bench_wgmma.log) cases timed"
grep -E "FAILED|rror|breakdown .*(kernels,|wgmma_kernel|prefix)" $OUT/bench_wgmma.log | cut -c1-200

timeout 55 python3 -m ffi.bench --quick --both --kernel wgmma_gram --batches $BATCHES $SWEEP --iterations 20 \
  --breakdown-batches 1 --out $OUT/bench_gram.json > $OUT/bench_gram.log 2>&1
echo "bench gram rc=$? $(grep -c median $OUT/bench_gram.log) cases timed"
grep -E "FAILED|rror|breakdown .*(kernels,|wgmma_kernel|prefix)" $OUT/bench_gram.log | cut -c1-200

timeout 10 python3 -m ffi.bench_report $OUT/bench_wgmma.json $OUT/bench_gram.json | cut -c1-300

timeout 90 python3 -m pytest -q -x --durations=5 -m gpu tests/ffi -k "wgmma_gram or segment" > $OUT/pytest.log 2>&1
echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $OUT/pytest.log | tail -n 6 | cut -c1-240
