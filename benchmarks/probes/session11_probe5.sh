# Not run in session 11 (no device time left); session12_probe2.sh runs the same A/B (its part 4).
# Session 11, one H200, after session11_ffi.sh in the same call: the rotary embedding as one
# elementwise expression (layers.apply_rotary: x * [c | c] + [x2 | x1] * [-s | s]) against the two
# halves and their concatenation (s10d: an input_concatenate_fusion kernel for q and for k in each
# of the 5 sliding-window layers of a B = 256 decode step, ~3.5 us each).
#   1. this tree: decode B = 256 with the defaults, prefill B = 4 (its 40 ms target: 39.07 in s9c);
#   2. the previous formula, restored on the device only, decode B = 256 again (A/B in one call).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
E2E="python3 benchmarks/e2e.py --models based-360m"  # the empty-list flags are written inline below
(timeout 150 $E2E --prefill-batch-sizes 4 --decode-batch-sizes 256 --fallback-impl "" --priority 256,4 --out $OUT/rotary_flip.json --plot /tmp/a.png
 python3 - <<'PY'
import pathlib, re
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
 timeout 100 $E2E --prefill-batch-sizes "" --decode-batch-sizes 256 --fallback-impl "" --priority 256 --out $OUT/rotary_halves.json --plot /tmp/b.png) > $OUT/rotary.log 2>&1
grep -E "B= *[0-9]+ |rror|restored" $OUT/rotary.log | cut -c1-240
