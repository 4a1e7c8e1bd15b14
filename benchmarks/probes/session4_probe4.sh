# Session 4, fourth device call (nvidia-h200-x2), tree of the commit that adds it (kernel code as
# 218d972, Gram key sums):
#   GPU 0: feature_waits=2 against the default now that the key sums need fewer registers
#          (check, CUPTI medians, ptxas spill report).
#   GPU 1: where the time goes at small batch (per-kernel breakdown at B = 1, 4, 16) and in the
#          based-360m prefill at B = 4 (normalize=True kernel with the reciprocal).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 MOSAIC_GPU_DUMP_PTXAS=1 timeout 420 python3 benchmarks/probes/probe_variants.py time:default,two_waits check:two_waits) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 PROBE_BATCHES=1,4,16 timeout 120 python3 benchmarks/probes/probe_variants.py kernels:default
 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=30 timeout 200 python3 benchmarks/probes/profile_e2e.py prefill
) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[" $f | cut -c1-700; grep -E "spill stores" $f | sort | uniq -c; done
