# Prepared in session 5 for the next device call and extended in session 6 (which had no device
# time), for nvidia-h200-x2:
#   GPU 0: overlap_output (the k side's first feature products issued with a chunk's output
#          wgmmas, one wait less per chunk; never timed) against the default: check, CUPTI medians
#          (B = 1..256 and B = 128 normalize=True) and the ptxas spill report.
#   GPU 1: the gpu tests of cuDNN on left-padded batches (written in session 6, never run); the
#          based-360m prefill at B = 4 with every odd row left-padded (the masked path of a
#          prompt-bucketed generate) on the XLA banded path and on cuDNN; then the per-kernel
#          profiles of the based-360m decode step (B = 256) and prefill (B = 4).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 MOSAIC_GPU_DUMP_PTXAS=1 timeout 400 python3 benchmarks/probes/probe_variants.py time:default,overlap check:overlap) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 150 python3 -m pytest -q -m gpu -k "left_padded" tests/based_jax/test_layers.py tests/based_jax/test_model.py
 for attn in xla cudnn; do
   timeout 120 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4 --decode-batch-sizes 4 --priority 4 --decode-steps 2 --repeats 3 --left-pad 1000 --attn-impl $attn --out $OUT/e2e_leftpad_$attn.json
 done
 PROFILE_DECODE_BATCHES=256 PROFILE_TOP=40 timeout 200 python3 benchmarks/probes/profile_e2e.py decode
 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=40 timeout 200 python3 benchmarks/probes/profile_e2e.py prefill) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "^\[|passed|failed|prefill .* ms" $f | cut -c1-400; grep -E "spill stores" $f | sort | uniq -c; done
