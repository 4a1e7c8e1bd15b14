# Session 5, fourth device call (nvidia-h200-x2), tree of the commit that adds it: where the
# segment planner's choice changes with target_blocks 132 instead of 264, both timed (CUPTI
# median of 20, normalize=False, H = 16, Dv = 64), split over the two GPUs.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 PROBE_TIME_SHAPES=1x8192,1x4096,1x16384,1x32768,1x65536 timeout 150 python3 benchmarks/probes/probe_variants.py time:default,tb132) > $OUT/gpu0.log 2>&1 &
(CUDA_VISIBLE_DEVICES=1 PROBE_TIME_SHAPES=2x8192,4x8192,8x8192,4x1024,8x2048 timeout 150 python3 benchmarks/probes/probe_variants.py time:default,tb132) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[" $f | cut -c1-300; done
