# Session 4, first device call (nvidia-h200-x2), from the repo root:
#   GPU 0: Nsight Compute (full set, SASS-level stall sampling) of one Pallas kernel launch at
#          B = 16, L = 8192, H = 16, Dv = 64, normalize False and True (the benchmark's and the
#          model's variant); exported as text (details page and the SASS source page).
#   GPU 1: based-360m decode step at B = 256 under three XLA_FLAGS settings (cuBLAS instead of
#          Triton gemm fusions; plus command buffers), then the gpu-marked attention tests
#          (the attn_impl="auto" default has not run on a GPU before).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
source benchmarks/probes/ncu_lib.sh   # ncu_one
(export CUDA_VISIBLE_DEVICES=0; ncu --version; ncu_one b16 --batch 16; ncu_one b16n --batch 16 --normalize) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 for flags in "" "--xla_gpu_enable_triton_gemm=false" \
     "--xla_gpu_enable_triton_gemm=false --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"; do
   XLA_FLAGS="$flags" PROFILE_DECODE_BATCHES=256 PROFILE_TOP=30 timeout 150 python3 benchmarks/probes/profile_e2e.py decode
 done
 timeout 200 python3 -m pytest -q -m gpu tests/based_jax/test_layers.py -p no:cacheprovider
) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 45; done
ls -la $OUT
