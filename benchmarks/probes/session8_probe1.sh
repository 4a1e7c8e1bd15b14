# Session 8, first device call. Only nvidia-h200 (one GPU) was lent, so the two-GPU plan prepared
# in session 7 runs in sequence, most decisive first (each e2e config is ~80 s, ~40 s of it compile):
#   1. the decode step at B = 256 with generate(decode_state="symmetric") (153-row linear-attention
#      states in the loop, 56% of the state bytes; written in session 7, never timed), then with
#      Triton gemm fusions off as well, then the default 273-row states, all on this GPU;
#   2. why the fused SwiGLU gate (mlp_impl "auto") made the based-360m prefill slower inside the
#      model (47.63 vs 43.21 ms at B = 4, s7c) although the kernel beats XLA's gemm + gate alone
#      (0.388 vs 0.421 ms at 32000 rows, s7b): per-kernel profiles of the B = 4 prefill with
#      mlp_impl "xla" and "auto".
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(timeout 110 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --decode-state symmetric --fallback-impl "" --out $OUT/e2e_decode_symmetric.json --plot /tmp/e2e_decode_symmetric.png
 timeout 110 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --decode-state symmetric --xla-option xla_gpu_enable_triton_gemm=false --fallback-impl "" --out $OUT/e2e_decode_symmetric_no_triton.json --plot /tmp/e2e_decode_symmetric_no_triton.png
 timeout 110 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --decode-state full --fallback-impl "" --out $OUT/e2e_decode_full.json --plot /tmp/e2e_decode_full.png
 export PROFILE_PREFILL_BATCH=4 PROFILE_TOP=40
 for mlp in xla auto; do
   PROFILE_MLP_IMPL=$mlp timeout 110 python3 benchmarks/probes/profile_e2e.py prefill
 done) > $OUT/gpu0.log 2>&1
grep -E "^\[|B= *[0-9]+ (prefill|decode)|error|Error" $OUT/gpu0.log | cut -c1-300
