# Prepared at the end of session 7 for nvidia-h200-x2, after session8_probe1.sh if device time
# remains: where the register-operand kernel (the default since 9272e69) now spends its time,
# for the stretch target (1.82-1.84x of the floor at B >= 64, s7e; the goal is 1.3x).
#   GPU 0: Nsight Compute (full set, SASS-level stall sampling) of one launch at B = 16,
#          L = 8192, normalize False and True, as s4a did for the session-3 kernel; exported as
#          text (details page and SASS source page).
#   GPU 1: the per-kernel breakdown of one call at B = 1, 16 and 256 (kernel vs XLA glue), then
#          Nsight Compute of one launch at B = 128, normalize=True (the model's variant at a
#          large batch). (The stage ablation's edits cover the shared-memory operand path only,
#          so it would not time the register-operand kernel.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export NCU_TIMEOUT=220
source benchmarks/probes/ncu_lib.sh   # ncu_one
(export CUDA_VISIBLE_DEVICES=0; ncu --version; ncu_one s8_b16 --batch 16; ncu_one s8_b16n --batch 16 --normalize) > $OUT/gpu0.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 PROBE_BATCHES=1,16,256 timeout 200 python3 benchmarks/probes/probe_variants.py kernels:default
 ncu_one s8_b128n --batch 128 --normalize) > $OUT/gpu1.log 2>&1 &
wait
for f in $OUT/gpu*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $f | tail -n 45; done
