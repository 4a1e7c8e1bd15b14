"""Load a Based model and its parameters: `model, params = from_pretrained(path_or_hub_id)`.

Sources:
- a converted directory (`config.json` + `params.safetensors`, written by `based-jax-convert`);
- a PyTorch directory or hub id (`config.json` + `model.safetensors` or `pytorch_model.bin`),
  converted in memory. A `.bin` needs torch installed; torch is imported only then.

Usage:
    model, params = from_pretrained("hazyresearch/based-360m", dtype=jnp.bfloat16)
    logits = jax.jit(model.apply)({"params": params}, input_ids)   # [B, L, Vp] float32
"""

import json
import os

import jax
import jax.numpy as jnp

from based_jax.config import BasedConfig
from based_jax.mamba import MambaConfig, MambaLM, is_mamba_config
from based_jax.model import BasedLM

_DTYPES = {jnp.dtype(jnp.float32): "float32", jnp.dtype(jnp.bfloat16): "bfloat16"}


def _dtype_name(dtype, arg: str) -> str:
  try:
    return _DTYPES[jnp.dtype(dtype)]
  except (KeyError, TypeError):
    raise ValueError(f"{arg} must be jnp.float32 or jnp.bfloat16; got {dtype!r}") from None


def from_pretrained(path_or_hub_id: str | os.PathLike, dtype=jnp.float32, *,
                    param_dtype=None, la_impl: str = "auto", attn_impl: str = "auto",
                    mlp_impl: str = "xla",
                    revision: str | None = None) -> tuple[BasedLM | MambaLM, dict]:
  """Returns `(BasedLM(config, dtype=dtype, la_impl=la_impl, attn_impl=attn_impl,
  mlp_impl=mlp_impl), params)`, or `(MambaLM(config, dtype=dtype), params)` for a Mamba checkpoint
  (`backbone.*` keys / a Mamba config.json; the *_impl switches do not apply; its A_log and D stay
  float32 whatever param_dtype).

  dtype: compute dtype of the model (jnp.float32 or jnp.bfloat16); logits are float32 either way.
  param_dtype: dtype of the returned params; None keeps a converted file's storage dtype and
    gives float32 when converting from PyTorch.
  params: the "params" collection, a nested dict of arrays (`model.apply({"params": params}, ids)`).
  Raises `convert.CheckpointError` (a ValueError) naming any missing, unused or mis-shaped tensor.
  """
  from convert import hub  # pylint: disable=import-outside-toplevel  # keeps import-time light

  _dtype_name(dtype, "dtype")
  if param_dtype is not None:
    _dtype_name(param_dtype, "param_dtype")
  files = hub.locate(path_or_hub_id, revision)
  if files.kind == "converted":
    config, params = _load_converted(files)
  else:
    from convert import torch_to_flax  # pylint: disable=import-outside-toplevel

    config, params = torch_to_flax.load_params(path_or_hub_id, revision=revision)
  if isinstance(config, MambaConfig):
    if param_dtype is not None:
      params = jax.tree_util.tree_map_with_path(
          lambda path, x: x if path[-1].key in ("A_log", "D") else x.astype(param_dtype), params)
    return MambaLM(config, dtype=dtype), params
  if param_dtype is not None:
    params = jax.tree_util.tree_map(lambda x: x.astype(param_dtype), params)
  return BasedLM(config, dtype=dtype, la_impl=la_impl, attn_impl=attn_impl,
                 mlp_impl=mlp_impl), params


def _load_converted(files) -> tuple[BasedConfig | MambaConfig, dict]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  from convert import torch_to_flax  # pylint: disable=import-outside-toplevel
  from convert.errors import CheckpointError, CorruptCheckpointError  # pylint: disable=import-outside-toplevel

  with open(files.config) as f:
    try:
      hf = json.load(f)
      config = (MambaConfig if is_mamba_config(hf) else BasedConfig).from_hf_dict(hf)
    except (json.JSONDecodeError, ValueError) as e:
      raise CheckpointError(f"{files.config} is not a valid based-jax config: {e}") from None
  want = torch_to_flax.target_shapes(config)
  try:
    with safe_open(files.weights, "flax") as f:
      got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
      problems = torch_to_flax.compare_trees(want, got)
      if problems:
        raise CheckpointError(f"{files.weights} does not match {files.config}:\n  "
                              + "\n  ".join(problems))
      params = torch_to_flax.unflatten((k, f.get_tensor(k)) for k in want)
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # SafetensorError, OSError
    raise CorruptCheckpointError(
        f"could not read {files.weights}; it is truncated or corrupt (convert again): "
        f"{type(e).__name__}: {e}") from None
  return config, params
