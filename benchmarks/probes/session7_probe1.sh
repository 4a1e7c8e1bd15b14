# Prepared in session 5 for the next device call and extended in session 6 (which had no device
# time), for nvidia-h200-x2; each GPU's part fits in ~9 minutes.
#   GPU 0: KernelConfig(operand_staging="registers") (psi_k^T, the Gram left factor and P fed
#          to the wgmmas from registers; never run on a GPU): check, then CUPTI medians
#          (B = 1..256 and B = 128 normalize=True) against the default, "p_registers" (P alone
#          from registers) and overlap_output (never timed either), with the ptxas report
#          (registers, spills, wgmma serialization).
#   GPU 1: the gpu tests written in session 6 (cuDNN on left-padded batches, operand staging);
#          the based-360m prefill at B = 4 with every odd row left-padded (the masked path of a
#          prompt-bucketed generate) on the XLA banded path and on cuDNN; the per-kernel profile
#          of the based-360m prefill at B = 4 (the last one, s4d, predates the SWA layers on
#          cuDNN and the "sm" planner). overlap_output gets its check only if its timing wins.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 MOSAIC_GPU_DUMP_PTXAS=1 timeout 540 python3 benchmarks/probes/probe_variants.py check:regs time:default,regs,regs_p,overlap) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 200 python3 -m pytest -q -m gpu -k "left_padded or operand_staging" tests/based_jax/test_layers.py tests/based_jax/test_model.py tests/pallas_kernels/test_gpu.py
 for attn in xla cudnn; do
   timeout 90 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4 --decode-batch-sizes 4 --priority 4 --decode-steps 2 --repeats 3 --left-pad 1000 --attn-impl $attn --out $OUT/e2e_leftpad_$attn.json
 done
 PROFILE_PREFILL_BATCH=4 PROFILE_TOP=40 timeout 120 python3 benchmarks/probes/profile_e2e.py prefill) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do
  echo "== $f"; grep -E "^\[|passed|failed|prefill .* ms" $f | cut -c1-400
  grep -E "spill stores|Used [0-9]+ registers" $f | sort | uniq -c
  grep -i -E "serializ|Potential Performance Loss" $f | sort | uniq -c | head
done
