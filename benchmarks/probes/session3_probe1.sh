# Session 3, first device call (nvidia-h200-x2, carry .whl and .ffi_build), from the repo root:
#   GPU 0: every gpu-marked test, then the kernel points session 2 left unmeasured (pallas
#          default config at B = 4 and 64, fla at B = 256, B = 16 at L = 4096 and 32768).
#   GPU 1: attn-360m end to end with cuDNN attention, then CUPTI breakdowns of based-360m's
#          decode step at B = 256 and its prefill at B = 128 (where the e2e targets are missed).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
(CUDA_VISIBLE_DEVICES=0 bash -c "timeout 290 python3 -m pytest -q -m gpu tests -p no:cacheprovider -x --durations=15; timeout 200 python3 -m benchmarks.kernels --impls pallas,ffi,xla_chunked,fla_parallel,fla_chunk --shapes 4x8192,64x8192,256x8192,16x4096,16x32768 --out-dir $OUT/kernels" > $OUT/gpu0.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 bash -c "timeout 220 python3 benchmarks/e2e.py --models attn-360m --attn-impl cudnn --prefill-batch-sizes 4,16,32,64,128 --decode-batch-sizes 1,64 --priority 4,128,1,64,16,32 --time-budget-s 200 --out $OUT/e2e_attn_cudnn.json; PROFILE_DECODE_BATCHES=256 PROFILE_PREFILL_BATCH=128 PROFILE_TOP=60 timeout 250 python3 benchmarks/probes/profile_e2e.py decode prefill" > $OUT/gpu1.log 2>&1) &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 30; done
