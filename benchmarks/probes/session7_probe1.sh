# Prepared at the end of session 5 for the next session's first device call (nvidia-h200-x2):
# overlap_output (the k side's first feature products issued with a chunk's output wgmmas, one
# wait less per chunk; added after session 5's device time was spent, never timed) against the
# default, and the based-360m decode/prefill profiles with the SWA layers on cuDNN.
#   GPU 0: check, CUPTI medians (B = 1..256 and B = 128 normalize=True) and ptxas spill report.
#   GPU 1: per-kernel profiles of the based-360m decode step (B = 256) and prefill (B = 4).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 MOSAIC_GPU_DUMP_PTXAS=1 timeout 400 python3 benchmarks/probes/probe_variants.py time:default,overlap check:overlap) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 PROFILE_DECODE_BATCHES=256 PROFILE_TOP=40 timeout 200 python3 benchmarks/probes/profile_e2e.py decode
 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=40 timeout 200 python3 benchmarks/probes/profile_e2e.py prefill) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[" $f | cut -c1-400; grep -E "spill stores" $f | sort | uniq -c; done
