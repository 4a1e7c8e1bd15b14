# Prepared at the end of session 11 for one H200 (~6 minutes): three decode changes at B = 256 (the
# 1.5 ms target), each against the defaults in the same call, based-360m after an 8000-token prompt:
#   1. the defaults (U = 4, Triton gemm fusions off; since 0fe2b9b the rotary embedding as one
#      expression: 1.80 ms in s11g, against 1.85 before in s11a/s11b on other machines);
#   2. generate(defer_state_writes=True): the linear-attention states written once per loop
#      iteration (3 reads + 1 read-write of each 160 MB state per 4 steps, against s10d's 2 + 2:
#      ~50 us a step by s10d's per-pass times). If it wins, make it the Hopper default from B = 256
#      (auto_decode_settings) and say so in docs/benchmarks.md;
#   3. the same with U = 8 (7 reads + 1 write per 8 steps; U = 8 alone was slower than U = 4, s10a);
#   4. the previous rotary formula (two halves and a concatenation), restored on the device only,
#      with the defaults: the A/B that session 11 had no device time for. If it is not slower than
#      1, keep the one-expression form; if it is faster, revert 0fe2b9b.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"  # the empty-list flags are written inline below
(timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --out $OUT/d256_defaults.json --plot /tmp/a.png
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --defer-state-writes --out $OUT/d256_deferred.json --plot /tmp/b.png
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --defer-state-writes --decode-unroll 8 --out $OUT/d256_deferred_u8.json --plot /tmp/c.png
 python3 - <<'PY'
import pathlib
p = pathlib.Path("based_jax/layers.py")
text = p.read_text()
start = text.index("  swapped = jnp.flip(")
end = text.index("  if rot == x.shape[-1]:")
old = ("  x1, x2 = x32[..., :half], x32[..., half:]\n"
       "  c, s = cos[:, :, None, :], sin[:, :, None, :]\n"
       "  out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)\n")
p.write_text(text[:start] + old + text[end:])
print("restored the concatenated halves in", p)
PY
 timeout 100 $E2E --prefill-batch-sizes "" --fallback-impl "" --decode-batch-sizes 256 --priority 256 --out $OUT/d256_rotary_halves.json --plot /tmp/d.png) > $OUT/gpu0.log 2>&1
grep -E "B= *[0-9]+ |rror|restored|wrote /root" $OUT/gpu0.log | cut -c1-240
