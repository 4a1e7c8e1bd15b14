# Session 10, after session10_probe5.sh: less the cuBLAS workspace, attn-d64's fp32 temporaries
# still grew x2.71 from 8192 to 16384 tokens, because the workspace shares a slot with a score
# block there. XLA's reports (probe 5's dump) show the real cause: at 8192 tokens and above the
# score gemm runs in cuBLASLt and two [H, L, 256] fp32 blocks are live; at 4096 one Triton fusion
# holds one. The memory tests now compare lengths with Triton gemm fusions off (every length on
# the same backends) and check the largest array of the default 16k-token program against
# L * L bytes. This call runs them on the GPU.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/based_jax/test_decode.py -k "memory or square or largest" > $OUT/pytest.log 2>&1; echo "pytest rc $?"
tail -n 4 $OUT/pytest.log | cut -c1-300
timeout 60 python3 benchmarks/probes/prefill_temp_memory.py --lengths 4096,16384 2>&1 | grep temporaries
