# Prepared at the end of session 7 (its device time spent) for nvidia-h200-x2; each GPU's part
# fits in ~9 minutes.
#   GPU 0: why the fused SwiGLU gate (mlp_impl "auto") made the based-360m prefill slower inside
#          the model (47.63 vs 43.21 ms at B = 4, s7c) although the kernel beats XLA's gemm +
#          gate alone (0.388 vs 0.421 ms at 32000 rows, s7b): per-kernel profiles of the B = 4
#          prefill with mlp_impl "xla" and "auto"; then the decode-step profile at B = 256 on
#          the shipped code (the last one, s3a, predates cuDNN's sliding window and the
#          register-operand kernel) to count the kernels a step for the 1.5 ms target.
#   GPU 1: the decode step at B = 256 with generate(decode_state="symmetric") (153-row
#          linear-attention states in the loop, 56% of the state bytes; written in session 7,
#          never timed) and, on the same GPU, with the default 273-row states; then every gemm
#          through Triton (xla_gpu_triton_gemm_any, from session7_probe2.sh) for prefill B = 4
#          and decode B = 256.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(export CUDA_VISIBLE_DEVICES=0 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=40
 for mlp in xla auto; do
   PROFILE_MLP_IMPL=$mlp timeout 130 python3 benchmarks/probes/profile_e2e.py prefill
 done
 PROFILE_DECODE_BATCHES=256 PROFILE_TOP=60 timeout 250 python3 benchmarks/probes/profile_e2e.py decode) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 for state in symmetric full; do
   timeout 170 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --decode-state $state --fallback-impl "" --out $OUT/e2e_decode_$state.json --plot /tmp/e2e_decode_$state.png
 done
 timeout 240 $E2E --prefill-batch-sizes 4 --decode-batch-sizes 256 --priority 4,256 --time-budget-s 200 --xla-option xla_gpu_triton_gemm_any=true --fallback-impl "" --out $OUT/e2e_triton_any.json --plot /tmp/e2e_triton_any.png) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[|B= *[0-9]+ prefill|error|Error" $f | cut -c1-300; done
