# Session 11, one H200, the last ~8 minutes of device time, after s11f (session11_ffi.sh: the wgmma
# kernel passed every gpu test on its first run and took half the mma.sync kernel's time; the
# register-operand variant 3-6% less again). Since then the register-operand variant is
# ffi.linear_attention's default kernel ("wgmma"; "wgmma_smem" the other one), chosen by an FFI
# attribute instead of an environment variable. This call:
#   1. builds the library;
#   2. times pallas against ffi (now the wgmma kernel) with benchmarks.kernels' method
#      (normalize=False, CUPTI median of 20) at L 8192, H 16, B = 1, 4, 16, 64, 256: the table that
#      decides impl="auto"'s order;
#   3. the gpu tests of tests/ffi for the two wgmma kernels (the mma_sync ones passed in s11f and
#      that kernel did not change);
#   4. if time is left: based-360m with the one-expression rotary embedding (decode B = 256,
#      prefill B = 4; the A/B against the old formula did not fit: session12_probe2.sh).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 60 python3 -m ffi.build > $OUT/build.log 2>&1; echo "build rc=$?"
timeout 110 python3 -m benchmarks.kernels --impls pallas,ffi --shapes 1x8192,16x8192,256x8192,4x8192,64x8192 --out-dir /tmp/kernels > $OUT/kernels.log 2>&1
echo "kernels rc=$?"; cp /tmp/kernels/kernels.json $OUT/kernels.json 2>/dev/null
grep -E "pallas|ffi" $OUT/kernels.log | grep -E "ms" | cut -c1-200 | tail -n 12
timeout 150 python3 -m pytest -q -x -m gpu tests/ffi -k "not mma_sync" > $OUT/ffi_pytest.log 2>&1
echo "pytest rc=$?"; tail -n 3 $OUT/ffi_pytest.log | cut -c1-240
timeout 140 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4 --decode-batch-sizes 256 --fallback-impl "" --priority 256,4 --out $OUT/rotary_flip.json --plot /tmp/a.png > $OUT/rotary.log 2>&1
grep -E "B= *[0-9]+ |rror" $OUT/rotary.log | cut -c1-240
