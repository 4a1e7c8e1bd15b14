# Session 10, after session10_probe1.sh (B = 256 decode, 65 steps after an 8000-token prompt:
# U = 1 2.10 ms/step, U = 4 1.97, U = 8 2.04, U = 4 without command buffers 2.77, U = 4 without
# Triton gemm fusions 1.85). Its U = 4 trace still idles ~1.1 ms an iteration (4 steps) while
# the host reads the loop condition back and launches the body's command buffer. XLA can put
# the while loop itself into the command buffer (CUDA graph conditional nodes: WHILE and
# CONDITIONAL command types), so the loop condition stays on the GPU and one graph launch runs
# every step. This call:
#   1. B = 256: U = 4 with WHILE/CONDITIONAL in command buffers, Triton gemm on and off;
#      U = 1 with them and Triton off (with no host round trip, the unroll may no longer pay);
#   2. B = 1 and 64: U = 4, WHILE/CONDITIONAL, Triton off; then U = 1 with the defaults (the
#      conv ring alone, against s8d's 1.23 / 1.20 ms);
#   3. the B = 128 prefill with Triton gemm off, if time is left.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
CB="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
NT="--xla-option xla_gpu_enable_triton_gemm=false"
E2E="python3 benchmarks/e2e.py --models based-360m --fallback-impl "
(XLA_FLAGS=$CB timeout 95 $E2E "" --decode-batch-sizes 256 --prefill-batch-sizes "" --decode-unroll 4 --out $OUT/d256_u4_cbwhile.json --plot /tmp/a.png
 XLA_FLAGS=$CB timeout 95 $E2E "" --decode-batch-sizes 256 --prefill-batch-sizes "" --decode-unroll 4 $NT --out $OUT/d256_u4_cbwhile_nt.json --plot /tmp/b.png
 XLA_FLAGS=$CB timeout 95 $E2E "" --decode-batch-sizes 256 --prefill-batch-sizes "" --decode-unroll 1 $NT --out $OUT/d256_u1_cbwhile_nt.json --plot /tmp/c.png
 XLA_FLAGS=$CB timeout 130 $E2E "" --decode-batch-sizes 1,64 --priority 1,64 --prefill-batch-sizes "" --decode-unroll 4 $NT --out $OUT/d1_d64_u4_cbwhile_nt.json --plot /tmp/d.png
 timeout 120 $E2E "" --decode-batch-sizes 1,64 --priority 1,64 --prefill-batch-sizes "" --decode-unroll 1 --out $OUT/d1_d64_u1.json --plot /tmp/e.png
 timeout 100 $E2E "" --decode-batch-sizes "" --prefill-batch-sizes 128 $NT --out $OUT/p128_nt.json --plot /tmp/f.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ |rror|wrote" $OUT/gpu0.log | cut -c1-240
