# Session 5, third device call (nvidia-h200-x2, carry .ffi_build), tree of the commit that adds
# it: the normalize=False key state goes from the kernel's Gram rows to the 273 layout in one
# gather (no psi key sums, no per-segment key-sum prefix).
#   GPU 0: every gpu-marked test (FFI library from .ffi_build).
#   GPU 1: the kernel benchmark's pallas column (batch and length sweeps); per-kernel breakdown
#          at B = 1, 16; fewer segments at B = 1 (target_blocks 132, 66).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
(CUDA_VISIBLE_DEVICES=0 timeout 340 python3 -m pytest -q -m gpu tests -p no:cacheprovider --durations=5) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 200 python3 -m benchmarks.kernels --impls pallas --out-dir $OUT/kernels
 PROBE_BATCHES=1,16 timeout 40 python3 benchmarks/probes/probe_variants.py kernels:default
 PROBE_TIME_BATCHES=1 timeout 60 python3 benchmarks/probes/probe_variants.py time:default,tb132,tb66
) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | grep -v "^\s*$" | tail -n 40 | cut -c1-400; done
