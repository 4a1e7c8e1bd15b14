"""Conversion of the Mamba layout (`backbone.*`, hazyresearch/mamba-360m) to the MambaLM tree.

PyTorch keys (upstream MambaLMHeadModel, after stripping `model.` and dropping `*metrics*`):
    backbone.embedding.weight (Vp, d)          -> backbone/embedding/embedding
    backbone.layers.{i}.norm.weight (d,)       -> backbone/layers_{i}/norm/weight
    ...mixer.in_proj.weight (2C, d)            -> .../mixer/in_proj/kernel (d, 2C)   [x | z]
    ...mixer.conv1d.weight (C, 1, K), .bias    -> .../mixer/conv1d/kernel (K, 1, C), bias
    ...mixer.x_proj.weight (R + 2N, C)         -> .../mixer/x_proj/kernel           [dt | B | C]
    ...mixer.dt_proj.weight (C, R), .bias (C,) -> .../mixer/dt_proj/kernel (R, C), bias
    ...mixer.A_log (C, N), mixer.D (C,)        -> .../mixer/A_log, D   (always stored float32)
    ...mixer.out_proj.weight (d, C)            -> .../mixer/out_proj/kernel (C, d)
    backbone.norm_f.weight (d,)                -> backbone/norm_f/weight
    lm_head.weight (Vp, d)                     -> tied to the embedding (or lm_head/kernel)
Sizes are read from the tensors (Vp, d_inner, d_state, d_conv, dt_rank, biases) and checked
against config.json; any disagreement, missing, unused or mis-shaped key is one CheckpointError.
"""

import dataclasses
import re
from collections.abc import Mapping

from convert import mapping
from convert.errors import CheckpointError, ConfigMismatchError
from convert.readers import TensorRef

EMBEDDING_KEY = "backbone.embedding.weight"
LM_HEAD_KEY = "lm_head.weight"
FP32_LEAVES = ("A_log", "D")  # kept float32 in every output dtype

_LAYER = r"backbone/layers_(?P<i>\d+)"
_TORCH_LAYER = "backbone.layers.{i}"
# (Flax path regex, PyTorch key template, hook); named groups fill the template.
MAPPING: tuple[tuple[str, str, mapping.Hook], ...] = (
    ("backbone/embedding/embedding", EMBEDDING_KEY, mapping.identity),
    ("backbone/norm_f/weight", "backbone.norm_f.weight", mapping.identity),
    (_LAYER + r"/norm/weight", _TORCH_LAYER + ".norm.weight", mapping.identity),
    (_LAYER + r"/mixer/(?P<p>in_proj|x_proj|dt_proj|out_proj)/kernel",
     _TORCH_LAYER + ".mixer.{p}.weight", mapping.transpose),
    (_LAYER + r"/mixer/(?P<p>in_proj|dt_proj|out_proj)/bias", _TORCH_LAYER + ".mixer.{p}.bias",
     mapping.identity),
    (_LAYER + r"/mixer/conv1d/kernel", _TORCH_LAYER + ".mixer.conv1d.weight",
     mapping.conv1d_torch_to_flax),
    (_LAYER + r"/mixer/conv1d/bias", _TORCH_LAYER + ".mixer.conv1d.bias", mapping.identity),
    (_LAYER + r"/mixer/(?P<p>A_log|D)", _TORCH_LAYER + ".mixer.{p}", mapping.identity),
    ("lm_head/kernel", LM_HEAD_KEY, mapping.transpose),
)
_COMPILED = tuple((re.compile(p), t, h) for p, t, h in MAPPING)
_LAYER_KEY = re.compile(r"backbone\.layers\.(\d+)\.(.*)")


def torch_source(flax_path: str) -> tuple[str, mapping.Hook]:
  """The PyTorch key and hook for a MambaLM leaf path; KeyError when no rule covers it."""
  for pattern, template, hook in _COMPILED:
    m = pattern.fullmatch(flax_path)
    if m:
      return template.format(**m.groupdict()), hook
  raise KeyError(flax_path)


def is_mamba_checkpoint(hf_config: dict, keys) -> bool:
  """A Mamba config.json (`d_model`) or any `backbone.*` tensor."""
  from based_jax.mamba.config import is_mamba_config  # pylint: disable=import-outside-toplevel

  return is_mamba_config(hf_config) or any(
      k.removeprefix("model.").startswith("backbone.") for k in keys)


def _first(src, suffix: str) -> str | None:
  found = sorted((int(m.group(1)), k) for k in src
                 if (m := _LAYER_KEY.fullmatch(k)) and m.group(2) == suffix)
  return found[0][1] if found else None


def _infer(hf: dict, src: Mapping[str, TensorRef]) -> tuple[int, dict]:
  """(vocab_size_padded, ssm_cfg dict) from the tensors, checked against config.json."""
  emb = src.get(EMBEDDING_KEY) or src.get(LM_HEAD_KEY)
  if emb is None:
    raise CheckpointError(f"Mamba checkpoint has neither {EMBEDDING_KEY!r} nor {LM_HEAD_KEY!r}")
  if len(emb.shape) != 2:
    raise CheckpointError(f"the embedding must be 2-D (Vp, d_model); got shape {emb.shape}")
  vp, width = emb.shape
  problems = []
  if "d_model" in hf and hf["d_model"] != width:
    problems.append(f"d_model={hf['d_model']} but the embedding has width {width}")
  layers = {int(m.group(1)) for m in map(_LAYER_KEY.fullmatch, src) if m}
  if "n_layer" in hf and layers and layers != set(range(hf["n_layer"])):
    problems.append(f"n_layer={hf['n_layer']} but the checkpoint has layers "
                    f"{min(layers)}..{max(layers)} ({len(layers)} distinct indices)")
  if "vocab_size" in hf and vp < hf["vocab_size"]:
    problems.append(f"vocab_size={hf['vocab_size']} but the embedding has only {vp} rows")
  ssm = dict(hf.get("ssm_cfg") or {})
  seen: dict = {}
  shapes = {s: src[k].shape for s in ("mixer.in_proj.weight", "mixer.A_log",
                                      "mixer.conv1d.weight", "mixer.dt_proj.weight")
            if (k := _first(src, s)) is not None}
  if len(shapes.get("mixer.in_proj.weight", ())) == 2:
    two_c = shapes["mixer.in_proj.weight"][0]
    if two_c % (2 * width):
      problems.append(f"mixer.in_proj.weight has {two_c} rows: not 2 * expand * d_model "
                      f"(d_model {width})")
    else:
      seen["expand"] = two_c // (2 * width)
  if len(shapes.get("mixer.A_log", ())) == 2:
    seen["d_state"] = shapes["mixer.A_log"][1]
  if len(shapes.get("mixer.conv1d.weight", ())) == 3:
    seen["d_conv"] = shapes["mixer.conv1d.weight"][2]
  if len(shapes.get("mixer.dt_proj.weight", ())) == 2:
    seen["dt_rank"] = shapes["mixer.dt_proj.weight"][1]
  seen["conv_bias"] = _first(src, "mixer.conv1d.bias") is not None
  seen["bias"] = _first(src, "mixer.in_proj.bias") is not None
  defaults = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": -(-width // 16),
              "conv_bias": True, "bias": False}  # upstream Mamba.__init__ (dt_rank "auto")
  for name, value in seen.items():
    stated = ssm.get(name, defaults[name])
    if name == "dt_rank" and stated == "auto":
      stated = defaults[name]
    if stated != value:
      problems.append(f"ssm_cfg.{name}={ssm.get(name, '(default) ' + str(defaults[name]))} but "
                      f"the tensors say {value}")
  if problems:
    raise ConfigMismatchError("config.json does not belong to these Mamba weights: "
                              + "; ".join(problems))
  return vp, ssm


def plan_conversion(hf_config: dict, tensors: Mapping[str, TensorRef]):
  """The Mamba counterpart of `torch_to_flax.plan_conversion` (same Plan, same errors)."""
  from based_jax.mamba.config import MambaConfig  # pylint: disable=import-outside-toplevel

  from convert import torch_to_flax  # pylint: disable=import-outside-toplevel

  try:
    kept, dropped = mapping.clean_keys(list(tensors))
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  src = {k: tensors[orig] for k, orig in kept.items()}
  vp, ssm = _infer(hf_config, src)
  try:
    config = MambaConfig.from_hf_dict(hf_config, vocab_size_padded=vp, ssm_cfg=ssm)
  except ValueError as e:
    raise ConfigMismatchError(f"config.json with the sizes inferred from the tensors is not a "
                              f"valid MambaConfig: {e}") from None
  tied_check = torch_to_flax.resolve_tied_head(src, config.tie_embeddings, EMBEDDING_KEY,
                                               LM_HEAD_KEY)
  plan = torch_to_flax.match_tensors(
      config, src, kept, dropped, tied_check, torch_source,
      f"the Mamba model that config.json describes ({config.n_layer} layers, d_model "
      f"{config.d_model}, d_inner {config.d_inner}, d_state {config.d_state})")
  steps = tuple(dataclasses.replace(s, keep_fp32=s.flax_path.rsplit("/", 1)[-1] in FP32_LEAVES)
                for s in plan.steps)
  return dataclasses.replace(plan, steps=steps)
