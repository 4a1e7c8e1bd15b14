"""Checkpoints shipped inside the package (no network needed).

`byte-based/`: a 5.3M-parameter byte-level Based LM (d 256, 6 layers: conv, LA, SWA, conv, LA,
SWA; vocab 257 = bytes + EOS, padded to 264) trained on CPU on `pydoc_data.topics` (docs/training.md
has the exact commands and numbers). Use it with `based_jax.byte_tokenizer.ByteTokenizer`:

    from based_jax import assets
    model, params, tokenizer = assets.load_byte_based()
    out = generate(model, params, *tokenizer.encode_batch(["def "]), max_new_tokens=64,
                   tokenizer=tokenizer, eos_token_id=tokenizer.eos_token_id)
"""

import os

BYTE_BASED = "byte-based"


def asset_dir(name: str = BYTE_BASED) -> str:
  """Absolute path of a shipped checkpoint directory (config.json + params.safetensors)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
  if not os.path.isfile(os.path.join(path, "params.safetensors")):
    raise FileNotFoundError(f"shipped checkpoint {name!r} is missing at {path} (is the package "
                            "data installed? see [tool.setuptools.package-data] in pyproject.toml)")
  return path


def load_byte_based(dtype=None, la_impl: str = "auto"):
  """(BasedLM, params, ByteTokenizer) of the shipped byte-level model.

  dtype: compute dtype (default float32); the stored params are bfloat16 and are cast at use.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from based_jax.byte_tokenizer import ByteTokenizer  # pylint: disable=import-outside-toplevel
  from based_jax.pretrained import from_pretrained  # pylint: disable=import-outside-toplevel

  model, params = from_pretrained(asset_dir(BYTE_BASED), dtype=dtype or jnp.float32,
                                  la_impl=la_impl)
  return model, params, ByteTokenizer()
