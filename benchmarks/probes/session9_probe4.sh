# Session 9, one H200, after session9_probe3.sh (s9b): the B = 4 prefill was 40.79 ms (target
# 40). s9b's trace: the first token's copy to the host started ~1.0 ms after the prefill's last
# kernel (np.asarray alone waits for the buffer on the host, then queues the copy). generate
# now queues that copy right behind the prefill (copy_to_host_async) and puts the prompt on the
# device with device_put (jnp.asarray ran a program, 1.4 ms of host time). This call:
#   1. e2e.py at B = 4 (prefill + 64 decode steps), the defaults;
#   2. a trace of the B = 4 run (prefill + 1 step) and trace_gaps.py over it;
#   3. the generation and decode tests on the GPU, all 66 (s9b's 200 s ran out at 43, all passed).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(timeout 90 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --fallback-impl "" --out $OUT/e2e_b4.json --plot /tmp/e2e_b4.png
 timeout 90 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --trace /tmp/trace_b4 --fallback-impl "" --out $OUT/e2e_b4_trace.json --plot /tmp/e2e_b4_trace.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_b4 --top 8
 tar czf $OUT/trace_b4.tar.gz $(find /tmp/trace_b4 -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | grep -v "^wrote /tmp" | tail -n 20 | cut -c1-220
timeout 340 python3 -m pytest -q -p no:cacheprovider tests/based_jax/test_generation.py tests/based_jax/test_decode.py > $OUT/pytest.log 2>&1; echo "pytest rc $?"
tail -n 8 $OUT/pytest.log
