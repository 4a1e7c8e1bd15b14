# Prepared at the end of session 8 (its device time spent) for one H200: where the based-360m
# prefill's non-kernel time goes. s8d: the generate program at B = 4 runs 39.86 ms of kernels
# (one decode step included) while e2e.py times its prefill at 42.78 ms (s8b), ~3.8 ms above;
# with mlp_impl "auto" the kernels sum 1.5 ms less but the prefill took 2.05 ms more (s8a/s8b).
#   1. e2e.py at B = 4 (prefill + 1 step: --decode-steps 2) with mlp_impl "xla" and "auto", each
#      with a jax.profiler trace of one more run; trace_gaps.py lists the GPU's idle gaps and what
#      the host did meanwhile;
#   2. the B = 4 prefill again with XLA's command buffers (CUDA graphs) off: if the graphs are
#      split at every Mosaic GPU / cuDNN custom call and updated each run, that costs host time;
#   3. the same trace for the decode loop at B = 256 (65 steps after the 8000-token prefill; the window
#      after 2750 ms holds the last decode steps): 2.14 ms a step (s8a) against 1.93 ms of kernels
#      in one jitted step (s8b).
# Each trace comes back as a tarball of its *.trace.json.gz (python3
# benchmarks/probes/trace_gaps.py FILE.tar.gz reads it).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(for mlp in xla auto; do
   timeout 120 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --mlp-impl $mlp --trace /tmp/trace_b4_$mlp --fallback-impl "" --out $OUT/e2e_b4_trace_$mlp.json --plot /tmp/e2e_b4_trace_$mlp.png
   python3 benchmarks/probes/trace_gaps.py /tmp/trace_b4_$mlp --top 25
   tar czf $OUT/trace_b4_$mlp.tar.gz $(find /tmp/trace_b4_$mlp -name "*.trace.json.gz")
 done
 XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 100 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --fallback-impl "" --out $OUT/e2e_b4_no_command_buffers.json --plot /tmp/e2e_b4_no_command_buffers.png
 timeout 170 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --trace /tmp/trace_d256 --fallback-impl "" --out $OUT/e2e_d256_trace.json --plot /tmp/e2e_d256_trace.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_d256 --top 25 --after-ms 2750
 tar czf $OUT/trace_d256.tar.gz $(find /tmp/trace_d256 -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | tail -n 90 | cut -c1-260
