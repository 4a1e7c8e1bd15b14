# Prepared at the end of session 9 for one H200, after session10_probe1.sh: the decode table's
# other batches (s8d: B = 1 1.23 ms, B = 64 1.20 ms a step, 65 steps after an 8000-token prompt)
# with the conv ring (BaseConv's cache updated in place, 3028c91) and decode_unroll 1 and 4.
# Each e2e.py call runs one process per batch.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m --decode-batch-sizes 1,64 --priority 1,64"
(for u in 1 4; do
   timeout 200 $E2E --prefill-batch-sizes "" --decode-unroll $u --fallback-impl "" --out $OUT/e2e_d1_d64_u$u.json --plot /tmp/e2e_d1_d64_u$u.png
 done) > $OUT/gpu0.log 2>&1
grep -v "^W0000\|^I0000\|Warning\|warn(\|^E0000" $OUT/gpu0.log | grep -v "^wrote /tmp" | tail -n 20 | cut -c1-240
