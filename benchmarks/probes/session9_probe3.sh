# Session 9, one H200, after session9_probe1.sh (s9a) showed the two-program generate's
# prefill_s taking in the whole decode loop (101.50 ms at B = 4 with 64 decode steps behind it,
# 41.40 ms with one): on a GPU the decode program's call returns only when its loop has
# finished, and the first token was read after that call. generate now reads the first token
# before calling the decode program, and keeps its PRNG keys and hashes dtypes instead of their
# str() (~2 ms of host time per call before the launch, s9a's trace). This call:
#   1. e2e.py with the defaults at the targets' batches (prefill B = 4 and 128, decode B = 256):
#      the numbers for the table;
#   2. the B = 4 prefill with XLA's command buffers off: s9a's trace has the prefill's first
#      cuGraphLaunch at 1.17 ms of host time before its first kernel;
#   3. a trace of the B = 4 run (prefill + 1 step) and trace_gaps.py over it;
#   4. the generation and decode tests on the GPU, all of them (not only the gpu-marked ones).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(timeout 230 $E2E --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --fallback-impl "" --out $OUT/e2e_default.json --plot /tmp/e2e_default.png
 XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 80 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --fallback-impl "" --out $OUT/e2e_b4_no_command_buffers.json --plot /tmp/e2e_b4_ncb.png
 timeout 90 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --trace /tmp/trace_b4 --fallback-impl "" --out $OUT/e2e_b4_trace.json --plot /tmp/e2e_b4_trace.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_b4 --top 12
 tar czf $OUT/trace_b4.tar.gz $(find /tmp/trace_b4 -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | grep -v "^wrote /tmp" | tail -n 40 | cut -c1-220
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/based_jax/test_generation.py tests/based_jax/test_decode.py > $OUT/pytest.log 2>&1; echo "pytest rc $?"
tail -n 8 $OUT/pytest.log
