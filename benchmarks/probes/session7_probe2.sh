# Prepared in session 6 (no device time) for nvidia-h200-x2: based-360m end to end (prefill 8000
# tokens at B = 4 and 128, decode at B = 256) under per-program XLA options
# (benchmarks/e2e.py --xla-option -> generate(compiler_options=...)), two settings per GPU:
#   GPU 0: the shipped defaults (also the first end-to-end run of the "sm" planner and of the
#          session-6 tree), then Triton gemm fusions off (s4a: decode B = 256 5% faster).
#   GPU 1: every gemm through Triton (xla_gpu_triton_gemm_any: may fuse the SwiGLU and BaseConv
#          gating products into the gemms, ~5 ms at B = 4 and ~180 ms at B = 128 in s4d / s3a),
#          then XLA's experimental Triton fusions of reductions with their elementwise neighbours
#          (the block-level rewriter and heroless priority fusion: fewer kernels for the norms of
#          the ~366-kernel decode step, if they fire). Command buffers are on by default for
#          fusions and gemms (XLA profiles run op by op); s4a's set adding WHILE / CONDITIONAL
#          made the decode step 55% slower, so it is not repeated.
# $OUT brings back at most 8 files: the JSONs and logs come back, the plots stay on the machine.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --time-budget-s 200"
(export CUDA_VISIBLE_DEVICES=0
 timeout 280 $E2E --out $OUT/e2e_default.json --plot /tmp/e2e_default.png
 timeout 280 $E2E --xla-option xla_gpu_enable_triton_gemm=false --out $OUT/e2e_no_triton.json --plot /tmp/e2e_no_triton.png) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 280 $E2E --xla-option xla_gpu_triton_gemm_any=true --out $OUT/e2e_triton_any.json --plot /tmp/e2e_triton_any.png
 timeout 280 $E2E --xla-option xla_gpu_experimental_enable_fusion_block_level_rewriter=true --xla-option xla_gpu_experimental_enable_triton_heroless_priority_fusion=true --out $OUT/e2e_triton_fusions.json --plot /tmp/e2e_triton_fusions.png) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "B= *[0-9]+ prefill|error|Error" $f | cut -c1-300; done
