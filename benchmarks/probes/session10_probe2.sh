# Prepared at the end of session 9 for one H200: the prefill temporaries that grew faster than L
# on the GPU (s9d: test_prefill_memory_grows_linearly failed there, fp32 at B = 1 from 4096 to
# 8192 tokens: based-d64 2.28x, attn-d64 3.29x; 2.00x on the CPU), and the GPU runs of the tests
# written in session 9.
#   1. prefill_temp_memory.py at 4096 and 8192 tokens with XLA's dumps: the temporaries and the
#      head of each program's memory-usage report (the shapes of the largest buffers). 3094b38
#      ties the key-block attention scan's blocks to its carry (a fully unrolled scan on the CPU
#      grew 4x without it), written for attn-d64's growth; based-d64 has no scan;
#   2. the tests: the prefill memory test, the scan's unrolled-memory test and its numerics, the
#      unrolled decode loop, the first-token order, the symmetric decode, the conv ring, and
#      whether the decode loop compiled for the GPU copies any cache (the CPU's does not).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(XLA_FLAGS=--xla_dump_to=/tmp/dump timeout 200 python3 benchmarks/probes/prefill_temp_memory.py --lengths 4096,8192 --dump /tmp/dump --report-lines 16
 tar czf $OUT/prefill_memory_reports.tar.gz $(find /tmp/dump -name "*jit_apply*memory-usage-report.txt" -o -name "*jit_apply*after_optimizations.txt")) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | tail -n 90 | cut -c1-240
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/based_jax/test_decode.py::test_prefill_memory_grows_linearly tests/based_jax/test_layers.py -k "flash_causal or prefill_memory or unroll or first_token or symmetric or ring or copies_no_cache" tests/based_jax/test_generation.py > $OUT/pytest.log 2>&1; echo "pytest rc $?"
tail -n 12 $OUT/pytest.log | cut -c1-300
