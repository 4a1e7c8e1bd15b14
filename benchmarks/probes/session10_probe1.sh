# Prepared at the end of session 9 for one H200: the decode loop's per-iteration cost.
# s9a's trace of the B = 256 decode (results/session9/probe1_trace_d256.tar.gz; trace_gaps.py
# --iterations loop_compare_fusion): 64 iterations, each 2405 us with 2008 us of GPU work and a
# 372 us idle gap before the body's first kernel, while the host reads the loop condition back
# and launches the body's command buffer (cuGraphLaunch ~490 us under the profiler). Without the
# profiler the step is 2.16 ms (s9b), so ~0.15 ms of it may be that round trip.
# generate(decode_unroll=U) (816afc3) runs U steps per iteration. BaseConv's decode cache is
# now a ring updated in place (no copy of the conv histories in the loop on the CPU; s9a's loop
# had 12 slice + copy kernel pairs a step, ~52 us), so U = 1 here against s9b's 2.16 ms is the
# ring's effect, and U = 4, 8 against U = 1 the unroll's. This call, decode at B = 256
# after the 8000-token prompt, 65 steps (64 in the loop, so U = 4 and 8 waste none):
#   1. U = 1, 4, 8 with the defaults, one after the other on the same GPU;
#   2. U = 4 with XLA's command buffers off (the host launches each kernel itself, so the GPU
#      may start before the whole body is launched);
#   3. U = 4 with Triton gemm fusions off (s8a: 1.99 against 2.14 ms at U = 1);
#   4. a trace of the U = 4 run of item 1, per iteration (trace_gaps.py --iterations).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m --decode-batch-sizes 256 --priority 256"
(for u in 1 4 8; do
   timeout 95 $E2E --prefill-batch-sizes "" --decode-unroll $u --fallback-impl "" --out $OUT/e2e_d256_u$u.json --plot /tmp/e2e_d256_u$u.png
 done
 XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 95 $E2E --prefill-batch-sizes "" --decode-unroll 4 --fallback-impl "" --out $OUT/e2e_d256_u4_no_command_buffers.json --plot /tmp/e2e_ncb.png
 timeout 95 $E2E --prefill-batch-sizes "" --decode-unroll 4 --xla-option xla_gpu_enable_triton_gemm=false --fallback-impl "" --out $OUT/e2e_d256_u4_no_triton.json --plot /tmp/e2e_nt.png
 timeout 110 $E2E --prefill-batch-sizes "" --decode-unroll 4 --trace /tmp/trace_u4 --fallback-impl "" --out $OUT/e2e_d256_u4_trace.json --plot /tmp/e2e_u4_trace.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_u4 --top 4 --iterations loop_compare_fusion
 tar czf $OUT/trace_d256_u4.tar.gz $(find /tmp/trace_u4 -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | grep -v "^wrote /tmp" | tail -n 40 | cut -c1-240
