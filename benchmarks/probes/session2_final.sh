# The final device run of session 2 on an nvidia-h200-x2 (from the repo root; .whl holds the
# fla-core wheel and .ffi_build the FFI library, both carried): kernel checks and benchmarks on
# GPU 0, the gpu-marked Pallas tests and the end-to-end runs on GPU 1. Logs:
# benchmarks/results/session2/final_*.log.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
nvidia-smi -L
CUDA_VISIBLE_DEVICES=0 timeout 100 python3 benchmarks/probes/smoke.py > $OUT/smoke.log 2>&1 || { echo SMOKE FAILED, old kernel back; git checkout bdf88e8 -- pallas_kernels/based_attention/kernel.py; }
tail -4 $OUT/smoke.log
(CUDA_VISIBLE_DEVICES=0 bash -c "timeout 110 python3 benchmarks/probes/pipeline_depth.py; timeout 170 python3 -m benchmarks.kernels --shapes 256x8192,1x8192,16x8192,4x8192,64x8192,128x8192 --out-dir $OUT/k_batch; timeout 110 python3 -m benchmarks.kernels --sweeps long --out-dir $OUT/k_long; timeout 120 python3 -m benchmarks.kernels --shapes 16x65536,16x1024,16x16384,16x2048,16x32768,16x4096 --out-dir $OUT/k_len" > $OUT/gpu0.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 bash -c "timeout 140 python3 -m pytest -q -m gpu tests/pallas_kernels -p no:cacheprovider; timeout 170 python3 benchmarks/e2e.py --models attn-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 1 --priority 4,128,1 --time-budget-s 150 --out $OUT/e2e_attn.json; timeout 200 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 16,32,64 --decode-batch-sizes 1,64 --priority 64,16,1,32 --memory-after 99 --time-budget-s 180 --out $OUT/e2e_based.json" > $OUT/gpu1.log 2>&1) &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 30; done
