# Session 8, third device call (one H200):
#   1. benchmarks/probes/probe_launch_overhead.py: wall time against kernel time per call of
#      chained Mosaic GPU kernels (linear attention, gated linear) and XLA controls, with XLA's
#      default command buffers and with them off (s8b: mlp_impl "auto" had 1.5 ms less kernel
#      time than "xla" at the B = 4 prefill but took 2.05 ms more end to end);
#   2. the based-360m decode step at B = 1 and 64 (profile_e2e.py decode, 9- and 41-token runs,
#      default decode_state "symmetric"), default and with Triton gemm fusions off (s8a: 2.14 ->
#      1.99 ms at B = 256), to see whether turning them off for the decode loop helps at every B;
#   3. the gpu-marked tests of tests/based_jax/test_generation.py (decode_state's new default).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(timeout 100 python3 benchmarks/probes/probe_launch_overhead.py
 XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 100 python3 benchmarks/probes/probe_launch_overhead.py
 export PROFILE_DECODE_BATCHES=1,64 PROFILE_BREAKDOWN=0
 timeout 110 python3 benchmarks/probes/profile_e2e.py decode
 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false timeout 110 python3 benchmarks/probes/profile_e2e.py decode
 timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/based_jax/test_generation.py 2>&1 | tail -5) > $OUT/gpu0.log 2>&1
grep -E "^\[|passed|failed|error|Error" $OUT/gpu0.log | cut -c1-250
