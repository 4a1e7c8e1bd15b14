# Session 3, second device call (nvidia-h200-x2), from the repo root:
#   GPU 0: KernelConfig(schedule="groups") correctness vs the float32 XLA path (ptxas register /
#          spill report via MOSAIC_GPU_DUMP_PTXAS), then both schedules timed at L = 8192.
#   GPU 1: every gpu-marked test; meanwhile the host CPUs run the four-warpgroup kernel in the
#          Mosaic GPU interpreter (it needs >= 4 host CPUs, which the CPU dev box lacks).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
(CUDA_VISIBLE_DEVICES=0 bash -c "MOSAIC_GPU_DUMP_PTXAS=1 timeout 200 python3 benchmarks/probes/probe_variants.py check:groups > $OUT/check.log 2>&1; timeout 220 python3 benchmarks/probes/probe_variants.py time:default,groups > $OUT/time.log 2>&1") &
(CUDA_VISIBLE_DEVICES=1 timeout 400 python3 -m pytest -q -m gpu tests -p no:cacheprovider --durations=10 > $OUT/gpu_tests.log 2>&1) &
(JAX_PLATFORMS=cpu timeout 400 python3 -m pytest -q tests/pallas_kernels/test_kernel_interpret.py -k "groups and matches" -p no:cacheprovider -rs > $OUT/interpret.log 2>&1) &
wait
grep -v "^W0000\|^I0000\|^E0000" $OUT/check.log | grep -i "check\|spill\|error\|fail" | head -40
grep "time\|FAIL" $OUT/time.log | tail -20
tail -n 5 $OUT/interpret.log
tail -n 15 $OUT/gpu_tests.log
