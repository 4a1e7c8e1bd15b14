"""End-to-end probe: per-kernel CUPTI breakdown of generate (decode) and of the prefill.

  PYTHONPATH=. python3 benchmarks/probes/profile_e2e.py decode prefill
  PYTHONPATH=. python3 benchmarks/probes/profile_e2e.py step       (one decode step, each kernel once)
  PYTHONPATH=. python3 benchmarks/probes/profile_e2e.py prefill_generate  (generate, prefill + 1 token)
  XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL \
      PYTHONPATH=. python3 benchmarks/probes/profile_e2e.py decode        (XLA command buffers)

based-360m, random bf16 weights, 128-token prompts for decode (a Based decode step does not
depend on the context length), an 8000-token prompt at B = 4 for the prefill. SMOKE=1: tiny
model on the CPU, no breakdown. PROFILE_DECODE_BATCHES (default "4,256"), PROFILE_PREFILL_BATCH
(default 4) and PROFILE_TOP (kernels listed, default 25) override the shapes; PROFILE_MLP_IMPL
(default "xla") is BasedLM's mlp_impl (the SwiGLU fc1 + gate: "xla", "pallas" or "auto").
PROFILE_BREAKDOWN=0: decode times the step only (no per-kernel profile). PROFILE_DECODE_STATE
(default "symmetric", generate's default) is the cache layout of `step`.
PROFILE_HLO_DIR: write the optimized HLO of the profiled prefill and decode-step programs there.
Session-2 output (its tail, from an earlier form of this script):
benchmarks/results/session2/probe_e2e.log.
"""

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from based_jax import generation
from based_jax.config import BasedConfig
from based_jax.model import BasedLM
from based_jax.sampling import SamplingConfig
from benchmarks import common
from benchmarks.e2e import random_bf16_params

SMOKE = os.environ.get("SMOKE") == "1"
DECODE_BATCHES = tuple(int(b) for b in os.environ.get("PROFILE_DECODE_BATCHES", "4,256").split(","))
PREFILL_BATCH = int(os.environ.get("PROFILE_PREFILL_BATCH", "4"))
TOP = int(os.environ.get("PROFILE_TOP", "25"))
MLP_IMPL = os.environ.get("PROFILE_MLP_IMPL", "xla")
BREAKDOWN = os.environ.get("PROFILE_BREAKDOWN", "1") != "0"
T0 = time.time()


def log(*parts):
  print(f"[{time.time() - T0:6.1f}s]", *parts, flush=True)


def breakdown(fn, *args, top, label):
  lines = common.kernel_breakdown(fn, *args, top=top)
  log(f"breakdown {label}: {lines[0]}")
  for line in lines[1:]:
    log(line)


def model_and_params():
  config = BasedConfig.tiny() if SMOKE else BasedConfig.based_360m()
  model = BasedLM(config, dtype=jnp.bfloat16, mlp_impl=MLP_IMPL)
  return config, model, random_bf16_params(model)


def generation_programs(config, model, params, ids, new_tokens):
  """generate's compiled prefill and decode programs (greedy, no EOS), as one callable."""
  programs = tuple(p.compile() for p in generation.lower_programs(
      params, ids, None, jax.random.key(0), model=model, max_new_tokens=new_tokens,
      sampling=SamplingConfig(), eos_token_id=None, pad_token_id=0,
      vocab_size=config.vocab_size, stream=False))
  return functools.partial(generation.run_programs, programs)


def decode(config, model, params):
  """ms per decode step from two run lengths (9 and 41 tokens), then one run's kernels."""
  for batch in ((2,) if SMOKE else DECODE_BATCHES):
    ids = np.random.default_rng(batch).integers(1, config.vocab_size, size=(batch, 128))
    ids = ids.astype(np.int32)                                              # [B, 128]
    decode_s = {}
    for steps in (9, 41):
      generation.generate(model, params, ids, max_new_tokens=steps, prompt_buckets=None)
      runs = [generation.generate(model, params, ids, max_new_tokens=steps, prompt_buckets=None)
              for _ in range(3)]
      decode_s[steps] = float(np.median([r.decode_s for r in runs]))
    step_ms = 1e3 * (decode_s[41] - decode_s[9]) / 32
    log(f"decode B={batch}: step {step_ms:.4f} ms (decode_s 41: {decode_s[41] * 1e3:.2f} ms, "
        f"9: {decode_s[9] * 1e3:.2f} ms) XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    if not SMOKE and BREAKDOWN:
      program = generation_programs(config, model, params, jnp.asarray(ids), 41)
      breakdown(program, params, jnp.asarray(ids), None, jax.random.key(0), top=TOP,
                label=f"generate B={batch} 41 steps")


def write_hlo(fn, args, name):
  """With PROFILE_HLO_DIR set, writes fn's optimized HLO there (gzipped) as name.hlo.txt.gz."""
  hlo_dir = os.environ.get("PROFILE_HLO_DIR")
  if hlo_dir:
    import gzip  # pylint: disable=g-import-not-at-top
    path = os.path.join(hlo_dir, f"{name}.hlo.txt.gz")
    with gzip.open(path, "wt") as f:
      f.write(fn.lower(*args).compile().as_text())
    log(f"wrote {path}")


def step(config, model, params):
  """One jitted decode step (the loop body of generate, outside the loop): its kernels, each once.

  The cache comes from a 128-token prefill, in the layout of generate's default decode_state
  (PROFILE_DECODE_STATE overrides it). With PROFILE_HLO_DIR set, the step's optimized HLO is
  written there, so that kernel (fusion) names can be traced back to the model's operations.
  """
  from based_jax import ops  # pylint: disable=g-import-not-at-top
  state = os.environ.get("PROFILE_DECODE_STATE", "symmetric")
  for batch in ((2,) if SMOKE else DECODE_BATCHES):
    ids = np.random.default_rng(batch).integers(1, config.vocab_size, size=(batch, 128))
    ids = jnp.asarray(ids.astype(np.int32))                                 # [B, 128]
    logits, cache = jax.jit(lambda p, ids: model.apply(
        {"params": p}, ids, None, max_length=256, method="prefill"))(params, ids)  # [B, Vp]
    if state == "symmetric":
      cache = ops.map_linear_attention_states(ops.to_symmetric_state, cache)
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)                     # [B]
    fn = jax.jit(lambda p, tok, cache: model.apply({"params": p}, tok, cache,
                                                   method="decode_step"))
    if SMOKE:
      jax.block_until_ready(fn(params, tok, cache))
      log(f"decode step B={batch} ({state}) ran")
      continue
    write_hlo(fn, (params, tok, cache), f"decode_step_b{batch}_{state}")
    breakdown(fn, params, tok, cache, top=TOP, label=f"decode step B={batch} ({state})")


def prefill(config, model, params):
  batch, length = (2, 64) if SMOKE else (PREFILL_BATCH, 8000)
  ids = np.random.default_rng(0).integers(1, config.vocab_size, size=(batch, length))
  ids = jnp.asarray(ids.astype(np.int32))                                   # [B, L]
  fn = jax.jit(lambda p, ids: model.apply({"params": p}, ids, None, max_length=length + 1,
                                          method="prefill"))
  if SMOKE:
    jax.block_until_ready(fn(params, ids))
    log(f"prefill B={batch} L={length} ran")
    return
  write_hlo(fn, (params, ids), f"prefill_b{batch}_mlp_{MLP_IMPL}")
  breakdown(fn, params, ids, top=TOP, label=f"prefill B={batch} L={length} mlp_impl={MLP_IMPL}")


def prefill_generate(config, model, params):
  """generate's two programs as e2e.py times them (prefill + 1 token): their kernels."""
  batch, length = (2, 64) if SMOKE else (PREFILL_BATCH, 8000)
  ids = np.random.default_rng(0).integers(1, config.vocab_size, size=(batch, length))
  ids = jnp.asarray(ids.astype(np.int32))                                   # [B, L]
  program = generation_programs(config, model, params, ids, 2)
  if SMOKE:
    jax.block_until_ready(program(params, ids, None, jax.random.key(0)))
    log(f"generate B={batch} L={length} 2 tokens ran")
    return
  breakdown(program, params, ids, None, jax.random.key(0), top=TOP,
            label=f"generate B={batch} L={length} 2 tokens mlp_impl={MLP_IMPL}")


def main(parts):
  unknown = set(parts) - {"decode", "step", "prefill", "prefill_generate"}
  if unknown or not parts:
    sys.exit(f"usage: profile_e2e.py decode|step|prefill|prefill_generate [...]; got {parts}")
  config, model, params = model_and_params()
  for part in parts:
    {"decode": decode, "step": step, "prefill": prefill,
     "prefill_generate": prefill_generate}[part](config, model, params)
  log("done")


if __name__ == "__main__":
  main(sys.argv[1:])
