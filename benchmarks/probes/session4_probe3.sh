# Session 4, third device call (nvidia-h200-x2), tree of the commit that adds it: the kernel with
# Gram key sums (normalize=False), the 273-layout gather and the reciprocal normalization.
#   GPU 0: every gpu-marked test.
#   GPU 1: ptxas report of the new default (B = 16, both variants); the kernel benchmark's pallas
#          column on all sweeps; based-360m end to end at the target points (prefill B = 4, 128;
#          decode B = 256).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 timeout 500 python3 -m pytest -q -m gpu tests -p no:cacheprovider --durations=10) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 MOSAIC_GPU_DUMP_PTXAS=1 timeout 60 python3 benchmarks/probes/ncu_kernel.py --batch 16 --runs 1 2>&1 | grep -E "ran|spill|registers"
 MOSAIC_GPU_DUMP_PTXAS=1 timeout 60 python3 benchmarks/probes/ncu_kernel.py --batch 16 --runs 1 --normalize 2>&1 | grep -E "ran|spill|registers"
 timeout 230 python3 -m benchmarks.kernels --impls pallas --out-dir $OUT/kernels
 timeout 200 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes 4,128 --decode-batch-sizes 256 --priority 4,256,128 --time-budget-s 180 --out $OUT/e2e_based.json
) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 40 | cut -c1-300; done
