# Session 11, one H200: the decode loop with the stop condition read every 64 steps
# (generate(decode_check_every=64): an inner loop of known trip count, which XLA's WhileThunk runs
# without copying the condition back to the host). s10d's trace of B = 256 (U = 4) showed ~0.5 ms
# of idle GPU per loop iteration, ~130 us a step, at the iteration boundaries.
#   1. B = 1, 64 with the defaults and decode_check_every=64;
#   2. B = 256 with the defaults (U = 4, Triton off) and decode_check_every=64;
#   3. B = 256, U = 1 with Triton off and decode_check_every=64 (does U still matter?).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"  # the empty-list flags are written inline below
NT="--xla-option xla_gpu_enable_triton_gemm=false"
(timeout 150 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 1,64 --priority 1,64 --decode-check-every 64 --out $OUT/d1_d64_check64.json --plot /tmp/a.png
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --decode-check-every 64 --out $OUT/d256_check64.json --plot /tmp/b.png
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --decode-unroll 1 $NT --decode-check-every 64 --out $OUT/d256_u1_nt_check64.json --plot /tmp/c.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ |rror|wrote /root" $OUT/gpu0.log | cut -c1-240
