# Session 5, second device call (nvidia-h200-x2), tree of the commit that adds it: fresh_views is
# the default; based-360m's sliding-window layers go to cuDNN (attn_impl "auto").
#   GPU 0: gpu-marked tests of the Pallas kernel and of the attention layers/model (cuDNN sliding
#          window vs float64 and vs the banded path); stage ablation of the new default kernel
#          (B = 16, 128); per-kernel breakdown at B = 1, 4; feature_waits=2 on top of fresh views.
#   GPU 1: the kernel benchmark's pallas column on all sweeps; based-360m end to end at the
#          target points (prefill B = 4, 128; decode B = 256).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(export CUDA_VISIBLE_DEVICES=0
 timeout 240 python3 -m pytest -q -m gpu tests/pallas_kernels tests/based_jax/test_layers.py tests/based_jax/test_model.py -p no:cacheprovider --durations=5
 PROBE_PARTS=ablation OUT=/tmp timeout 150 python3 benchmarks/probes/probe_kernel.py
 PROBE_BATCHES=1,4 timeout 40 python3 benchmarks/probes/probe_variants.py kernels:default
 MOSAIC_GPU_DUMP_PTXAS=1 timeout 120 python3 benchmarks/probes/probe_variants.py time:fresh_two_waits
) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 200 python3 -m benchmarks.kernels --impls pallas --out-dir $OUT/kernels
 timeout 260 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --time-budget-s 240 --out $OUT/e2e_based.json
) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | grep -v "^\s*$" | tail -n 60 | cut -c1-400; grep -E "spill stores" $f | sort | uniq -c; done
