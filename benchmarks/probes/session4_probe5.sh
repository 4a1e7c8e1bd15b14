# Session 4, fifth device call (nvidia-h200-x2), tree of the commit that adds it: the segment
# combine as running additions (api.segment_prefix) and without key-sum init operands when the
# kernel carries none.
#   GPU 0: the Pallas gpu-marked tests (initial states, segments, odd lengths, both variants).
#   GPU 1: the kernel benchmark's pallas column at the shapes that run two passes, and the
#          combine alone, cumsum vs segment_prefix (probe_combine.py).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 timeout 170 python3 -m pytest -q -m gpu tests/pallas_kernels -p no:cacheprovider) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 110 python3 -m benchmarks.kernels --impls pallas --shapes 1x8192,4x8192,16x8192,1x131072,256x8192 --out-dir $OUT/kernels
 timeout 50 python3 benchmarks/probes/probe_combine.py) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 25 | cut -c1-600; done
