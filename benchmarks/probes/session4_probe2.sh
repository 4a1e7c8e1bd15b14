# Session 4, second device call (nvidia-h200-x2): register pressure of the Pallas kernel.
# s4a's Nsight Compute report showed 255 registers and ~25 hoisted wgmma descriptors spilled to
# local memory (reloaded every chunk); these variants carry fewer registers.
#   GPU 0: CUPTI medians of default / key sums from XLA (no key-sum accumulators) / 32-column
#          value blocks, with the ptxas report (spills) of every compile.
#   GPU 1: per-kernel breakdown of default and xla_ks at B = 16, 256; the xla_ks check.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MOSAIC_GPU_DUMP_PTXAS=1
(CUDA_VISIBLE_DEVICES=0 timeout 400 python3 benchmarks/probes/probe_variants.py time:default,xla_ks,vb32) > $OUT/gpu0.log 2>&1 &
(CUDA_VISIBLE_DEVICES=1 timeout 400 python3 benchmarks/probes/probe_variants.py kernels:default,xla_ks check:xla_ks) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[" $f | cut -c1-400; grep -E "spill|Used [0-9]+ registers" $f | sort | uniq -c; done
