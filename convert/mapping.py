"""The PyTorch -> Flax key mapping: one explicit table plus small named hooks.

Flax paths are `/`-joined (`transformer/layers_3/mixer/proj_q/kernel`, docs/design.md); PyTorch
keys are the upstream HazyResearch/based names after clean-up (`transformer.layers.3.mixer.
proj_q.weight`). Each rule matches a Flax path and names the one PyTorch key and hook that fill it.
"""

import dataclasses
import re
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hook:
  """A layout change from a PyTorch tensor to a Flax leaf, with its effect on the shape."""

  name: str
  fn: Callable[[np.ndarray], np.ndarray]
  shape: Callable[[tuple[int, ...]], tuple[int, ...]]


identity = Hook("identity", lambda x: x, lambda s: s)
# nn.Linear.weight (out, in) -> nn.Dense kernel (in, out).
transpose = Hook("transpose", lambda x: np.ascontiguousarray(x.T),
                 lambda s: tuple(reversed(s)) if len(s) == 2 else ("not 2-D", *s))
# Depthwise nn.Conv1d.weight (C, 1, K) -> nn.Conv kernel (K, 1, C); no flip (both correlate).
conv1d_torch_to_flax = Hook("conv1d_torch_to_flax",
                            lambda x: np.ascontiguousarray(x.transpose(2, 1, 0)),
                            lambda s: (s[2], s[1], s[0]) if len(s) == 3 else ("not 3-D", *s))

_LAYER = r"transformer/layers_(?P<i>\d+)"
_TORCH_LAYER = "transformer.layers.{i}"

# (Flax path regex, PyTorch key template, hook). Named groups fill the template.
MAPPING: tuple[tuple[str, str, Hook], ...] = (
    ("transformer/embeddings/word_embeddings/embedding",
     "transformer.embeddings.word_embeddings.weight", identity),
    ("transformer/ln_f/weight", "transformer.ln_f.weight", identity),
    (_LAYER + r"/(?P<norm>norm1|norm2)/weight", _TORCH_LAYER + ".{norm}.weight", identity),
    (_LAYER + r"/mlp/(?P<fc>fc1|fc2)/kernel", _TORCH_LAYER + ".mlp.{fc}.weight", transpose),
    (_LAYER + r"/mlp/(?P<fc>fc1|fc2)/bias", _TORCH_LAYER + ".mlp.{fc}.bias", identity),
    # BaseConv
    (_LAYER + r"/mixer/(?P<p>in_proj|out_proj)/bias", _TORCH_LAYER + ".mixer.{p}.bias", identity),
    (_LAYER + r"/mixer/conv/conv/kernel", _TORCH_LAYER + ".mixer.conv.conv.weight",
     conv1d_torch_to_flax),
    (_LAYER + r"/mixer/conv/conv/bias", _TORCH_LAYER + ".mixer.conv.conv.bias", identity),
    # Projections of every mixer: BaseConv in/out, LinearAttention q/k/v/out, SWA/MHA Wqkv/out.
    (_LAYER + r"/mixer/(?P<p>in_proj|out_proj|proj_q|proj_k|proj_v|Wqkv)/kernel",
     _TORCH_LAYER + ".mixer.{p}.weight", transpose),
    (_LAYER + r"/mixer/g_norm/weight", _TORCH_LAYER + ".mixer.g_norm.weight", identity),
    ("lm_head/kernel", "lm_head.weight", transpose),
)
_COMPILED = tuple((re.compile(pattern), template, hook) for pattern, template, hook in MAPPING)

EMBEDDING_KEY = "transformer.embeddings.word_embeddings.weight"
LM_HEAD_KEY = "lm_head.weight"
POSITION_KEY = "transformer.embeddings.position_embeddings.weight"


def torch_source(flax_path: str) -> tuple[str, Hook]:
  """The PyTorch key and hook for a Flax leaf path; KeyError when no rule covers it."""
  for pattern, template, hook in _COMPILED:
    m = pattern.fullmatch(flax_path)
    if m:
      return template.format(**m.groupdict()), hook
  raise KeyError(flax_path)


# ---- clean-up of the raw checkpoint keys ----------------------------------------------------

# Entries that upstream drops or never uses (based_model.md section 2.3).
_IGNORED = (
    re.compile(r".*metrics.*"),                   # train_metrics.num-tokens.count, ...
    re.compile(r"transformer\.decay\.decay"),     # fixed_decay buffer, unused by every mixer
    re.compile(r".*\.rotary_emb\.inv_freq"),      # recomputed
)


def clean_keys(names: list[str]) -> tuple[dict[str, str], list[str]]:
  """Strips a leading `model.` and drops ignored entries.

  Returns ({clean key: original key}, [dropped original keys]). Raises ValueError on two
  entries that clean to the same key.
  """
  kept: dict[str, str] = {}
  dropped: list[str] = []
  for name in names:
    key = name.removeprefix("model.")
    if any(p.fullmatch(key) for p in _IGNORED):
      dropped.append(name)
      continue
    if key in kept:
      raise ValueError(f"checkpoint has both {kept[key]!r} and {name!r}: the same key after "
                       "removing the 'model.' prefix")
    kept[key] = name
  return kept, dropped


_LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.(.*)")


def layer_indices(keys) -> set[int]:
  return {int(m.group(1)) for m in map(_LAYER_KEY.fullmatch, keys) if m}


def first_with_suffix(keys, suffix: str) -> str | None:
  """The per-layer key ending in `suffix` with the lowest layer index, or None."""
  found = sorted((int(m.group(1)), k) for k in keys
                 if (m := _LAYER_KEY.fullmatch(k)) and m.group(2) == suffix)
  return found[0][1] if found else None
