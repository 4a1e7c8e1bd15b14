# Session 8, fourth device call (one H200), on the tree whose generate decodes with the
# symmetric state by default:
#   1. the kernels of the whole generate program at B = 4, L = 8000, 2 tokens (profile_e2e.py
#      prefill_generate): e2e.py's 42.78 ms prefill (s8b) is 2.8 ms above the 39.94 ms of the
#      standalone prefill program's kernels (s8b); does the generate program add kernels?
#   2. e2e.py decode at B = 1 and 64 with the new default (s8a has B = 256: 2.14 ms a step);
#   3. Nsight Compute of one register-operand linear-attention launch at B = 16, L = 8192
#      (normalize False), for the stretch target, as far as the time allows.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export NCU_TIMEOUT=150
source benchmarks/probes/ncu_lib.sh   # ncu_one
(PROFILE_PREFILL_BATCH=4 PROFILE_TOP=45 timeout 100 python3 benchmarks/probes/profile_e2e.py prefill_generate
 timeout 200 python3 benchmarks/e2e.py --models based-360m --prefill-batch-sizes "" --decode-batch-sizes 1,64 --priority 1,64 --fallback-impl "" --out $OUT/e2e_decode_b1_b64.json --plot /tmp/e2e_decode_b1_b64.png
 ncu_one s8_b16 --batch 16) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000\|==PROF==" $OUT/gpu0.log | tail -n 60 | cut -c1-220
