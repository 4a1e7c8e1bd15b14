# Session 8, second device call (one H200), on the tree that makes decode_state="symmetric" the
# default (s8a: 2.14 against 2.43 ms a step at B = 256):
#   1. the B = 4 and B = 128 prefills end to end with mlp_impl "xla" and "auto" on the same GPU,
#      one after the other (B = 128 last): s8a's profiles sum 40.71 ms of kernels with "xla" and
#      39.20 ms with "auto", while s7c's e2e runs (on two different GPUs) had "auto" 4.4 ms slower;
#   2. one jitted based-360m decode step at B = 256 (profile_e2e.py step: each kernel once, no
#      prefill kernels mixed in), default and with Triton gemm fusions off (s8a: 1.99 ms a step
#      with the symmetric state), with the optimized HLO of both, to tie fusions to the model;
#   3. the HLO of the B = 4 prefill, for the same reason (its kernel list is in s8a);
# (The Nsight Compute plan of session 7 for the stretch target is left for a later call.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(for mlp in xla auto; do
   timeout 95 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --mlp-impl $mlp --fallback-impl "" --out $OUT/e2e_b4_mlp_$mlp.json --plot /tmp/e2e_b4_$mlp.png
 done
 export PROFILE_HLO_DIR=$OUT PROFILE_DECODE_BATCHES=256 PROFILE_TOP=70
 timeout 90 python3 benchmarks/probes/profile_e2e.py step
 mkdir -p $OUT/no_triton
 PROFILE_HLO_DIR=$OUT/no_triton PROFILE_TOP=45 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false timeout 90 python3 benchmarks/probes/profile_e2e.py step 2>&1 | sed 's/symmetric)/symmetric, triton gemm off)/'
 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=3 timeout 70 python3 benchmarks/probes/profile_e2e.py prefill
 for mlp in xla auto; do
   timeout 100 $E2E --prefill-batch-sizes 128 --decode-batch-sizes "" --priority 128 --mlp-impl $mlp --fallback-impl "" --out $OUT/e2e_b128_mlp_$mlp.json --plot /tmp/e2e_b128_$mlp.png
 done) > $OUT/gpu0.log 2>&1
grep -E "^\[|B= *[0-9]+ (prefill|decode)|error|Error" $OUT/gpu0.log | cut -c1-200
