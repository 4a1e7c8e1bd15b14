"""End-to-end probe: per-kernel CUPTI breakdown of generate (decode) and prefill, command buffers.

  PYTHONPATH=. python3 benchmarks/probes/profile_e2e.py all   (parts: kernel, decode, prefill)
Session 2 output (tail): benchmarks/results/session2/probe_e2e.log.
"""
import functools, os, subprocess, sys, time
import numpy as np
import jax, jax.numpy as jnp
sys.path.insert(0, os.getcwd())
from benchmarks import common

PART = sys.argv[1] if len(sys.argv) > 1 else "all"
SMOKE = os.environ.get("SMOKE") == "1"
T0 = time.time()
def log(*a):
  print(f"[{time.time()-T0:6.1f}s]", *a, flush=True)

def breakdown(fn, *args, top=14, label=""):
  lines = common.kernel_breakdown(fn, *args, top=top)
  log(f"breakdown {label}: {lines[0]}")
  for line in lines[1:]:
    log(line)

def kernel_part():
  from pallas_kernels import based_attention as ba
  H, DV, L = 16, 64, (256 if SMOKE else 8192)
  plan = {
    1: [dict(), dict(planner="waves"), dict(target_blocks=132), dict(target_blocks=528),
        dict(key_sums="xla"), dict(min_segment_chunks=2), dict(max_concurrent_steps=3)],
    16: [dict(), dict(max_concurrent_steps=3), dict(max_concurrent_steps=4), dict(key_sums="xla"),
         dict(planner="waves"), dict(planner="waves", key_sums="xla"), dict(target_blocks=132)],
    128: [dict(), dict(max_concurrent_steps=3), dict(key_sums="xla"), dict(planner="waves", key_sums="xla")],
    256: [dict(), dict(planner="waves"), dict(planner="waves", key_sums="xla")],
  }
  for B, cfgs in plan.items():
    if SMOKE: B = min(B, 2)
    rng = np.random.default_rng(B)
    q = jnp.asarray(rng.standard_normal((B, L, H, 16)) * 0.5, jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((B, L, H, 16)) * 0.5, jnp.bfloat16)
    v = jnp.asarray(rng.standard_normal((B, L, H, DV)), jnp.bfloat16)
    for kw in cfgs:
      cfg = ba.KernelConfig(**kw)
      fn = jax.jit(lambda q, k, v, cfg=cfg: ba.linear_attention(q, k, v, normalize=False, config=cfg))
      try:
        t = common.time_jax(fn, q, k, v, iterations=20)
        log(f"pallas B={B} L={L} {kw}: {t['ms']:.4f} ms (wall {t['wall_ms']:.3f})")
      except Exception as e:
        log(f"pallas B={B} {kw}: FAILED {type(e).__name__}: {str(e)[:300]}")
    if B in (1, 16):
      fn = jax.jit(lambda q, k, v: ba.linear_attention(q, k, v, normalize=False))
      if not SMOKE: breakdown(fn, q, k, v, label=f"pallas default B={B}")

def decode_part():
  from based_jax.config import BasedConfig
  from based_jax.model import BasedLM
  from based_jax import generation
  from based_jax.sampling import SamplingConfig
  sys.path.insert(0, "benchmarks")
  import e2e
  cfg = BasedConfig.tiny() if SMOKE else BasedConfig.based_360m()
  model = BasedLM(cfg, dtype=jnp.bfloat16) if "dtype" in BasedLM.__dataclass_fields__ else BasedLM(cfg)
  params = e2e.random_bf16_params(model)
  for B in ((2,) if SMOKE else (4, 256)):
    ids = np.random.default_rng(B).integers(1, cfg.vocab_size, size=(B, 128)).astype(np.int32)
    res = {}
    for steps in (9, 41):
      generation.generate(model, params, ids, max_new_tokens=steps, prompt_buckets=None)
      outs = [generation.generate(model, params, ids, max_new_tokens=steps, prompt_buckets=None) for _ in range(3)]
      res[steps] = (np.median([o.decode_s for o in outs]), np.median([o.prefill_s for o in outs]))
    step_ms = 1e3 * (res[41][0] - res[9][0]) / 32
    log(f"decode B={B}: step {step_ms:.4f} ms (decode_s 41: {res[41][0]*1e3:.2f} ms, 9: {res[9][0]*1e3:.2f} ms) flags={os.environ.get('XLA_FLAGS','')}")
    if PART in ("all", "decode") and not SMOKE:
      f = functools.partial(generation._generate_jit, model=model, max_new_tokens=41,
                            sampling=SamplingConfig(), eos_token_id=None, pad_token_id=0,
                            vocab_size=cfg.vocab_size, stream=False)
      breakdown(f, params, jnp.asarray(ids), None, jax.random.key(0), top=25, label=f"generate B={B} 41 steps")

def prefill_part():
  from based_jax.config import BasedConfig
  from based_jax.model import BasedLM
  sys.path.insert(0, "benchmarks")
  import e2e
  cfg = BasedConfig.tiny() if SMOKE else BasedConfig.based_360m()
  model = BasedLM(cfg, dtype=jnp.bfloat16) if "dtype" in BasedLM.__dataclass_fields__ else BasedLM(cfg)
  params = e2e.random_bf16_params(model)
  B, L = (2, 64) if SMOKE else (4, 8000)
  ids = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, size=(B, L)).astype(np.int32))
  f = jax.jit(lambda p, ids: model.apply({"params": p}, ids, None, max_length=L + 1, method="prefill"))
  breakdown(f, params, ids, top=25, label=f"prefill B={B} L={L}")

if PART in ("all", "kernel"): kernel_part()
if PART in ("all", "decode"): decode_part()
if PART in ("all", "prefill"): prefill_part()
if PART == "all" and not SMOKE:
  for flags in ("--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL",):
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONUNBUFFERED="1")
    log("subprocess with", flags)
    r = subprocess.run([sys.executable, __file__, "decode_only"], env=env, timeout=240)
if PART == "decode_only":
  decode_part()
log("done")
