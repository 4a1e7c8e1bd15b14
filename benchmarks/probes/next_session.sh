# What session 2 left unmeasured, in one call on an nvidia-h200-x2 (about 9 minutes), from the
# repo root with .whl (fla-core wheel) and .ffi_build (prebuilt FFI library) carried:
#   GPU 0: every gpu-marked test (incl. the new cuDNN attention tests), then the kernel points
#          still missing: pallas (default config) at B = 4 and 64, fla at B = 256, B = 16 at
#          L = 4096 and 32768.
#   GPU 1: attn-360m end to end with cuDNN attention (B = 4, 16, 32, 64, 128; decode 1, 64),
#          then based-360m at the three target batch sizes.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BASED_JAX_FFI_LIBRARY=$PWD/.ffi_build/libbased_attention.so
(CUDA_VISIBLE_DEVICES=0 bash -c "timeout 300 python3 -m pytest -q -m gpu tests -p no:cacheprovider; timeout 230 python3 -m benchmarks.kernels --impls pallas,ffi,xla_chunked,fla_parallel,fla_chunk --shapes 4x8192,64x8192,256x8192,16x4096,16x32768 --out-dir $OUT/kernels" > $OUT/gpu0.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 bash -c "timeout 260 python3 benchmarks/e2e.py --models attn-360m --attn-impl cudnn --prefill-batch-sizes 4,16,32,64,128 --decode-batch-sizes 1,64 --priority 4,128,1,64,16,32 --time-budget-s 230 --out $OUT/e2e_attn_cudnn.json; timeout 250 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --time-budget-s 220 --out $OUT/e2e_based.json" > $OUT/gpu1.log 2>&1) &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 40; done
