"""Configuration of the Mamba baseline (hazyresearch/mamba-360m): one frozen dataclass.

Mirrors the upstream `MambaConfig` (HazyResearch/based:based/models/mamba.py), whose config.json
holds `d_model, n_layer, vocab_size, ssm_cfg, rms_norm, residual_in_fp32, fused_add_norm,
pad_vocab_size_multiple` (plus GPT-style leftovers such as `n_embd`, kept in `extra`).
`ssm_cfg` (the Mamba mixer kwargs) becomes the frozen `SsmConfig`, so the whole config is
hashable and can be a static field of a Flax module.

A config.json is a Mamba one when it has `d_model` (Based / GPT2Config files use `n_embd`) or
`model_type == "mamba"`: see `is_mamba_config`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from based_jax.config import _freeze_extra, _thaw_extra

# Keys of upstream MambaConfig / ssm_cfg whose values change the math; everything else
# (dt_min, dt_init, use_fast_path, n_embd, ...) is init-only or unused and kept in `extra`.
_SSM_KEYS = ("d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias")
# Defaults of upstream MambaConfig when config.json omits a key.
_HF_DEFAULTS: dict[str, Any] = {
    "d_model": 1024, "n_layer": 48, "vocab_size": 50277, "rms_norm": True,
    "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
    "tie_embeddings": True, "norm_epsilon": 1e-5,
}
_INFERRED = ("vocab_size_padded",)


def is_mamba_config(d: dict[str, Any]) -> bool:
  """True for a Mamba config.json dict (upstream or written by based-jax)."""
  return isinstance(d, dict) and (d.get("model_type") == "mamba" or "d_model" in d)


@dataclasses.dataclass(frozen=True)
class SsmConfig:
  """The Mamba mixer kwargs (`ssm_cfg`); defaults are the upstream `Mamba.__init__` ones.

  dt_rank: an int, or "auto" = ceil(d_model / 16). conv_bias: bias of conv1d.
  bias: biases of in_proj / out_proj.
  """

  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: int | str = "auto"
  conv_bias: bool = True
  bias: bool = False
  extra: tuple[tuple[str, str], ...] = ()

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None) -> "SsmConfig":
    if d is not None and not isinstance(d, dict):
      raise ValueError(f"MambaConfig: ssm_cfg must be a dict; got {type(d).__name__}")
    d = dict(d or {})
    kw = {k: d[k] for k in _SSM_KEYS if k in d}
    return cls(**kw, extra=_freeze_extra(d, _SSM_KEYS))

  def to_dict(self) -> dict[str, Any]:
    out = {k: getattr(self, k) for k in _SSM_KEYS}
    out.update(_thaw_extra(self.extra))
    return out


@dataclasses.dataclass(frozen=True)
class MambaConfig:
  """Hyper-parameters of a Mamba LM. Field names follow the upstream config.json.

  Derived sizes (properties): `d_inner` = expand * d_model, `dt_rank`, `d_state`, `d_conv`.
  `vocab_size_padded` is read from the embedding at conversion; None -> the upstream rule
  (vocab_size rounded up to pad_vocab_size_multiple).
  """

  d_model: int
  n_layer: int
  vocab_size: int = 50277
  ssm_cfg: SsmConfig = SsmConfig()
  rms_norm: bool = True
  residual_in_fp32: bool = True
  fused_add_norm: bool = True
  pad_vocab_size_multiple: int = 8
  tie_embeddings: bool = True
  norm_epsilon: float = 1e-5
  vocab_size_padded: int | None = None
  extra: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    def fail(msg):
      raise ValueError(f"MambaConfig: {msg}")

    for name in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(f"{name} must be a positive int; got {value!r}")
    if isinstance(self.ssm_cfg, dict):
      object.__setattr__(self, "ssm_cfg", SsmConfig.from_dict(self.ssm_cfg))
    if not isinstance(self.ssm_cfg, SsmConfig):
      fail(f"ssm_cfg must be an SsmConfig or a dict; got {type(self.ssm_cfg).__name__}")
    ssm = self.ssm_cfg
    for name in ("d_state", "d_conv", "expand"):
      value = getattr(ssm, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(f"ssm_cfg.{name} must be a positive int; got {value!r}")
    if ssm.dt_rank != "auto" and (not isinstance(ssm.dt_rank, int) or ssm.dt_rank < 1):
      fail(f"ssm_cfg.dt_rank must be 'auto' or a positive int; got {ssm.dt_rank!r}")
    if not self.rms_norm:
      fail("rms_norm must be True (LayerNorm Mamba models are not supported)")
    if self.norm_epsilon <= 0:
      fail(f"norm_epsilon must be > 0; got {self.norm_epsilon}")
    if self.vocab_size_padded is None:
      m = self.pad_vocab_size_multiple
      object.__setattr__(self, "vocab_size_padded", -(-self.vocab_size // m) * m)
    if self.vocab_size_padded < self.vocab_size:
      fail(f"vocab_size_padded={self.vocab_size_padded} must be >= vocab_size={self.vocab_size}")

  # ---- derived sizes -----------------------------------------------------------------------

  @property
  def d_inner(self) -> int:
    return self.ssm_cfg.expand * self.d_model

  @property
  def d_state(self) -> int:
    return self.ssm_cfg.d_state

  @property
  def d_conv(self) -> int:
    return self.ssm_cfg.d_conv

  @property
  def dt_rank(self) -> int:
    r = self.ssm_cfg.dt_rank
    return math.ceil(self.d_model / 16) if r == "auto" else int(r)

  # ---- (de)serialisation -------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> "MambaConfig":
    """Build from a config.json dict; missing keys take the upstream MambaConfig defaults.

    `overrides` (e.g. the converter's `vocab_size_padded=50288`) replace fields after parsing.
    """
    if not isinstance(d, dict):
      raise ValueError(f"MambaConfig.from_hf_dict: d must be a dict; got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
      raise ValueError(f"MambaConfig.from_hf_dict: unknown override(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {k: d.get(k, v) for k, v in _HF_DEFAULTS.items()}
    ssm = d.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
      raise ValueError(f"MambaConfig: ssm_cfg must be a dict; got {type(ssm).__name__}")
    kwargs["ssm_cfg"] = SsmConfig.from_dict(ssm)
    for name in _INFERRED:
      if name in d:
        kwargs[name] = d[name]
    known = set(_HF_DEFAULTS) | {"ssm_cfg", "model_type", *_INFERRED}
    kwargs["extra"] = _freeze_extra(d, known)
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_dict(self) -> dict[str, Any]:
    """A config.json dict (upstream keys, the inferred sizes, model_type "mamba")."""
    out = _thaw_extra(self.extra)
    for f in dataclasses.fields(self):
      if f.name == "extra":
        continue
      value = getattr(self, f.name)
      out[f.name] = value.to_dict() if f.name == "ssm_cfg" else value
    out["model_type"] = "mamba"
    return out

  def replace(self, **changes: Any) -> "MambaConfig":
    return dataclasses.replace(self, **changes)

  # ---- presets -----------------------------------------------------------------------------

  @classmethod
  def mamba_360m(cls, **overrides: Any) -> "MambaConfig":
    """hazyresearch/mamba-360m: d 1024, 46 layers, d_inner 2048, d_state 16, Vp 50288."""
    kw = dict(d_model=1024, n_layer=46, vocab_size=50277, pad_vocab_size_multiple=16,
              ssm_cfg=SsmConfig())
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def tiny(cls, *, d_model: int = 32, n_layer: int = 2, vocab_size: int = 101,
           **overrides: Any) -> "MambaConfig":
    """A small config for tests (d_inner 64, dt_rank 2, d_state 16, d_conv 4)."""
    kw = dict(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size,
              pad_vocab_size_multiple=16)
    kw.update(overrides)
    return cls(**kw)


def mamba_360m(**overrides: Any) -> MambaConfig:
  """The mamba-360m preset (`MambaConfig.mamba_360m`)."""
  return MambaConfig.mamba_360m(**overrides)
