"""Strict conversion of a PyTorch Based checkpoint to the based-jax Flax parameter tree.

Steps (each failing with a `CheckpointError` that names what is wrong, before any data is read;
only the equality of a tied head stored twice is checked later, when its values are read):
1. clean the keys: strip `model.`, drop `*metrics*`, `transformer.decay.decay`, `*rotary_emb.inv_freq`;
2. resolve the tied head (lm_head only, embedding only, or both, which must be equal);
3. infer `vocab_size_padded, mlp_hidden, conv_d_inner, conv_kernel_size, conv_bias,
   la_output_norm, mlp_fc1_bias, mlp_fc2_bias, n_positions` from the tensors and check the
   stated sizes of config.json against them;
4. build the target tree with `jax.eval_shape(BasedLM(config).init, ...)`;
5. map every Flax leaf to one PyTorch key through `convert.mapping.MAPPING`, check every shape,
   and collect missing, unused and mis-shaped keys into ONE error.
Then tensors are converted one at a time (`iter_params`), into a streamed `params.safetensors`
(`convert_checkpoint`) or a nested dict of arrays (`load_params`).
"""

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np

from convert import hub, mapping, readers
from convert.errors import CheckpointError, ConfigMismatchError
from convert.readers import TensorRef

if TYPE_CHECKING:  # the model package is imported lazily (module import stays light)
  from based_jax.config import BasedConfig
  from based_jax.mamba.config import MambaConfig

OUTPUT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


@dataclasses.dataclass(frozen=True)
class Step:
  """Fill Flax leaf `flax_path` from PyTorch `torch_key` (a cleaned key) through `hook`."""

  flax_path: str
  torch_key: str
  hook: mapping.Hook
  shape: tuple[int, ...]
  keep_fp32: bool = False  # stored float32 whatever the output dtype (Mamba A_log, D)


@dataclasses.dataclass(frozen=True)
class Plan:
  config: "BasedConfig | MambaConfig"
  steps: tuple[Step, ...]
  sources: Mapping[str, TensorRef]  # cleaned key -> tensor
  tied_check: tuple[str, str] | None  # (embedding key, lm_head key) that must be equal
  dropped: tuple[str, ...]            # original keys that were ignored on purpose


def _fmt(keys, limit: int = 40) -> str:
  keys = sorted(keys)
  more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def _infer_fields(hf: dict, src: Mapping[str, TensorRef]) -> dict:
  """Sizes that config.json does not state, read from the tensor shapes."""
  emb = src.get(mapping.EMBEDDING_KEY) or src.get(mapping.LM_HEAD_KEY)
  if emb is None:
    raise CheckpointError(
        f"checkpoint has neither {mapping.EMBEDDING_KEY!r} nor {mapping.LM_HEAD_KEY!r}")
  if len(emb.shape) != 2:
    raise CheckpointError(f"the embedding must be 2-D (Vp, d); got shape {emb.shape}")
  n_embd = hf.get("n_embd", hf.get("hidden_size"))
  if n_embd is not None and emb.shape[1] != n_embd:
    raise ConfigMismatchError(
        f"config.json n_embd={n_embd} but the embedding has width {emb.shape[1]} "
        f"(shape {emb.shape}): the config does not belong to these weights")
  n_layer = hf.get("n_layer", hf.get("num_hidden_layers"))
  layers = mapping.layer_indices(src)
  if n_layer is not None and layers and layers != set(range(n_layer)):
    raise ConfigMismatchError(
        f"config.json n_layer={n_layer} but the checkpoint has layers "
        f"{min(layers)}..{max(layers)} ({len(layers)} distinct indices)")
  vocab = hf.get("vocab_size")
  if vocab is not None and emb.shape[0] < vocab:
    raise ConfigMismatchError(
        f"config.json vocab_size={vocab} but the embedding has only {emb.shape[0]} rows")
  if mapping.POSITION_KEY in src:
    raise CheckpointError(f"checkpoint has learned position embeddings ({mapping.POSITION_KEY}); "
                          "based-jax models have none (rotary only inside attention)")
  inferred = {"vocab_size_padded": emb.shape[0],
              # No position table in the weights means upstream built none: GPT2Config lets
              # max_position_embeddings = 0 override n_positions, which config.json may also set.
              "n_positions": 0,
              # upstream's getattr default for these is True; the weights say what was built
              "mlp_fc1_bias": mapping.first_with_suffix(src, "mlp.fc1.bias") is not None,
              "mlp_fc2_bias": mapping.first_with_suffix(src, "mlp.fc2.bias") is not None,
              "conv_bias": mapping.first_with_suffix(src, "mixer.conv.conv.bias") is not None,
              "la_output_norm": mapping.first_with_suffix(src, "mixer.g_norm.weight") is not None}
  fc2 = mapping.first_with_suffix(src, "mlp.fc2.weight")
  if fc2 is not None and len(src[fc2].shape) == 2:
    inferred["mlp_hidden"] = src[fc2].shape[1]
  conv = mapping.first_with_suffix(src, "mixer.conv.conv.weight")
  if conv is not None and len(src[conv].shape) == 3:
    inferred["conv_d_inner"], _, inferred["conv_kernel_size"] = src[conv].shape
  return inferred


def target_shapes(config) -> dict[str, tuple[int, ...]]:
  """Flax leaf path -> shape, from `jax.eval_shape` of the model init (no FLOPs, no memory)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from based_jax.mamba import MambaConfig, MambaLM  # pylint: disable=import-outside-toplevel
  from based_jax.model import BasedLM  # pylint: disable=import-outside-toplevel

  if isinstance(config, MambaConfig):
    model = MambaLM(config, dtype=jnp.float32, scan_impl="reference")
  else:
    model = BasedLM(config, dtype=jnp.float32, la_impl="reference")
  ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), ids)
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def plan_conversion(hf_config: dict, tensors: Mapping[str, TensorRef]) -> Plan:
  """Checks a whole checkpoint against the model it describes; raises before reading data."""
  from based_jax.config import BasedConfig  # pylint: disable=import-outside-toplevel

  from convert import mamba  # pylint: disable=import-outside-toplevel

  if mamba.is_mamba_checkpoint(hf_config, tensors):
    return mamba.plan_conversion(hf_config, tensors)
  if "transformer.ln_0.weight" in tensors or "model.transformer.ln_0.weight" in tensors:
    raise CheckpointError("checkpoint uses the legacy post-norm layout (transformer.ln_0.*); "
                          "only the prenorm layout of the released models is supported")
  try:
    kept, dropped = mapping.clean_keys(list(tensors))
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  src = {k: tensors[orig] for k, orig in kept.items()}
  inferred = _infer_fields(hf_config, src)
  try:
    config = BasedConfig.from_hf_dict(hf_config, **inferred)
  except ValueError as e:
    raise ConfigMismatchError(f"config.json with the sizes inferred from the tensors "
                              f"({inferred}) is not a valid BasedConfig: {e}") from None

  tied_check = resolve_tied_head(src, config.tie_word_embeddings, mapping.EMBEDDING_KEY,
                                 mapping.LM_HEAD_KEY)
  layout = ", ".join(f"{i}:{t}" for i, t in enumerate(config.layer_types))
  return match_tensors(config, src, kept, dropped, tied_check, mapping.torch_source,
                       f"the model that config.json describes (layers {layout})")


def resolve_tied_head(src: dict[str, TensorRef], tied: bool, emb_key: str,
                      head_key: str) -> tuple[str, str] | None:
  """With a tied head: both stored -> (emb_key, head_key) to compare when streamed; the head
  only (candle's safetensors) -> renamed to emb_key in `src`. Returns the pair or None."""
  if not tied:
    return None
  has_emb, has_head = emb_key in src, head_key in src
  if has_emb and has_head:
    return (emb_key, head_key)
  if has_head:
    src[emb_key] = src.pop(head_key)
  return None


def match_tensors(config, src: dict[str, TensorRef], kept: dict[str, str], dropped: list[str],
                  tied_check: tuple[str, str] | None, torch_source, describe: str) -> Plan:
  """Maps every Flax leaf of `config`'s model to one tensor of `src` via `torch_source(path)
  -> (key, hook)`; ONE CheckpointError lists every missing, unused and mis-shaped key."""
  steps, missing, misshaped, unmapped = [], [], [], []
  for path, shape in target_shapes(config).items():
    try:
      key, hook = torch_source(path)
    except KeyError:
      unmapped.append(path)
      continue
    if key not in src:
      missing.append(f"{key} (for {path}, shape {hook.shape(shape)})")
      continue
    ref = src[key]
    if not ref.is_floating:
      misshaped.append(f"{key}: dtype {ref.dtype}, expected a floating-point tensor")
    elif hook.shape(ref.shape) != shape:
      misshaped.append(f"{key}: shape {ref.shape} -> {hook.name} -> {hook.shape(ref.shape)}, "
                       f"but {path} needs {shape}")
    steps.append(Step(path, key, hook, shape))
  if tied_check and src[tied_check[0]].shape != src[tied_check[1]].shape:
    misshaped.append(f"{tied_check[1]}: shape {src[tied_check[1]].shape}, but the tied "
                     f"{tied_check[0]} is {src[tied_check[0]].shape}")
  used = {s.torch_key for s in steps} | set(tied_check or ())
  unused = [f"{kept.get(k, k)} {src[k].shape}" for k in src if k not in used]
  problems = []
  if missing:
    problems.append(f"missing ({len(missing)}): {_fmt(missing)}")
  if unused:
    problems.append(f"unused ({len(unused)}): {_fmt(unused)}")
  if misshaped:
    problems.append(f"wrong shape or dtype ({len(misshaped)}): {_fmt(misshaped)}")
  if unmapped:
    problems.append(f"Flax params with no mapping rule (a based-jax bug) ({len(unmapped)}): "
                    f"{_fmt(unmapped)}")
  if problems:
    raise CheckpointError(f"checkpoint does not match {describe}:\n  " + "\n  ".join(problems))
  return Plan(config, tuple(steps), src, tied_check, tuple(dropped))


def compare_trees(want: Mapping[str, tuple[int, ...]],
                  got: Mapping[str, tuple[int, ...]]) -> list[str]:
  """Problems between two {flax path: shape} maps (missing, unused, wrong shape); [] if equal."""
  missing = [f"{k} {want[k]}" for k in want if k not in got]
  unused = [f"{k} {got[k]}" for k in got if k not in want]
  misshaped = [f"{k}: {got[k]}, expected {want[k]}" for k in want
               if k in got and tuple(got[k]) != tuple(want[k])]
  return [f"{what} ({len(items)}): {_fmt(items)}"
          for what, items in (("missing", missing), ("unused", unused),
                              ("wrong shape", misshaped)) if items]


def _as_float(x: np.ndarray) -> np.ndarray:
  return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def iter_params(plan: Plan, dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (Flax path, array of `dtype`) one tensor at a time, in plan order."""
  for step in plan.steps:
    x = plan.sources[step.torch_key].load()
    if plan.tied_check and step.torch_key == plan.tied_check[0]:
      head = plan.sources[plan.tied_check[1]].load()
      if head.shape != x.shape or not np.array_equal(_as_float(head), _as_float(x)):
        raise CheckpointError(
            f"tie_word_embeddings is true but {plan.tied_check[1]} {head.shape} differs from "
            f"{plan.tied_check[0]} {x.shape}; set tie_word_embeddings=false in config.json if "
            "the head is really separate")
      del head
    y = step.hook.fn(_as_float(x)).astype(np.float32 if step.keep_fp32 else dtype, copy=False)
    if y.shape != step.shape:  # guarded by plan_conversion; a hook bug if it fires
      raise CheckpointError(f"{step.torch_key}: converted shape {y.shape} != {step.shape}")
    yield step.flax_path, y


def _open(src: str | os.PathLike, revision: str | None):
  files = hub.locate(src, revision)
  if files.kind != "torch":
    raise CheckpointError(f"{os.fspath(src)!r} is already a converted based-jax checkpoint "
                          f"({files.weights}); load it with based_jax.pretrained.from_pretrained")
  with open(files.config) as f:
    try:
      hf_config = json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{files.config} is not valid JSON: {e}") from None
  return files, hf_config


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                       dtype: str = "float32", revision: str | None = None,
                       progress: bool = True) -> str:
  """Converts `src` (PyTorch dir or hub id) into `dst/config.json` + `dst/params.safetensors`.

  Returns the path of params.safetensors. Keys are Flax paths ("transformer/layers_0/...").
  """
  if dtype not in OUTPUT_DTYPES:
    raise ValueError(f"dtype must be one of {sorted(OUTPUT_DTYPES)}; got {dtype!r}")
  out_dtype = OUTPUT_DTYPES[dtype]
  files, hf_config = _open(src, revision)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from convert.writer import write_safetensors  # pylint: disable=import-outside-toplevel

  with readers.open_weights(files.weights) as tensors:
    plan = plan_conversion(hf_config, tensors)
    os.makedirs(dst, exist_ok=True)
    out = os.path.join(dst, hub.CONVERTED_NAME)
    stream = tqdm(iter_params(plan, out_dtype), total=len(plan.steps), unit="tensor",
                  desc=f"converting {os.path.basename(files.weights)}", disable=not progress)
    metadata = {"format": "based-jax", "source": os.fspath(src),
                "source_file": os.path.basename(files.weights), "dtype": dtype}
    layout = [(s.flax_path, s.shape, np.dtype(np.float32) if s.keep_fp32 else out_dtype)
              for s in plan.steps]
    write_safetensors(out, layout, out_dtype, stream, metadata)
  with open(os.path.join(dst, hub.CONFIG_NAME), "w") as f:
    json.dump(plan.config.to_dict(), f, indent=2)
  return out


def unflatten(flat: Iterator[tuple[str, object]]) -> dict:
  """{"a/b/c": x} pairs -> {"a": {"b": {"c": x}}}."""
  tree: dict = {}
  for path, value in flat:
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def load_params(src: str | os.PathLike, *, dtype: str = "float32",
                revision: str | None = None):
  """Converts in memory: (BasedConfig, nested params dict of jax arrays)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  files, hf_config = _open(src, revision)
  with readers.open_weights(files.weights) as tensors:
    plan = plan_conversion(hf_config, tensors)
    params = unflatten((p, jnp.asarray(x)) for p, x in iter_params(plan, OUTPUT_DTYPES[dtype]))
  return plan.config, params
