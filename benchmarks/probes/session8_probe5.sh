# Session 8, fifth device call (one H200, the last ~4 minutes of its device time): the first part
# of session9_probe1.sh, the B = 4 prefill's non-kernel time (s8d: 39.86 ms of kernels in the
# generate program, one decode step included, against e2e.py's 42.78 ms prefill in s8b):
#   1. e2e.py at B = 4, prefill + 1 step (--decode-steps 2), with a jax.profiler trace of one
#      more run, summarised by trace_gaps.py (idle gaps and the host's events meanwhile);
#   2. the same prefill with XLA's command buffers (CUDA graphs) off.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(timeout 100 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --trace /tmp/trace_b4_xla --fallback-impl "" --out $OUT/e2e_b4_trace_xla.json --plot /tmp/e2e_b4_trace_xla.png
 tar czf $OUT/trace_b4_xla.tar.gz $(find /tmp/trace_b4_xla -name "*.trace.json.gz")
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_b4_xla --top 30
 XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 80 $E2E --prefill-batch-sizes 4 --decode-batch-sizes "" --priority 4 --decode-steps 2 --fallback-impl "" --out $OUT/e2e_b4_no_command_buffers.json --plot /tmp/e2e_b4_no_command_buffers.png) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | tail -n 60 | cut -c1-260
