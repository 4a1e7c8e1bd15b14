"""Configuration of the Based language models: one frozen dataclass mirroring config.json.

The released checkpoints ship a GPT2Config-style `config.json`
(HazyResearch/based:based/models/gpt.py reads it into `transformers.GPT2Config`). `BasedConfig`
keeps the same field names so that `BasedConfig.from_hf_dict(json.load(f))` and `to_dict()` are
plain copies. A few sizes that the JSON does not state are inferred from the tensors at
conversion time and stored here too (`vocab_size_padded`, `mlp_hidden`, `conv_d_inner`,
`conv_bias`, `la_output_norm`, `conv_kernel_size`).

The mixer dicts become small frozen dataclasses, so the whole config is hashable and can be a
static field of a Flax module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal, Union

LayerType = Literal["conv", "linear_attention", "sliding_window", "mha"]

_CONV_TARGET = "based.models.mixers.convolution.BaseConv"
_LA_TARGET = "based.models.mixers.linear_attention.LinearAttention"
_SWA_TARGET = "based.models.mixers.slide_attention.SlidingAttention"
_TAYLOR_TARGET = "based.models.mixers.linear_attention.TaylorExp"

# Feature dim of the Taylor map that every linear-attention implementation supports.
_SUPPORTED_FEATURE_DIM = 16


def _freeze_extra(d: dict[str, Any], known: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
  """Unknown keys of a mixer dict, JSON-encoded so that they stay hashable and round-trip."""
  return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items() if k not in known))


def _thaw_extra(extra: tuple[tuple[str, str], ...]) -> dict[str, Any]:
  return {k: json.loads(v) for k, v in extra}


@dataclasses.dataclass(frozen=True)
class ConvMixerConfig:
  """BaseConv mixer dict (`mixer` in the released configs).

  `kernel_sizes` of the upstream dict is ignored by upstream (the kernel stays 3); it is kept in
  `extra` only so that `to_dict` round-trips. The real kernel size is
  `BasedConfig.conv_kernel_size`.
  """

  target: str = _CONV_TARGET
  l_max: int = 2048
  use_bias: bool = True
  expand_proj: int = 4
  use_cuda: bool = False
  extra: tuple[tuple[str, str], ...] = ()

  _KEYS = ("_target_", "l_max", "use_bias", "expand_proj", "use_cuda")

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ConvMixerConfig":
    return cls(
        target=d.get("_target_", _CONV_TARGET),
        l_max=int(d.get("l_max", 2048)),
        use_bias=bool(d.get("use_bias", True)),
        expand_proj=int(d.get("expand_proj", 4)),
        use_cuda=bool(d.get("use_cuda", False)),
        extra=_freeze_extra(d, cls._KEYS),
    )

  def to_dict(self) -> dict[str, Any]:
    return {"_target_": self.target, "l_max": self.l_max, "use_bias": self.use_bias,
            "expand_proj": self.expand_proj, "use_cuda": self.use_cuda, **_thaw_extra(self.extra)}


@dataclasses.dataclass(frozen=True)
class LinearAttentionMixerConfig:
  """LinearAttention mixer dict (`alt_mixer`). Defaults are the upstream constructor defaults."""

  target: str = _LA_TARGET
  l_max: int = 2048
  feature_dim: int = 16
  num_heads: int = 16
  head_dim: int | None = None
  eps: float = 1e-12
  parallel_implementation: str = "quadratic"
  extra: tuple[tuple[str, str], ...] = ()

  _KEYS = ("_target_", "l_max", "feature_dim", "num_heads", "head_dim", "eps",
           "parallel_implementation")

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "LinearAttentionMixerConfig":
    head_dim = d.get("head_dim")
    return cls(
        target=d.get("_target_", _LA_TARGET),
        l_max=int(d.get("l_max", 2048)),
        feature_dim=int(d.get("feature_dim", 16)),
        num_heads=int(d.get("num_heads", 16)),
        head_dim=None if head_dim is None else int(head_dim),
        eps=float(d.get("eps", 1e-12)),
        parallel_implementation=str(d.get("parallel_implementation", "quadratic")),
        extra=_freeze_extra(d, cls._KEYS),
    )

  def to_dict(self) -> dict[str, Any]:
    return {"_target_": self.target, "l_max": self.l_max, "feature_dim": self.feature_dim,
            "num_heads": self.num_heads, "head_dim": self.head_dim, "eps": self.eps,
            "parallel_implementation": self.parallel_implementation, **_thaw_extra(self.extra)}


@dataclasses.dataclass(frozen=True)
class SlidingWindowMixerConfig:
  """SlidingAttention mixer dict (`alt_mixer_2`).

  Heads, biases, softmax scale and rotary settings come from the top-level config (upstream
  `sliding_window_additions` overwrites them), so only the window is kept here.
  A query at i sees keys j in [i - window_size // 2, i].
  """

  target: str = _SWA_TARGET
  window_size: int = 128
  extra: tuple[tuple[str, str], ...] = ()

  _KEYS = ("_target_", "window_size")

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SlidingWindowMixerConfig":
    return cls(target=d.get("_target_", _SWA_TARGET), window_size=int(d.get("window_size", 128)),
               extra=_freeze_extra(d, cls._KEYS))

  def to_dict(self) -> dict[str, Any]:
    return {"_target_": self.target, "window_size": self.window_size, **_thaw_extra(self.extra)}


MixerConfig = Union[ConvMixerConfig, LinearAttentionMixerConfig, SlidingWindowMixerConfig]


def _mixer_from_dict(slot: str, d: dict[str, Any] | None) -> MixerConfig | None:
  """Pick the mixer class by `_target_` as upstream hydra does; a dict without one uses the slot."""
  if d is None:
    return None
  if not isinstance(d, dict):
    raise ValueError(f"BasedConfig: {slot} must be a dict (or null); got {type(d).__name__}")
  target = d.get("_target_")
  if target is None:
    kind = {"mixer": "conv", "alt_mixer": "linear_attention", "alt_mixer_2": "sliding_window"}[slot]
  elif "slide" in target:  # the upstream test (gpt.py create_mixer_cls)
    kind = "sliding_window"
  elif "linear_attention" in target or "LinearAttention" in target:
    kind = "linear_attention"
  elif "convolution" in target or "BaseConv" in target:
    kind = "conv"
  else:
    raise ValueError(
        f"BasedConfig: {slot}._target_ = {target!r} is not a supported mixer; expected a BaseConv, "
        "LinearAttention or SlidingAttention target")
  cls = {"conv": ConvMixerConfig, "linear_attention": LinearAttentionMixerConfig,
         "sliding_window": SlidingWindowMixerConfig}[kind]
  return cls.from_dict(d)


def _mixer_kind(m: MixerConfig | None) -> LayerType:
  if m is None:
    return "mha"
  if isinstance(m, ConvMixerConfig):
    return "conv"
  if isinstance(m, LinearAttentionMixerConfig):
    return "linear_attention"
  return "sliding_window"


def _round_up(x: int, m: int) -> int:
  return int(math.ceil(x / m) * m)


# Values that upstream uses when config.json omits a key (GPT2Config defaults and the getattr
# defaults in HazyResearch/based:based/models/gpt.py). from_hf_dict applies these, not the dataclass
# defaults below (which describe the released Based models).
_HF_DEFAULTS: dict[str, Any] = {
    "n_embd": 768, "n_head": 12, "n_layer": 12, "vocab_size": 50257,
    "pad_vocab_size_multiple": 1, "n_inner": None, "layer_norm_epsilon": 1e-5,
    "rms_norm": False, "residual_in_fp32": False, "tie_word_embeddings": True,
    "rotary_emb_fraction": 0.0, "rotary_emb_base": 10000.0, "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None, "n_head_kv": None, "n_positions": 1024,
    "activation_function": "gelu_new", "qkv_proj_bias": True, "out_proj_bias": True,
    "mlp_fc1_bias": True, "mlp_fc2_bias": True, "lm_head_bias": False,
    "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "prenorm": True,
    "parallel_block": False, "fixed_decay": False,
}
_HF_ALIASES = {"hidden_size": "n_embd", "num_attention_heads": "n_head",
               "num_hidden_layers": "n_layer", "max_position_embeddings": "n_positions"}
_INFERRED = ("vocab_size_padded", "mlp_hidden", "conv_d_inner", "conv_bias", "la_output_norm",
             "conv_kernel_size")


@dataclasses.dataclass(frozen=True)
class BasedConfig:
  """Hyper-parameters of a Based (or attention-baseline) LM. Field names follow config.json.

  Derived sizes are properties: `head_dim` (Dh of SWA/MHA), `la_head_dim` (Dv of linear attention),
  `rotary_dim`, `layer_types`, ... Inferred fields left as None are filled from the upstream
  formulas in `__post_init__`.
  """

  n_embd: int
  n_head: int
  n_layer: int
  vocab_size: int = 50257
  pad_vocab_size_multiple: int = 8
  n_inner: int | None = None
  layer_norm_epsilon: float = 1e-5
  rms_norm: bool = True
  residual_in_fp32: bool = True
  tie_word_embeddings: bool = True
  rotary_emb_fraction: float = 1.0
  rotary_emb_base: float = 10000.0
  rotary_emb_interleaved: bool = False
  rotary_emb_scale_base: float | None = None
  n_head_kv: int | None = None
  n_positions: int = 0
  activation_function: str = "swiglu"
  qkv_proj_bias: bool = False
  out_proj_bias: bool = False
  mlp_fc1_bias: bool = False
  mlp_fc2_bias: bool = False
  lm_head_bias: bool = False
  scale_attn_weights: bool = True
  scale_attn_by_inverse_layer_idx: bool = False
  prenorm: bool = True
  parallel_block: bool = False
  fixed_decay: bool = False
  mixer: MixerConfig | None = None
  alt_mixer: MixerConfig | None = None
  alt_mixer_2: MixerConfig | None = None
  alt_mixer_layers: tuple[int, ...] = ()
  alt_mixer_2_layers: tuple[int, ...] = ()
  # Not in config.json: inferred from tensors at conversion (None -> upstream formula).
  vocab_size_padded: int | None = None   # word_embeddings.weight.shape[0]
  mlp_hidden: int | None = None          # fc2.weight.shape[1]
  conv_d_inner: int | None = None        # mixer.conv.conv.weight.shape[0]
  conv_bias: bool = False                # mixer.conv.conv.bias present
  la_output_norm: bool = False           # mixer.g_norm.weight present (variant B)
  conv_kernel_size: int = 3              # mixer.conv.conv.weight.shape[2]

  def __post_init__(self):
    def fail(msg):
      raise ValueError(f"BasedConfig: {msg}")

    for name in ("n_embd", "n_head", "n_layer", "vocab_size", "pad_vocab_size_multiple",
                 "conv_kernel_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(f"{name} must be a positive int; got {value!r}")
    if self.n_embd % self.n_head:
      fail(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
    # Normalise sequences (JSON lists) to tuples so the config stays hashable.
    object.__setattr__(self, "alt_mixer_layers", tuple(int(i) for i in self.alt_mixer_layers or ()))
    object.__setattr__(self, "alt_mixer_2_layers",
                       tuple(int(i) for i in self.alt_mixer_2_layers or ()))
    for name in ("alt_mixer_layers", "alt_mixer_2_layers"):
      bad = [i for i in getattr(self, name) if not 0 <= i < self.n_layer]
      if bad:
        fail(f"{name} has indices {bad} outside [0, n_layer={self.n_layer})")
    for name in ("mixer", "alt_mixer", "alt_mixer_2"):
      m = getattr(self, name)
      if m is not None and not isinstance(
          m, (ConvMixerConfig, LinearAttentionMixerConfig, SlidingWindowMixerConfig)):
        fail(f"{name} must be a ConvMixerConfig, LinearAttentionMixerConfig, "
             f"SlidingWindowMixerConfig or None; got {type(m).__name__} "
             "(use from_hf_dict for dicts)")

    # Upstream features this port does not implement: refuse instead of computing something else.
    if self.activation_function != "swiglu":
      fail(f"activation_function must be 'swiglu' (GatedMlp); got {self.activation_function!r}")
    if not self.rms_norm:
      fail("rms_norm must be True (LayerNorm models are not supported)")
    if not self.prenorm or self.parallel_block:
      fail(f"only prenorm=True, parallel_block=False blocks are supported; got "
           f"prenorm={self.prenorm}, parallel_block={self.parallel_block}")
    if self.n_positions != 0:
      fail(f"n_positions (max_position_embeddings) must be 0: learned position embeddings are not "
           f"supported; got {self.n_positions}")
    if self.n_head_kv is not None and self.n_head_kv != self.n_head:
      fail(f"n_head_kv must be None or n_head={self.n_head} (no GQA); got {self.n_head_kv}")
    if self.rotary_emb_interleaved or self.rotary_emb_scale_base is not None:
      fail("only non-interleaved, unscaled rotary embeddings are supported; got "
           f"rotary_emb_interleaved={self.rotary_emb_interleaved}, "
           f"rotary_emb_scale_base={self.rotary_emb_scale_base}")
    if self.lm_head_bias:
      fail("lm_head_bias=True is not supported")
    if not 0.0 <= self.rotary_emb_fraction <= 1.0:
      fail(f"rotary_emb_fraction must be in [0, 1]; got {self.rotary_emb_fraction}")
    if self.rotary_dim % 2:
      fail(f"rotary dim int(rotary_emb_fraction * head_dim) = {self.rotary_dim} must be even")
    if self.layer_norm_epsilon <= 0:
      fail(f"layer_norm_epsilon must be > 0; got {self.layer_norm_epsilon}")

    if self.vocab_size_padded is None:
      object.__setattr__(self, "vocab_size_padded",
                         _round_up(self.vocab_size, self.pad_vocab_size_multiple))
    if self.vocab_size_padded < self.vocab_size:
      fail(f"vocab_size_padded={self.vocab_size_padded} must be >= vocab_size={self.vocab_size}")
    if self.mlp_hidden is None:
      # GatedMlp: hidden = n_inner or int(8 d / 3), rounded up to a multiple of 256.
      base = self.n_inner if self.n_inner is not None else int(8 * self.n_embd / 3)
      object.__setattr__(self, "mlp_hidden", _round_up(base, 256))
    if self.mlp_hidden < 1:
      fail(f"mlp_hidden must be >= 1; got {self.mlp_hidden}")

    kinds = set(self.layer_types)
    conv = self._mixer_of_kind(ConvMixerConfig)
    if conv is not None and self.conv_d_inner is None:
      if (conv.expand_proj * self.n_embd) % 2:
        fail(f"conv d_inner = expand_proj * n_embd / 2 must be an integer; got expand_proj="
             f"{conv.expand_proj}, n_embd={self.n_embd}")
      object.__setattr__(self, "conv_d_inner", conv.expand_proj * self.n_embd // 2)
    if "conv" in kinds and self.conv_d_inner < 1:
      fail(f"conv_d_inner must be >= 1; got {self.conv_d_inner}")
    la = self._mixer_of_kind(LinearAttentionMixerConfig)
    if "linear_attention" in kinds:
      if la.feature_dim != _SUPPORTED_FEATURE_DIM:
        fail(f"linear attention feature_dim must be {_SUPPORTED_FEATURE_DIM} (Taylor map of "
             f"273 features); got {la.feature_dim}")
      if la.head_dim is None and self.n_embd % la.num_heads:
        fail(f"n_embd={self.n_embd} must be divisible by the linear-attention num_heads="
             f"{la.num_heads}")
    swa = self._mixer_of_kind(SlidingWindowMixerConfig)
    if "sliding_window" in kinds and swa.window_size < 0:
      fail(f"window_size must be >= 0; got {swa.window_size}")

  # ---- layer layout ------------------------------------------------------------------------

  def mixer_for_layer(self, i: int) -> MixerConfig | None:
    """The mixer config of layer i by the upstream rule (None -> full MHA).

    alt_mixer_2 wins over alt_mixer; a selected slot that is null falls back to MHA.
    """
    if i in self.alt_mixer_2_layers:
      return self.alt_mixer_2
    if i in self.alt_mixer_layers:
      return self.alt_mixer
    return self.mixer

  @property
  def layer_types(self) -> tuple[LayerType, ...]:
    return tuple(_mixer_kind(self.mixer_for_layer(i)) for i in range(self.n_layer))

  def _mixer_of_kind(self, cls):
    """The (single) mixer config of a kind used by some layer, or None."""
    found = [self.mixer_for_layer(i) for i in range(self.n_layer)]
    found = [m for m in found if isinstance(m, cls)]
    if not found:
      return None
    if any(m != found[0] for m in found):
      raise ValueError(f"BasedConfig: layers use two different {cls.__name__} settings")
    return found[0]

  # ---- derived sizes -----------------------------------------------------------------------

  @property
  def head_dim(self) -> int:
    """Dh of the softmax attention layers (SWA, MHA)."""
    return self.n_embd // self.n_head

  @property
  def rotary_dim(self) -> int:
    return int(self.rotary_emb_fraction * self.head_dim)

  def softmax_scale(self, layer_idx: int) -> float:
    scale = self.head_dim ** -0.5 if self.scale_attn_weights else 1.0
    if self.scale_attn_by_inverse_layer_idx:
      scale /= float(layer_idx + 1)
    return scale

  @property
  def window_size(self) -> int | None:
    swa = self._mixer_of_kind(SlidingWindowMixerConfig)
    return None if swa is None else swa.window_size

  @property
  def window_left(self) -> int | None:
    """w = window_size // 2: a query sees itself and the w keys before it."""
    w = self.window_size
    return None if w is None else w // 2

  @property
  def conv_mixer(self) -> ConvMixerConfig | None:
    return self._mixer_of_kind(ConvMixerConfig)

  @property
  def linear_attention(self) -> LinearAttentionMixerConfig | None:
    return self._mixer_of_kind(LinearAttentionMixerConfig)

  @property
  def la_num_heads(self) -> int:
    la = self.linear_attention
    return self.n_head if la is None else la.num_heads

  @property
  def la_feature_dim(self) -> int:
    la = self.linear_attention
    return _SUPPORTED_FEATURE_DIM if la is None else la.feature_dim

  @property
  def la_head_dim(self) -> int:
    """Dv of linear attention (64 for based-360m, 112 for based-1b)."""
    la = self.linear_attention
    if la is None:
      return self.head_dim
    return la.head_dim if la.head_dim is not None else self.n_embd // la.num_heads

  @property
  def la_normalize(self) -> bool:
    """Variant A (denominator) unless the checkpoint has g_norm (variant B)."""
    return not self.la_output_norm

  @property
  def la_eps(self) -> float:
    """Denominator eps: the mixer's eps (1e-12), 1e-6 when the implementation is an fla one."""
    la = self.linear_attention
    if la is None:
      return 1e-12
    return 1e-6 if "fla" in la.parallel_implementation else la.eps

  @property
  def expanded_dim(self) -> int:
    f = self.la_feature_dim
    return 1 + f + f * f

  # ---- (de)serialisation -------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> "BasedConfig":
    """Build from a config.json dict. Unknown keys are ignored; missing keys take upstream defaults.

    `overrides` replace fields after parsing (the converter passes the inferred sizes, e.g.
    `vocab_size_padded=50264, la_output_norm=True`). Mixer overrides may be dicts.
    """
    if not isinstance(d, dict):
      raise ValueError(f"BasedConfig.from_hf_dict: d must be a dict; got {type(d).__name__}")
    d = dict(d)
    # GPT2Config applies aliased kwargs (e.g. max_position_embeddings) after its named arguments,
    # so when config.json has both spellings the alias wins.
    for alias, name in _HF_ALIASES.items():
      if alias in d:
        d[name] = d[alias]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
      raise ValueError(f"BasedConfig.from_hf_dict: unknown override(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, default in _HF_DEFAULTS.items():
      kwargs[name] = d.get(name, default)
    for slot in ("mixer", "alt_mixer", "alt_mixer_2"):
      kwargs[slot] = _mixer_from_dict(slot, d.get(slot))
    for name in ("alt_mixer_layers", "alt_mixer_2_layers"):
      kwargs[name] = tuple(d.get(name) or ())
    for name in _INFERRED:
      if name in d:
        kwargs[name] = d[name]
    for name, value in overrides.items():
      if name in ("mixer", "alt_mixer", "alt_mixer_2") and isinstance(value, dict):
        value = _mixer_from_dict(name, value)
      kwargs[name] = value
    return cls(**kwargs)

  def to_dict(self) -> dict[str, Any]:
    """A config.json dict (upstream keys plus the inferred fields); from_hf_dict inverts it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name in ("mixer", "alt_mixer", "alt_mixer_2"):
        value = None if value is None else value.to_dict()
      elif isinstance(value, tuple):
        value = list(value)
      out[f.name] = value
    out["model_type"] = "gpt2"
    return out

  def replace(self, **changes: Any) -> "BasedConfig":
    return dataclasses.replace(self, **changes)

  # ---- presets -----------------------------------------------------------------------------

  @classmethod
  def based_360m(cls, **overrides: Any) -> "BasedConfig":
    """hazyresearch/based-360m: d 1024, 27 layers, Vp 50264, window 128 (candle / rebased)."""
    kw = dict(
        n_embd=1024, n_head=16, n_layer=27, vocab_size=50257, pad_vocab_size_multiple=8,
        n_inner=2048, rotary_emb_fraction=1.0,
        mixer=ConvMixerConfig(l_max=2048, expand_proj=4, use_bias=True),
        alt_mixer=LinearAttentionMixerConfig(l_max=2048, feature_dim=16, num_heads=16),
        alt_mixer_2=SlidingWindowMixerConfig(window_size=128),
        alt_mixer_layers=(1, 6, 11, 16, 21), alt_mixer_2_layers=(2, 7, 12, 17, 22),
    )
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def based_1b(cls, **overrides: Any) -> "BasedConfig":
    """hazyresearch/based-1b: d 1792, Dh 112, 36 layers, Vp 50264, window 256."""
    kw = dict(
        n_embd=1792, n_head=16, n_layer=36, vocab_size=50257, pad_vocab_size_multiple=8,
        n_inner=3584, rotary_emb_fraction=1.0, fixed_decay=True,
        mixer=ConvMixerConfig(l_max=2048, expand_proj=4, use_bias=True),
        alt_mixer=LinearAttentionMixerConfig(l_max=2048, feature_dim=16, num_heads=16),
        alt_mixer_2=SlidingWindowMixerConfig(window_size=256),
        alt_mixer_layers=(1, 6, 11, 16, 21, 27, 33),
        alt_mixer_2_layers=(2, 7, 12, 17, 22, 28, 34),
    )
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def attn_360m(cls, **overrides: Any) -> "BasedConfig":
    """hazyresearch/attn-360m: 24 MHA layers, rotary on half the head, MLP 2816, Vp 50272."""
    kw = dict(
        n_embd=1024, n_head=16, n_layer=24, vocab_size=50257, pad_vocab_size_multiple=16,
        n_inner=None, rotary_emb_fraction=0.5,
    )
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def tiny(cls, *, n_embd: int = 64, n_head: int = 4, n_layer: int = 4, vocab_size: int = 101,
           window_size: int = 8, la_layers: tuple[int, ...] = (1,),
           swa_layers: tuple[int, ...] = (2,), attention_only: bool = False,
           **overrides: Any) -> "BasedConfig":
    """A small config for tests: conv everywhere except `la_layers` (LA) and `swa_layers` (SWA).

    attention_only=True gives an attn-360m-like model (every layer MHA).
    """
    kw: dict[str, Any] = dict(
        n_embd=n_embd, n_head=n_head, n_layer=n_layer, vocab_size=vocab_size,
        pad_vocab_size_multiple=8, n_inner=None,
    )
    if attention_only:
      kw["rotary_emb_fraction"] = 0.5
    else:
      kw.update(
          mixer=ConvMixerConfig(l_max=256),
          alt_mixer=LinearAttentionMixerConfig(l_max=256, num_heads=n_head),
          alt_mixer_2=SlidingWindowMixerConfig(window_size=window_size),
          alt_mixer_layers=tuple(la_layers), alt_mixer_2_layers=tuple(swa_layers),
      )
    kw.update(overrides)
    return cls(**kw)
