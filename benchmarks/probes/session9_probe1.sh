# Prepared at the end of session 8 (its device time spent) for one H200. Session 8's last call
# (s8e) traced the single-program generate at B = 4: JAX's Python dispatch of a program with host
# callbacks (~300 parameter arrays) before the prefill's kernels, and the first-token callback
# stalling the kernel launches after it. generate now runs two programs without host callbacks
# (prefill; decode loop with the cache donated), measured on the CPU only (7.87 -> 6.09 ms to the
# first token, a tiny 27-layer model), and the prefill computes the last layer only where it is
# read (4.0% of based-360m's prefill matmul FLOPs). This call measures both on the GPU: s8b had
# the B = 4 prefill at 42.78 ms (target 40) and B = 128 at 1314.01 ms (target 1100), s8a the
# B = 256 decode step at 2.14 ms (target 1.5).
#   1. e2e.py with the defaults at the targets' batches (prefill B = 4 and 128, decode B = 256,
#      65 steps): the numbers for the table;
#   2. e2e.py at B = 4 (prefill + 1 step: --decode-steps 2) with mlp_impl "xla" and "auto", each
#      with a jax.profiler trace of one more run; trace_gaps.py lists the GPU's idle gaps and what
#      the host did meanwhile (s8e: 19 ms idle in the traced single-program run);
#   3. the same trace for the decode loop at B = 256 (65 steps after the 8000-token prefill; the
#      window after 2750 ms holds the last decode steps): 2.14 ms a step (s8a) against 1.93 ms of
#      kernels in one jitted step (s8b).
# Each trace comes back as a tarball of its *.trace.json.gz (python3
# benchmarks/probes/trace_gaps.py FILE.tar.gz reads it).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(timeout 260 $E2E --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --fallback-impl "" --out $OUT/e2e_default.json --plot /tmp/e2e_default.png
 for mlp in xla auto; do
   timeout 120 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --mlp-impl $mlp --trace /tmp/trace_b4_$mlp --fallback-impl "" --out $OUT/e2e_b4_trace_$mlp.json --plot /tmp/e2e_b4_trace_$mlp.png
   python3 benchmarks/probes/trace_gaps.py /tmp/trace_b4_$mlp --top 25
   tar czf $OUT/trace_b4_$mlp.tar.gz $(find /tmp/trace_b4_$mlp -name "*.trace.json.gz")
 done
 timeout 170 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --trace /tmp/trace_d256 --fallback-impl "" --out $OUT/e2e_d256_trace.json --plot /tmp/e2e_d256_trace.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_d256 --top 25 --after-ms 2750
 tar czf $OUT/trace_d256.tar.gz $(find /tmp/trace_d256 -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | tail -n 90 | cut -c1-260
