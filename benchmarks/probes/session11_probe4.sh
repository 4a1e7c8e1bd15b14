# Session 11, one H200, after session11_ffi.sh in the same call: where the B = 128 prefill's time
# goes now (1283 ms in s9b, 1264 ms with every gemm through Triton in s11b; target 1.1 s). The
# last per-kernel profile of it is s5's (1430 ms then: cuBLAS 941 ms, elementwise fusions 435 ms).
# One e2e.py run with the defaults and a jax.profiler trace of one more run, read here by
# trace_gaps.py --kernels (kernel names by GPU time) and brought back as a tarball.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 170 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 128 --decode-batch-sizes "" --fallback-impl "" --priority 128 --decode-steps 2 --repeats 2 --trace /tmp/trace_p128 --out $OUT/p128_trace_run.json --plot /tmp/p.png > $OUT/p128.log 2>&1
grep -E "B= *[0-9]+ |rror" $OUT/p128.log | cut -c1-240
tar czf $OUT/p128_trace.tar.gz -C /tmp trace_p128 2>/dev/null
timeout 60 python3 benchmarks/probes/trace_gaps.py /tmp/trace_p128 --top 3 --kernels 45 2>&1 | tail -n 52 | cut -c1-200
