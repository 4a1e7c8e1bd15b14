# Session 7, after session7_probe1.sh (operand_staging "registers" fastest at every B) and
# session7_probe3.sh (the persistent gated-linear tiling beats XLA above 4096 rows), for
# nvidia-h200-x2 with the new defaults (operand_staging "auto" -> "registers"; gated_linear
# default_config persistent above 4096 rows):
#   GPU 0: based-360m end to end with the shipped defaults (prefill B = 4 and 128, decode
#          B = 256), then the decode step with Triton gemm fusions off.
#   GPU 1: the whole gpu test suite, then based-360m with mlp_impl "auto" (the fused gate above
#          4096 rows, XLA below): prefill B = 4 and 128.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"
(export CUDA_VISIBLE_DEVICES=0
 timeout 400 $E2E --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,128,256 --fallback-impl "" --out $OUT/e2e_default.json --plot /tmp/e2e_default.png
 timeout 170 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --priority 256 --xla-option xla_gpu_enable_triton_gemm=false --fallback-impl "" --out $OUT/e2e_no_triton.json --plot /tmp/e2e_no_triton.png) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 330 python3 -m pytest -q -m gpu -p no:cacheprovider tests > $OUT/gpu_suite.log 2>&1
 timeout 240 $E2E --prefill-batch-sizes 4,128 --decode-batch-sizes "" --priority 4,128 --mlp-impl auto --fallback-impl "" --out $OUT/e2e_mlp_auto.json --plot /tmp/e2e_mlp_auto.png) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -E "B= *[0-9]+ (prefill|decode)|error|Error|passed|failed" $f | cut -c1-300; done
tail -30 $OUT/gpu_suite.log | cut -c1-300
