# Prepared in session 6 (no device time) for nvidia-h200-x2: the gated-linear Pallas kernel
# (SwiGLU fc1 + gate fused, pallas_kernels/gated_linear; never run on a GPU).
#   GPU 0: its gpu tests (kernel vs float64; the model's logits with mlp_impl="pallas" vs "xla"),
#          then CUPTI medians against XLA's gemm + gate at based-360m's fc1 shape for 32000 rows
#          (B = 4 prefill), 256 (B = 256 decode step) and 1024000 (B = 128 prefill), six tilings.
#   GPU 1: based-360m end to end with BasedLM(mlp_impl="pallas"): prefill B = 4 and 128, decode
#          B = 256 (compare with session7_probe2.sh's default run).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(export CUDA_VISIBLE_DEVICES=0
 timeout 150 python3 -m pytest -q -m gpu -k "gated_linear or pallas_mlp" tests/pallas_kernels/test_gated_linear.py tests/based_jax/test_model.py
 MOSAIC_GPU_DUMP_PTXAS=1 timeout 300 python3 benchmarks/probes/probe_gated_linear.py 32000 256 1024000) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 400 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --time-budget-s 300 --mlp-impl pallas --fallback-impl "" --out $OUT/e2e_mlp_pallas.json) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do
  echo "== $f"; grep -E "^\[|passed|failed|B= *[0-9]+ prefill" $f | cut -c1-300
  grep -E "spill stores|Used [0-9]+ registers" $f | sort | uniq -c
done
