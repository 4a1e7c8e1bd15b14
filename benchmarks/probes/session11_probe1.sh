# Prepared at the end of session 10 for one H200: the decode defaults, one change at a time.
# s10a/s10b (B = 256, 65 steps after an 8000-token prompt): U = 1 2.10 ms a step, U = 4 1.97,
# U = 4 with Triton gemm fusions off 1.85; but B = 64 with U = 4 and Triton off (and XLA's WHILE
# command-buffer types) took 1.31 ms against 1.22 with the defaults, B = 1 1.22 against 1.20.
# Since then generate's defaults ("auto", auto_decode_settings) are U = 4 with the decode
# program's Triton gemm fusions off on Hopper from B = 256 up, and U = 1 with Triton below.
# This call separates the two changes at B = 1 and 64, times the new defaults at B = 256 (the
# targets' row), and tries U = 2 there (the trace of U = 4 fits XLA deferring every other
# linear-attention state write: U = 2 may get most of it):
#   1. B = 1, 64: U = 4 with the default options; U = 1 with Triton gemm fusions off;
#   2. B = 256: the defaults, then U = 2 with Triton gemm fusions off;
#   3. probe_swa_decode.py: the sliding-window ring attention of one decode step at B = 256 by
#      formulation (the library's, a head-major ring, cuDNN), against its ~16 us byte floor.
# Move AUTO_DECODE_MIN_BATCH or the settings in based_jax/generation.py to what wins.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
NT="--xla-option xla_gpu_enable_triton_gemm=false"
E2E="python3 benchmarks/e2e.py --models based-360m"  # the empty-list flags are written inline below
(timeout 130 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 1,64 --priority 1,64 --decode-unroll 4 --out $OUT/d1_d64_u4.json --plot /tmp/a.png
 timeout 130 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 1,64 --priority 1,64 --decode-unroll 1 $NT --out $OUT/d1_d64_u1_nt.json --plot /tmp/b.png
 timeout 95 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --out $OUT/d256_defaults.json --plot /tmp/c.png
 timeout 95 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --decode-unroll 2 $NT --out $OUT/d256_u2_nt.json --plot /tmp/d.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ |rror|wrote /root" $OUT/gpu0.log | cut -c1-240
# the first call (whose e2e lines failed to parse) ran this part; the rerun skips it
true || timeout 120 python3 benchmarks/probes/probe_swa_decode.py > $OUT/swa_decode.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(" $OUT/swa_decode.log | tail -n 6 | cut -c1-240
