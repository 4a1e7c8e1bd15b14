"""Save and resume training: a converted-model directory plus the optimizer and trainer state.

    ckpt_dir/
      config.json          BasedConfig.to_dict()          (as written by based-jax-convert)
      params.safetensors   params, "a/b/c" flat keys      (loadable by based_jax.from_pretrained)
      opt_state.msgpack    optax state (flax.serialization; restored into a fresh init's structure)
      trainer_state.json   {"step": int, "rng": [uint32...], "extra": {...}}

Writes go to `ckpt_dir.tmp` first and are renamed into place, so an interrupted save never
leaves a half-written checkpoint; the previous one is replaced only by a complete one.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from based_jax.config import BasedConfig
from based_jax.training.loop import TrainState

CONFIG_NAME = "config.json"
PARAMS_NAME = "params.safetensors"
OPT_NAME = "opt_state.msgpack"
TRAINER_NAME = "trainer_state.json"
_CHECKPOINT_FILES = (CONFIG_NAME, PARAMS_NAME, OPT_NAME, TRAINER_NAME)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def flatten_params(params) -> dict[str, jax.Array]:
  """{"a": {"b": x}} -> {"a/b": x} (the converted-dir key format)."""
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def unflatten_params(flat: dict[str, object]) -> dict:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def save_model(directory: str, config: BasedConfig, params, *, dtype: str = "float32",
               metadata: dict[str, str] | None = None,
               config_extra: dict | None = None) -> None:
  """Writes config.json + params.safetensors (cast to `dtype`: "float32" or "bfloat16").

  config_extra: more config.json keys (e.g. {"tokenizer": "byte"}, which `based-jax generate`
  reads to pick the tokenizer); BasedConfig ignores them.
  """
  from safetensors.flax import save_file  # pylint: disable=import-outside-toplevel

  if dtype not in _DTYPES:
    raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
  os.makedirs(directory, exist_ok=True)
  flat = {k: jnp.asarray(v).astype(_DTYPES[dtype]) for k, v in flatten_params(params).items()}
  save_file(flat, os.path.join(directory, PARAMS_NAME), metadata=dict(metadata or {}))
  with open(os.path.join(directory, CONFIG_NAME), "w") as f:
    json.dump({**config.to_dict(), **(config_extra or {})}, f, indent=2)


def load_params(directory: str) -> dict:
  """params.safetensors -> nested dict of jax arrays (stored dtype kept)."""
  from safetensors.flax import load_file  # pylint: disable=import-outside-toplevel

  return unflatten_params(load_file(os.path.join(directory, PARAMS_NAME)))


def save(directory: str, config: BasedConfig, state: TrainState,
         extra: dict | None = None, config_extra: dict | None = None) -> None:
  """Atomically writes the full training checkpoint (fp32 params) to `directory`.

  extra: JSON-able run info kept in trainer_state.json; config_extra: see save_model.
  """
  directory = os.path.abspath(directory)
  tmp = directory + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  save_model(tmp, config, state.params, dtype="float32", config_extra=config_extra)
  with open(os.path.join(tmp, OPT_NAME), "wb") as f:
    f.write(serialization.to_bytes(jax.device_get(state.opt_state)))
  rng = np.asarray(jax.random.key_data(state.rng)) if jnp.issubdtype(
      state.rng.dtype, jax.dtypes.prng_key) else np.asarray(state.rng)
  with open(os.path.join(tmp, TRAINER_NAME), "w") as f:
    json.dump({"step": int(state.step), "rng": rng.astype(np.uint32).tolist(),
               "extra": extra or {}}, f, indent=2)
  old = directory + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(directory):
    # Keep files that are not part of the checkpoint (e.g. the CLI's log.jsonl).
    for name in os.listdir(directory):
      if name not in _CHECKPOINT_FILES and not os.path.exists(os.path.join(tmp, name)):
        os.replace(os.path.join(directory, name), os.path.join(tmp, name))
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)


def exists(directory: str) -> bool:
  return all(os.path.isfile(os.path.join(directory, n)) for n in _CHECKPOINT_FILES)


def restore(directory: str, template: TrainState) -> tuple[BasedConfig, TrainState, dict]:
  """Loads a checkpoint into the structure of `template` (a fresh `init_state` of the same
  model and optimizer). Returns (config, state, extra). Shapes must match exactly."""
  if not exists(directory):
    raise FileNotFoundError(f"{directory!r} is not a training checkpoint: it needs {CONFIG_NAME}, "
                            f"{PARAMS_NAME}, {OPT_NAME} and {TRAINER_NAME}")
  with open(os.path.join(directory, CONFIG_NAME)) as f:
    config = BasedConfig.from_hf_dict(json.load(f))
  params = load_params(directory)
  want = flatten_params(template.params)
  got = flatten_params(params)
  problems = [f"{k}: missing" for k in want if k not in got]
  problems += [f"{k}: unexpected" for k in got if k not in want]
  problems += [f"{k}: shape {got[k].shape} != {want[k].shape}" for k in want
               if k in got and got[k].shape != want[k].shape]
  if problems:
    raise ValueError(f"checkpoint {directory!r} does not match the model:\n  "
                     + "\n  ".join(problems))
  params = jax.tree_util.tree_map(lambda t, p: jnp.asarray(p, t.dtype), template.params, params)
  with open(os.path.join(directory, OPT_NAME), "rb") as f:
    opt_state = serialization.from_bytes(jax.device_get(template.opt_state), f.read())
  opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
  with open(os.path.join(directory, TRAINER_NAME)) as f:
    meta = json.load(f)
  rng = jnp.asarray(np.asarray(meta["rng"], np.uint32))
  if jnp.issubdtype(template.rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  state = TrainState(step=jnp.asarray(meta["step"], jnp.int32), params=params,
                     opt_state=opt_state, rng=rng)
  return config, state, meta.get("extra", {})
