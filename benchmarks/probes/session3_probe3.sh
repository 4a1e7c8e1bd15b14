# Session 3, third device call (nvidia-h200-x2), from the repo root:
#   GPU 0: KernelConfig(feature_waits=2) correctness vs the float32 XLA path, then timed
#          against the default at L = 8192 (B = 1 ... 256, and B = 128 with normalize=True).
#   host CPUs: the interpreter test of the groups kernel (after the `done` barrier fix).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 bash -c "MOSAIC_GPU_DUMP_PTXAS=1 timeout 150 python3 benchmarks/probes/probe_variants.py check:two_waits > $OUT/check.log 2>&1; timeout 240 python3 benchmarks/probes/probe_variants.py time:default,two_waits > $OUT/time.log 2>&1") &
(JAX_PLATFORMS=cpu timeout 300 python3 -m pytest -q tests/pallas_kernels/test_kernel_interpret.py -k "groups" -p no:cacheprovider -rs > $OUT/interpret.log 2>&1) &
wait
grep -v "^W0000\|^I0000\|^E0000" $OUT/check.log | grep -i "check\|spill\|error\|fail" | head -40
grep "time\|FAIL" $OUT/time.log | tail -20
tail -n 3 $OUT/interpret.log
