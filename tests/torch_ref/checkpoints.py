"""Tiny random Based models written to disk exactly like the hub repos.

A hub directory holds `config.json` (GPT2Config style: `n_embd`, `mixer` / `alt_mixer` /
`alt_mixer_2` dicts with hydra `_target_`s, `alt_mixer_layers`, ...) and one weight file:
- `pytorch_model.bin`: `torch.save(state_dict)`; the tied head is stored under both names.
  The "lightning" layout adds a `model.` prefix and a `train_metrics.num-tokens.count` entry
  (plus the unused `transformer.decay.decay` buffer and SWA `rotary_emb.inv_freq` buffers).
- `model.safetensors`: the candle (`refs/pr/1`) layout, with `lm_head.weight` only.
"""

import dataclasses
import json
import math
import os
from typing import Literal

import torch

from tests.torch_ref import model as ref_model

CONV_TARGET = "based.models.mixers.convolution.BaseConv"
LA_TARGET = "based.models.mixers.linear_attention.LinearAttention"
SWA_TARGET = "based.models.mixers.slide_attention.SlidingAttention"
TAYLOR_TARGET = "based.models.mixers.linear_attention.TaylorExp"

WeightFormat = Literal["bin", "bin_lightning", "safetensors"]


def hub_config(*, n_embd: int, n_head: int, n_layer: int, vocab_size: int = 97,
               pad_vocab_size_multiple: int = 8, n_inner: int | None = None,
               la_layers: tuple[int, ...] = (), swa_layers: tuple[int, ...] = (),
               window_size: int = 8, la_heads: int | None = None,
               la_head_dim: int | None = None, attention_only: bool = False,
               rotary_emb_fraction: float = 1.0, fixed_decay: bool = False,
               mlp_bias: bool = False, l_max: int = 2048) -> dict:
  """A config.json dict in the released format (see based-360m)."""
  cfg = {
      "model_type": "gpt2",
      "n_embd": n_embd, "n_head": n_head, "n_layer": n_layer, "n_inner": n_inner,
      "vocab_size": vocab_size, "pad_vocab_size_multiple": pad_vocab_size_multiple,
      "activation_function": "swiglu", "rms_norm": True, "layer_norm_epsilon": 1e-5,
      "residual_in_fp32": True, "fused_mlp": False, "fused_dropout_add_ln": True,
      "fused_bias_fc": True, "tie_word_embeddings": True, "n_positions": 0,
      "max_position_embeddings": 0, "mlp_fc1_bias": mlp_bias, "mlp_fc2_bias": mlp_bias,
      "qkv_proj_bias": False, "out_proj_bias": False, "rotary_emb_fraction": rotary_emb_fraction,
      "special_initializer": True, "fixed_decay": fixed_decay,
      "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
  }
  if attention_only:
    return cfg
  alt_mixer = {"_target_": LA_TARGET, "l_max": l_max, "feature_dim": 16,
               "num_heads": la_heads or n_head,
               "feature_map": {"_target_": TAYLOR_TARGET, "input_dim": 16}}
  if la_head_dim is not None:
    alt_mixer["head_dim"] = la_head_dim
  cfg.update({
      "mixer": {"_target_": CONV_TARGET, "l_max": l_max, "use_bias": True, "expand_proj": 4,
                "kernel_sizes": 3},
      "alt_mixer": alt_mixer,
      "alt_mixer_layers": list(la_layers),
      "alt_mixer_2": {"_target_": SWA_TARGET, "window_size": window_size, "num_heads": n_head,
                      "causal": True},
      "alt_mixer_2_layers": list(swa_layers),
  })
  return cfg


@dataclasses.dataclass(frozen=True)
class TinyCase:
  """A tiny model: its hub config plus the two facts config.json does not carry."""

  name: str
  config: dict
  la_output_norm: bool = False
  conv_bias: bool = False

  def build(self, seed: int) -> ref_model.BasedLMRef:
    return ref_model.build_model(self.config, la_output_norm=self.la_output_norm,
                                 conv_bias=self.conv_bias, seed=seed)


# Every mixer kind, both LA variants, attention-only, several head sizes, odd windows.
TINY_CASES = (
    # Dh 16, every mixer, odd window (w = 3), LA variant A, vocab 97 -> Vp 104.
    TinyCase("mixed-Dh16-w7", hub_config(n_embd=64, n_head=4, n_layer=4, la_layers=(1,),
                                         swa_layers=(2,), window_size=7)),
    # Variant B (g_norm, no denominator) and a conv bias (upstream use_cuda checkpoints).
    TinyCase("gnorm-convbias-Dh16", hub_config(n_embd=64, n_head=4, n_layer=4, la_layers=(0, 2),
                                               swa_layers=(1,), window_size=16),
             la_output_norm=True, conv_bias=True),
    # Non-power-of-two head dim Dh = 24 (d = 4 * 24), n_inner set explicitly, MLP biases.
    TinyCase("mixed-Dh24", hub_config(n_embd=96, n_head=4, n_layer=3, n_inner=200,
                                      la_layers=(0,), swa_layers=(2,), window_size=9,
                                      mlp_bias=True)),
    # Dh 64 like the released models (H = 2), two LA heads of 64.
    TinyCase("mixed-Dh64", hub_config(n_embd=128, n_head=2, n_layer=3, la_layers=(1,),
                                      swa_layers=(2,), window_size=32, fixed_decay=True)),
    # attn-360m-like: every layer MHA, rotary on half the head, vocab pad 16.
    TinyCase("attn-Dh16", hub_config(n_embd=64, n_head=4, n_layer=2, attention_only=True,
                                     rotary_emb_fraction=0.5, pad_vocab_size_multiple=16)),
)
CASES_BY_NAME = {c.name: c for c in TINY_CASES}


def lightning_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
  """The Lightning layout: `model.` prefix, a metrics counter and unused buffers."""
  sd = {f"model.{k}": v for k, v in model.state_dict().items()}
  sd["train_metrics.num-tokens.count"] = torch.tensor(12345.0)
  cfg = model.config
  sd["model.transformer.decay.decay"] = torch.log1p(-2.0 ** (-5.0 - torch.arange(cfg.n_head)))
  for i, kind in enumerate(cfg.layer_kinds):
    if kind in ("sliding_window", "mha") and cfg.rotary_dim:
      inv = cfg.rotary_base ** (-torch.arange(0, cfg.rotary_dim, 2).float() / cfg.rotary_dim)
      sd[f"model.transformer.layers.{i}.mixer.rotary_emb.inv_freq"] = inv
  return sd


def write_hub_dir(path: str | os.PathLike, config: dict, model: torch.nn.Module,
                  fmt: WeightFormat = "bin", *, dtype: torch.dtype | None = None) -> str:
  """Writes `config.json` plus the weight file of `fmt`; returns the weight file path."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  if fmt == "bin_lightning":
    sd = lightning_state_dict(model)
  else:
    sd = dict(model.state_dict())
  if dtype is not None:
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
  if fmt == "safetensors":
    from safetensors.torch import save_file

    sd.pop("transformer.embeddings.word_embeddings.weight")
    out = os.path.join(path, "model.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, out, metadata={"format": "pt"})
    return out
  out = os.path.join(path, "pytorch_model.bin")
  torch.save(sd, out)
  return out


def write_random_preset(path: str | os.PathLike, config: dict, *, seed: int = 0,
                        dtype: torch.dtype = torch.float32) -> str:
  """A full-size random checkpoint (e.g. the based-360m layout) without building a model.

  Tensors are generated one by one with the reference's parameter shapes, so only the
  checkpoint itself is held in memory.
  """
  with torch.device("meta"):
    meta = ref_model.BasedLMRef(ref_model.RefConfig.from_hub_dict(config))
  gen = torch.Generator().manual_seed(seed)
  sd = {}
  for name, p in meta.state_dict().items():
    if name == "lm_head.weight":
      continue
    t = torch.empty(p.shape, dtype=dtype)
    scale = 1.0 if p.ndim == 1 else 1 / math.sqrt(p.shape[-1])
    sd[name] = t.normal_(0.0, scale, generator=gen)
  sd["lm_head.weight"] = sd["transformer.embeddings.word_embeddings.weight"]
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  out = os.path.join(path, "pytorch_model.bin")
  torch.save(sd, out)
  return out


def based_360m_hub_config() -> dict:
  """based-360m as published: d 1024, 27 layers, LA at 1,6,..; SWA at 2,7,.. (window 128)."""
  return hub_config(n_embd=1024, n_head=16, n_layer=27, vocab_size=50257, n_inner=2048,
                    la_layers=(1, 6, 11, 16, 21), swa_layers=(2, 7, 12, 17, 22),
                    window_size=128)
