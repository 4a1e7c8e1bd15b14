# Session 3, final device call (nvidia-h200-x2, carry .whl and .ffi_build), from the repo root:
#   GPU 0: every gpu-marked test on the final code.
#   GPU 1: attn-360m end to end with cuDNN attention at the batch sizes probe 1 did not reach,
#          then the Pallas default config on the length sweeps (session 2 ran them with "fill").
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
(CUDA_VISIBLE_DEVICES=0 timeout 380 python3 -m pytest -q -m gpu tests -p no:cacheprovider --durations=5 > $OUT/gpu_tests.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 bash -c "timeout 230 python3 benchmarks/e2e.py --models attn-360m --attn-impl cudnn --prefill-batch-sizes 16,32,64 --decode-batch-sizes 64 --priority 64,16,32 --time-budget-s 215 --out $OUT/e2e_attn_cudnn.json; timeout 140 python3 -m benchmarks.kernels --impls pallas --shapes 16x1024,16x2048,16x16384,16x65536,1x16384,1x32768,1x65536,1x131072 --out-dir $OUT/kernels" > $OUT/gpu1.log 2>&1) &
wait
tail -n 8 $OUT/gpu_tests.log
grep -v "^W0000\|^I0000\|^E0000\|Warning\|warn(" $OUT/gpu1.log | grep "B=\|wrote\|OOM\|Error" | tail -20
