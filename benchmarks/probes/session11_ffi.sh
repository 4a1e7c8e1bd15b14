# Ran in session 11 as s11f (tree 4f4d66e; its BASED_JAX_WGMMA_REGA=1 is now kernel="wgmma", and
# its "wgmma" kernel="wgmma_smem": session11_probe7.sh). Prepared in session 11 for one H200: the first GPU run of the second FFI kernel, kernel="wgmma"
# (ffi/based_attention_wgmma.cu: one warpgroup per (batch, head, 64-column group, segment), the
# state in wgmma accumulators, psi features built once per chunk on the tensor cores into swizzled
# shared memory; written without a GPU, never run before this call). The mma.sync kernel it is
# timed against measured 0.147 / 1.216 / 19.04 ms at B = 1 / 16 / 256 (L 8192, H 16, Dv 64,
# normalize=True); the targets are 0.08 / 0.45 / 6.8 ms. This call:
#   1. builds the library (both kernels, one .so) with `python3 -m ffi.build`;
#   2. ffi.diagnose: a self-test of the wgmma conventions alone (descriptor, swizzle, fragment
#      order, A from registers), then the wgmma kernel's error path by path (one chunk, two chunks,
#      initial state, tail, segment split, Dv 112 / 128) against the float64 oracle: if something is
#      wrong, which part is; once for the default and once for BASED_JAX_WGMMA_REGA=1 (P and
#      psi_k(K)^T fed to the wgmmas from registers: two barriers and ~64 smem stores less a chunk);
#   3. times mma_sync, wgmma and wgmma_rega at L 8192, H 16, Dv 64, normalize=True,
#      B = 1, 16, 256, then 4, 64 (ffi.bench: CUPTI median of 20 calls after warm-up; JSON
#      rewritten after every case), then the per-kernel breakdown of one call at B = 1 and 16
#      (pass 1, prefix, pass 2, layout gathers) into ffi_bench.log;
#   4. the gpu-marked tests of tests/ffi (forward tests for both kernels, -x) into ffi_pytest.log.
# Each stage has its own timeout (sum 405 s, under 7 minutes), so a hang in one leaves time for
# the others (session 7's gpu tests spent ~50 s compiling the grad test's XLA backward alone).
# Files back: ffi_build.log, ffi_diag.log, ffi_diag_rega.log, ffi_bench.log, ffi_bench.json,
# ffi_pytest.log.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 75 python3 -m ffi.build -v > $OUT/ffi_build.log 2>&1
echo "build rc=$? $(tail -n 1 $OUT/ffi_build.log | cut -c1-200)"
timeout 35 python3 -m ffi.diagnose --kernel wgmma > $OUT/ffi_diag.log 2>&1
echo "diagnose rc=$?"; grep -E "^wgmma|rror" $OUT/ffi_diag.log | cut -c1-240
BASED_JAX_WGMMA_REGA=1 timeout 35 python3 -m ffi.diagnose --kernel wgmma > $OUT/ffi_diag_rega.log 2>&1
echo "diagnose (rega) rc=$?"; grep -E "^wgmma|rror" $OUT/ffi_diag_rega.log | cut -c1-240
timeout 100 python3 -m ffi.bench --quick --kernel all --batches 1,16,256,4,64 --iterations 20 \
  --breakdown-batches 1,16 --out $OUT/ffi_bench.json > $OUT/ffi_bench.log 2>&1
echo "bench rc=$?"; grep -E "median|FAILED|rror|breakdown .*(kernels,|wgmma_kernel|prefix)" $OUT/ffi_bench.log | cut -c1-200
timeout 160 python3 -m pytest -q -x --durations=6 -m gpu tests/ffi > $OUT/ffi_pytest.log 2>&1
echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $OUT/ffi_pytest.log | tail -n 6 | cut -c1-240
