# Session 5, first device call (nvidia-h200-x2), tree of the commit that adds it:
#   GPU 0: the single-warpgroup kernel with fresh_views (scratch views through an opaque 0, so
#          wgmma descriptors are computed at their use, not spilled across the chunk loop)
#          against the default: correctness, CUPTI medians, ptxas spill report.
#   GPU 1: based-360m prefill (B = 4, 128; 8000 tokens) under XLA flags that change how XLA
#          emits matmuls (Triton gemm fusions for every dot, or none).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 MOSAIC_GPU_DUMP_PTXAS=1 timeout 400 python3 benchmarks/probes/probe_variants.py time:default,fresh check:fresh) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 E2E="python3 -m benchmarks.e2e --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 1 --decode-steps 2 --repeats 3 --memory-lengths ''"
 for flags in "" "--xla_gpu_triton_gemm_any=true" "--xla_gpu_enable_triton_gemm=false"; do
   echo "=== XLA_FLAGS=$flags"
   XLA_FLAGS="$flags" timeout 130 $E2E --out /tmp/e2e.json --plot /tmp/e2e.png 2>&1 | grep -E "B=|Error|error" | cut -c1-300
 done) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[|^===|B=" $f | cut -c1-700; grep -E "spill stores" $f | sort | uniq -c; done
