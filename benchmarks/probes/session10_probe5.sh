# Session 10, after session10_probe2.sh: its XLA reports showed that both 8192-token fp32
# prefills send one gemm to cuBLASLt, with a fixed 32 MiB workspace (s8[33554432]), and neither
# 4096-token one does; less that workspace the growth is x1.64 (based-d64) and x1.92 (attn-d64).
# The memory test and the probe now leave library workspaces out (tests/compiled_memory.py).
#   1. the memory test on the GPU, and the probe from 4096 to 16384 tokens in fp32 and bf16;
#   2. a trace of the best B = 256 decode of session10_probe1/4.sh (U = 4, Triton gemm off,
#      1.83-1.85 ms a step), read per kernel name, to see where its time goes without Triton.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/based_jax/test_decode.py -k "memory or workspace" > $OUT/pytest.log 2>&1; echo "pytest rc $?"
tail -n 4 $OUT/pytest.log | cut -c1-300
(for dtype in float32 bfloat16; do
   timeout 100 python3 benchmarks/probes/prefill_temp_memory.py --lengths 4096,8192,16384 --dtype $dtype
 done
 timeout 110 python3 benchmarks/e2e.py --models based-360m --decode-batch-sizes 256 --priority 256 --prefill-batch-sizes "" --decode-unroll 4 --xla-option xla_gpu_enable_triton_gemm=false --trace /tmp/trace_nt --fallback-impl "" --out $OUT/d256_u4_nt_trace.json --plot /tmp/g.png
 python3 benchmarks/probes/trace_gaps.py /tmp/trace_nt --top 2 --iterations loop_compare_fusion
 tar czf $OUT/trace_d256_u4_nt.tar.gz $(find /tmp/trace_nt -name "*.trace.json.gz")) > $OUT/gpu0.log 2>&1
grep -E "temporaries|B= *[0-9]+ |rror|iterations|busy" $OUT/gpu0.log | cut -c1-240
