# Prepared at the end of session 8 for one H200, after session9_probe1.sh: session7_probe2.sh's
# two XLA option sets that never ran, on one GPU, against session9_probe1.sh's default run:
#   1. every gemm through Triton (xla_gpu_triton_gemm_any: may fuse the SwiGLU and BaseConv
#      gating products into the gemms; they are near their memory floor as separate passes,
#      ~5 ms at B = 4, so only fusion into the gemms removes them);
#   2. XLA's experimental Triton fusions of reductions with their elementwise neighbours (the
#      block-level rewriter and heroless priority fusion: fewer kernels for the norms of the
#      ~330-kernel decode step, s8b).
# Prefill at B = 4 and 128, decode at B = 256 (65 steps), each setting in one e2e.py call.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --time-budget-s 250"
(timeout 290 $E2E --xla-option xla_gpu_triton_gemm_any=true --fallback-impl "" --out $OUT/e2e_triton_any.json --plot /tmp/e2e_triton_any.png
 timeout 290 $E2E --xla-option xla_gpu_experimental_enable_fusion_block_level_rewriter=true --xla-option xla_gpu_experimental_enable_triton_heroless_priority_fusion=true --fallback-impl "" --out $OUT/e2e_triton_fusions.json --plot /tmp/e2e_triton_fusions.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ prefill|error|Error" $OUT/gpu0.log | cut -c1-300
