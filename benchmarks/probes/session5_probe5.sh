# Session 5, fifth device call (nvidia-h200-x2), tree of the commit that adds it: the "sm"
# segment planner is the default.
#   GPU 0: "waves" vs "sm" where they pick different segment counts and s5d did not time the
#          "sm" choice (n: normalize=True, the model's variant; L = 8000 is e2e's prompt).
#   GPU 1: the kernel benchmark's pallas column, batch sweep and B = 1 length sweep.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 PROBE_TIME_SHAPES=4x1024,2x2048,1x8000,4x8000,1x8000n,4x8000n timeout 150 python3 benchmarks/probes/probe_variants.py time:waves,sm) > $OUT/gpu0.log 2>&1 &
(CUDA_VISIBLE_DEVICES=1 timeout 150 python3 -m benchmarks.kernels --impls pallas --sweeps batch,long --out-dir $OUT/kernels) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[|pallas" $f | cut -c1-300; done
