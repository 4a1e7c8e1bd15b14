"""Error breakdown of one FFI kernel on a Hopper GPU, part by part, against the float64 oracle.

    python -m ffi.diagnose [--kernel wgmma] [--segments 0] [--out diag.json]

Each case isolates one path of the chunked algorithm, so that a wrong result says where to look:
  one_chunk          L = 64, no state: the intra-chunk product P [V, 1] (out) and one state update
                     psi_k(K)^T [V, 1] (kv, ks);
  one_chunk_norm     the same with normalize=True (the denominator column);
  two_chunks         L = 128: tokens 64..127 also read the state through psi_q(Q) bf16(S);
  initial_state      L = 64 from a real prefix state (the layout conversion and the start-state load);
  tail               L = 100: a partial chunk (zero-filled tokens);
  split              B = 1, H = 2, L = 4000: the sequence split into segments (pass 1 + prefix);
  wide               Dv = 112 and Dv = 128 (value-column groups).
Before the cases, a self-test of the wgmma conventions alone (BasedWgmmaSelfTest: one m64n64k16
product and a four-slice m64n72k16 product staged with the kernel's swizzled layout, and the latter
again with A from registers), against NumPy; --kernel wgmma_smem runs the cases on the variant with
shared-memory A operands (see based_attention_wgmma.cu); --kernel wgmma_gram runs every case with
normalize=False (the launch it changes: N = Dv-group products, key sums as Gram rows, so k_state is
the Gram path's result, and a second self-test, BasedWgmmaSelfTestGram, checks the shapes it adds:
m64n56k16 from smem, m64n16k16 with A from registers on the K^T operand that build_kt makes from a
k tile, m64n64k16 with A from registers); --segments N fixes the sequence-segment count (0:
automatic).
Prints one line per case with the relative errors of out (first chunk / later chunks), kv and
k_state; writes them as JSON with --out. Errors <= 1e-2 are what the gpu tests require.
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ffi.based_attention import KERNELS

CASES = (  # name, B, L, H, Dv, normalize, with_state
    ("one_chunk", 1, 64, 2, 64, False, False),
    ("one_chunk_norm", 1, 64, 2, 64, True, False),
    ("two_chunks", 1, 128, 2, 64, False, False),
    ("initial_state", 1, 64, 2, 64, False, True),
    ("tail", 2, 100, 2, 64, True, True),
    ("split", 1, 4000, 2, 64, True, False),
    ("wide112", 1, 300, 2, 112, True, True),
    ("wide128", 1, 300, 2, 128, False, False),
)


def _rel(x, ref) -> float:
  x = np.asarray(x, np.float64)
  if not np.all(np.isfinite(x)):
    return float("inf")
  return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def _record_mismatches(row: dict, name: str, got, ref) -> None:
  """row[name + "_bad_count"] and row[name + "_first_bad"]: the elements off NumPy by > 1e-3."""
  bad = np.argwhere(~np.isclose(got, ref, rtol=1e-3, atol=1e-3))
  row[name + "_bad_count"] = int(len(bad))
  row[name + "_first_bad"] = [int(i) for i in bad[0]] if len(bad) else None


def selftest() -> dict:
  """The wgmma conventions alone (descriptor, swizzle, fragment order, K steps, N = 72) vs NumPy."""
  from ffi import _loader

  _loader.ensure_registered()
  rng = np.random.default_rng(0)
  shapes = {"a1": (64, 16), "b1": (64, 16), "a2": (64, 64), "b2": (72, 64)}
  x = {n: jnp.asarray(rng.normal(size=s), jnp.bfloat16) for n, s in shapes.items()}
  call = jax.ffi.ffi_call("based_jax_wgmma_selftest", (jax.ShapeDtypeStruct((64, 64), jnp.float32),
                                                       jax.ShapeDtypeStruct((64, 72), jnp.float32),
                                                       jax.ShapeDtypeStruct((64, 72), jnp.float32)))
  d1, d2, d3 = jax.jit(call)(x["a1"], x["b1"], x["a2"], x["b2"])
  f = {n: np.asarray(v.astype(jnp.float32), np.float64) for n, v in x.items()}
  ref1, ref2 = f["a1"] @ f["b1"].T, f["a2"] @ f["b2"].T
  d1, d2, d3 = (np.asarray(d, np.float64) for d in (d1, d2, d3))
  row = {"case": "selftest", "d1_m64n64k16": _rel(d1, ref1), "d2_m64n72_k64": _rel(d2, ref2),
         "d3_register_a": _rel(d3, ref2)}
  for name, got, ref in (("d1", d1, ref1), ("d2", d2, ref2), ("d3", d3, ref2)):
    _record_mismatches(row, name, got, ref)
  return row


def selftest_gram() -> dict:
  """The Gram variant's conventions (m64n56 from smem; build_kt + m64n16 and m64n64 with register A)
  vs NumPy."""
  from ffi import _loader

  _loader.ensure_registered()
  rng = np.random.default_rng(1)
  shapes = {"a": (64, 64), "b56": (56, 64), "kk": (64, 16), "b64": (64, 64)}
  x = {n: jnp.asarray(rng.normal(size=s), jnp.bfloat16) for n, s in shapes.items()}
  call = jax.ffi.ffi_call("based_jax_wgmma_selftest_gram", (jax.ShapeDtypeStruct((64, 56), jnp.float32),
                                                            jax.ShapeDtypeStruct((64, 16), jnp.float32),
                                                            jax.ShapeDtypeStruct((64, 64), jnp.float32)))
  got = [np.asarray(d, np.float64) for d in jax.jit(call)(x["a"], x["b56"], x["kk"], x["b64"])]
  f = {n: np.asarray(v.astype(jnp.float32), np.float64) for n, v in x.items()}
  refs = (f["a"] @ f["b56"].T, f["a"] @ f["kk"], f["a"] @ f["b64"].T)
  row = {"case": "selftest_gram"}
  for name, d, ref in zip(("d4_m64n56", "d5_kt_m64n16_rs", "d6_m64n64_rs"), got, refs):
    row[name] = _rel(d, ref)
    _record_mismatches(row, name, d, ref)
  return row


def run_case(kernel: str, name: str, b: int, length: int, h: int, dv: int, normalize: bool,
             with_state: bool, segments: int = 0) -> dict:
  import ffi
  from based_jax.ops import LinearAttentionState
  from tests.ffi.ffi_oracle import draw_inputs
  from tests.float64_reference import linear_attention_f64

  if kernel == "wgmma_gram":  # with normalize=True it is the wgmma launch
    normalize = False
  q, k, v, init = draw_inputs(len(name) + length, b, length, h, dv, with_state=with_state)
  state = None if init is None else LinearAttentionState(jnp.asarray(init[0]), jnp.asarray(init[1]))
  fn = jax.jit(lambda q, k, v, s: ffi.linear_attention(q, k, v, normalize=normalize, eps=1e-6,
                                                       initial_state=s, kernel=kernel, segments=segments))
  out, final = fn(q, k, v, state)
  ref_out, ref_kv, ref_ks = linear_attention_f64(q, k, v, normalize=normalize, eps=1e-6,
                                                 kv0=None if init is None else init[0],
                                                 ks0=None if init is None else init[1])
  out = np.asarray(out.astype(jnp.float32), np.float64)
  row = {"case": name, "segments": segments, "B": b, "L": length, "H": h, "Dv": dv, "normalize": normalize,
         "with_state": with_state,
         "out_first_chunk": _rel(out[:, :64], ref_out[:, :64]),
         "out_later": _rel(out[:, 64:], ref_out[:, 64:]) if length > 64 else None,
         "kv": _rel(final.kv, ref_kv), "k_state": _rel(final.k_state, ref_ks),
         "kv_const_row": _rel(final.kv[:, :, 0], ref_kv[:, :, 0]),
         "kv_linear_rows": _rel(final.kv[:, :, 1:17], ref_kv[:, :, 1:17]),
         "kv_quadratic_rows": _rel(final.kv[:, :, 17:], ref_kv[:, :, 17:])}
  return row


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ffi.diagnose", description=__doc__.split("\n\n")[0])
  parser.add_argument("--kernel", default="wgmma", choices=KERNELS)
  parser.add_argument("--segments", type=int, default=0,
                      help="sequence segments for the wgmma kernels (0: automatic)")
  parser.add_argument("--out", help="write the rows as JSON here")
  args = parser.parse_args(argv)
  rows = []
  if args.kernel.startswith("wgmma"):
    try:
      row = selftest()
      print(f"wgmma selftest        d1 (m64n64k16) {row['d1_m64n64k16']:.2e} ({row['d1_bad_count']} bad, first "
            f"{row['d1_first_bad']})  d2 (m64n72, K 64) {row['d2_m64n72_k64']:.2e} ({row['d2_bad_count']} bad, "
            f"first {row['d2_first_bad']})  d3 (A from registers) {row['d3_register_a']:.2e} ({row['d3_bad_count']} "
            f"bad)", flush=True)
    except Exception as e:
      row = {"case": "selftest", "error": f"{type(e).__name__}: {str(e)[:500]}"}
      print(f"wgmma selftest        ERROR {row['error']}", flush=True)
    rows.append(row)
  if args.kernel == "wgmma_gram":
    try:
      row = selftest_gram()
      print("gram selftest         " + "  ".join(
          f"{n} {row[n]:.2e} ({row[n + '_bad_count']} bad, first {row[n + '_first_bad']})"
          for n in ("d4_m64n56", "d5_kt_m64n16_rs", "d6_m64n64_rs")), flush=True)
    except Exception as e:
      row = {"case": "selftest_gram", "error": f"{type(e).__name__}: {str(e)[:500]}"}
      print(f"gram selftest         ERROR {row['error']}", flush=True)
    rows.append(row)
  for case in CASES:
    try:
      row = run_case(args.kernel, *case, segments=args.segments if args.kernel.startswith("wgmma") else 0)
    except Exception as e:  # keep going: the other cases still say where the problem is
      row = {"case": case[0], "error": f"{type(e).__name__}: {str(e)[:500]}"}
    rows.append(row)
    fmt = lambda x: "   n/a  " if x is None else f"{x:8.2e}"
    if "error" in row:
      print(f"{args.kernel} {row['case']:15s} ERROR {row['error']}", flush=True)
    else:
      print(f"{args.kernel} {row['case']:15s} norm={row['normalize']!s:5} out[:64] {fmt(row['out_first_chunk'])} out[64:] "
            f"{fmt(row['out_later'])} kv {fmt(row['kv'])} (1 {fmt(row['kv_const_row'])}, x "
            f"{fmt(row['kv_linear_rows'])}, xx {fmt(row['kv_quadratic_rows'])}) ks {fmt(row['k_state'])}",
            flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"kernel": args.kernel, "segments": args.segments, "device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
