# Session 11, one H200, after session11_probe1.sh confirmed the decode defaults (B = 256: 1.85 ms a
# step; U = 2 1.88; at B = 1 / 64 neither U = 4 nor Triton off alone beats U = 1 with Triton on).
# The B = 256 decode spends ~740 us of its 1725 us of GPU time in 109 cuBLAS nvjet gemms at
# 6.3-8 us each whatever N (s10d), L2-bound small-M tiles. Cheap knobs not yet tried there:
#   1. decode B = 256, the defaults plus cuBLASLt for the gemms (its heuristics may split K);
#   2. decode B = 256, the SwiGLU gate fused into the fc1 gemm (mlp_impl="pallas": 27 elementwise
#      kernels a step fewer, if its M = 256 gemm keeps up with nvjet);
# and for the B = 128 prefill (1283 ms against 1.1 s), session9_probe2.sh's two option sets:
#   3. every gemm through Triton (xla_gpu_triton_gemm_any: elementwise neighbours fuse into them);
#   4. XLA's experimental Triton fusions (block-level rewriter, heroless priority fusion).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"  # the empty-list flags are written inline below
(timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --xla-option xla_gpu_enable_cublaslt=true --out $OUT/d256_cublaslt.json --plot /tmp/a.png
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --mlp-impl pallas --out $OUT/d256_mlp_pallas.json --plot /tmp/b.png
 timeout 110 $E2E --prefill-batch-sizes 128 --decode-batch-sizes "" --fallback-impl "" --priority 128 --decode-steps 2 --xla-option xla_gpu_triton_gemm_any=true --out $OUT/p128_triton_any.json --plot /tmp/c.png
 timeout 110 $E2E --prefill-batch-sizes 128 --decode-batch-sizes "" --fallback-impl "" --priority 128 --decode-steps 2 --xla-option xla_gpu_experimental_enable_fusion_block_level_rewriter=true --xla-option xla_gpu_experimental_enable_triton_heroless_priority_fusion=true --out $OUT/p128_triton_fusions.json --plot /tmp/d.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ |rror|wrote /root" $OUT/gpu0.log | cut -c1-240
