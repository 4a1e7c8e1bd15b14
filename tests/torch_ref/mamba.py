"""Compact PyTorch Mamba LM (upstream key names), with a sequential scan and a recurrent step.

Written from the spec (based_model.md sections 2.4, 3.8, 4.2), independent of based-jax:
    h0 = E[ids]; per layer: residual += Mamba(RMSNorm(residual)); logits = RMSNorm_f(res) E^T
    Mamba: [x | z] = in_proj(h); x = silu(conv1d_K(x)[:L] + b); [dt | B | C] = x_proj(x);
    delta = softplus(dt_proj(dt)); A = -exp(A_log);
    s_t = exp(delta_t A) s_{t-1} + delta_t B_t x_t;  y_t = C_t . s_t + D x_t;
    out = out_proj(y * silu(z))
Keys: backbone.embedding.weight, backbone.layers.{i}.norm.weight,
backbone.layers.{i}.mixer.{in_proj,conv1d,x_proj,dt_proj,out_proj}.*, mixer.A_log, mixer.D,
backbone.norm_f.weight, lm_head.weight (tied).

Everything runs in the parameter dtype (use `.double()` for a float64 oracle).
Shape legend: B batch, L length, C d_inner, N d_state, R dt_rank, d model width.
"""

import json
import math
import os

import torch
from torch import nn
import torch.nn.functional as F


def hub_config(*, d_model: int = 32, n_layer: int = 2, vocab_size: int = 97,
               pad_vocab_size_multiple: int = 16, d_state: int = 16, d_conv: int = 4,
               expand: int = 2, dt_rank="auto", fused_add_norm: bool = True) -> dict:
  """A config.json dict in the upstream MambaConfig format (with its GPT-style leftovers)."""
  ssm_cfg = {}
  if (d_state, d_conv, expand, dt_rank) != (16, 4, 2, "auto"):
    ssm_cfg = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "dt_rank": dt_rank}
  return {
      "d_model": d_model, "n_layer": n_layer, "vocab_size": vocab_size, "ssm_cfg": ssm_cfg,
      "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": fused_add_norm,
      "pad_vocab_size_multiple": pad_vocab_size_multiple, "reorder_and_upcast_attn": False,
      "scale_attn_by_inverse_layer_idx": False, "n_positions": 2048, "n_embd": 1024,
      "n_head": 16, "use_flash_attn": False, "fused_dropout_add_ln": False, "fused_mlp": False,
      "fused_bias_fc": False, "use_fast_path": True,
  }


def mamba_360m_hub_config() -> dict:
  """hazyresearch/mamba-360m as described by based_model.md 1.3 (vocab 50277, pad 16)."""
  return hub_config(d_model=1024, n_layer=46, vocab_size=50277, pad_vocab_size_multiple=16)


class RMSNorm(nn.Module):

  def __init__(self, dim: int, eps: float = 1e-5):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(dim))

  def forward(self, x):  # [..., dim]
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mamba(nn.Module):
  """One Mamba mixer. State: conv [B, C, K] (last K inputs x), ssm [B, C, N]."""

  def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, dt_rank):
    super().__init__()
    c = expand * d_model
    self.d_inner, self.d_state, self.d_conv = c, d_state, d_conv
    self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
    self.in_proj = nn.Linear(d_model, 2 * c, bias=False)
    self.conv1d = nn.Conv1d(c, c, d_conv, groups=c, padding=d_conv - 1, bias=True)
    self.x_proj = nn.Linear(c, self.dt_rank + 2 * d_state, bias=False)
    self.dt_proj = nn.Linear(self.dt_rank, c, bias=True)
    self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(c, 1))  # [C, N]
    self.D = nn.Parameter(torch.ones(c))
    self.out_proj = nn.Linear(c, d_model, bias=False)

  def _ssm_inputs(self, x):  # x: [B, L, C] after conv + silu
    dbc = self.x_proj(x)  # [B, L, R + 2N]
    dt, bm, cm = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
    delta = F.softplus(self.dt_proj(dt))  # [B, L, C]
    return delta, bm, cm

  def _scan(self, x, delta, bm, cm, s):
    """Sequential scan from state s [B, C, N]. Returns y [B, L, C] and the last state."""
    a = -torch.exp(self.A_log)  # [C, N]
    ys = []
    for t in range(x.shape[1]):
      da = torch.exp(delta[:, t, :, None] * a)  # [B, C, N]
      s = da * s + (delta[:, t] * x[:, t])[:, :, None] * bm[:, t, None, :]  # [B, C, N]
      ys.append((s * cm[:, t, None, :]).sum(-1) + self.D * x[:, t])  # [B, C]
    return torch.stack(ys, dim=1), s

  def prefill(self, h):  # h: [B, L, d]
    length = h.shape[1]
    x, z = self.in_proj(h).chunk(2, dim=-1)  # [B, L, C] each
    xt = x.transpose(1, 2)  # [B, C, L]
    conv_state = F.pad(xt, (self.d_conv, 0))[..., -self.d_conv:]  # [B, C, K]
    x = F.silu(self.conv1d(xt)[..., :length]).transpose(1, 2)  # [B, L, C]
    delta, bm, cm = self._ssm_inputs(x)
    s0 = torch.zeros(h.shape[0], self.d_inner, self.d_state, dtype=h.dtype)
    y, s = self._scan(x, delta, bm, cm, s0)
    return self.out_proj(y * F.silu(z)), (conv_state, s)

  def forward(self, h):
    return self.prefill(h)[0]

  def step(self, h, state):  # h: [B, 1, d]
    conv_state, s = state
    x, z = self.in_proj(h[:, 0]).chunk(2, dim=-1)  # [B, C] each
    conv_state = torch.cat([conv_state[..., 1:], x[..., None]], dim=-1)  # [B, C, K]
    x = (conv_state * self.conv1d.weight[:, 0, :]).sum(-1)  # [B, C]
    if self.conv1d.bias is not None:
      x = x + self.conv1d.bias
    x = F.silu(x)[:, None]  # [B, 1, C]
    delta, bm, cm = self._ssm_inputs(x)
    y, s = self._scan(x, delta, bm, cm, s)
    return self.out_proj(y * F.silu(z[:, None])), (conv_state, s)


class Block(nn.Module):

  def __init__(self, cfg: dict):
    super().__init__()
    ssm = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", **cfg["ssm_cfg"]}
    self.norm = RMSNorm(cfg["d_model"])
    self.mixer = Mamba(cfg["d_model"], ssm["d_state"], ssm["d_conv"], ssm["expand"],
                       ssm["dt_rank"])


class Backbone(nn.Module):

  def __init__(self, cfg: dict, vocab_padded: int):
    super().__init__()
    self.embedding = nn.Embedding(vocab_padded, cfg["d_model"])
    self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
    self.norm_f = RMSNorm(cfg["d_model"])


class MambaLMRef(nn.Module):
  """Tied-head Mamba LM with upstream key names; forward / prefill / step / generate_greedy."""

  def __init__(self, cfg: dict):
    super().__init__()
    m = cfg["pad_vocab_size_multiple"]
    self.vocab_padded = -(-cfg["vocab_size"] // m) * m
    self.backbone = Backbone(cfg, self.vocab_padded)
    self.lm_head = nn.Linear(cfg["d_model"], self.vocab_padded, bias=False)
    self.lm_head.weight = self.backbone.embedding.weight

  def _run(self, input_ids, mix):
    residual = self.backbone.embedding(input_ids)  # [B, L, d]
    states = []
    for i, layer in enumerate(self.backbone.layers):
      y, state = mix(i, layer.mixer, layer.norm(residual))
      residual = residual + y
      states.append(state)
    return self.lm_head(self.backbone.norm_f(residual)), states

  def forward(self, input_ids):  # [B, L] int64 -> [B, L, Vp]
    return self._run(input_ids, lambda i, mixer, h: (mixer(h), None))[0]

  def prefill(self, input_ids):
    return self._run(input_ids, lambda i, mixer, h: mixer.prefill(h))

  def step(self, token, states):  # token: [B, 1]
    return self._run(token, lambda i, mixer, h: mixer.step(h, states[i]))

  @torch.no_grad()
  def generate_greedy(self, input_ids, num_new: int):
    """Prefill, then one-token recurrent steps; argmax over all Vp columns. -> [B, num_new]."""
    logits, states = self.prefill(input_ids)
    tokens = [logits[:, -1].argmax(-1)]
    for _ in range(num_new - 1):
      logits, states = self.step(tokens[-1][:, None], states)
      tokens.append(logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
  """Random weights with O(1) activations (argmax is stable); A_log, D, dt bias kept sensible.

  Matrices ~ N(0, 1/fan_in); embedding ~ N(0, 1); norms ~ 1 + U(-0.25, 0.25);
  A_log = log(U(1, 16)); D ~ 1 + N(0, 0.1); dt_proj.bias ~ U(-4, -1) (delta ~ 0.02-0.3);
  conv ~ N(0, 0.5); conv bias ~ N(0, 0.1).
  """
  gen = torch.Generator().manual_seed(seed)

  def rand(shape):
    return torch.rand(shape, generator=gen)

  def randn(shape):
    return torch.randn(shape, generator=gen)

  for name, p in model.named_parameters():
    if name.endswith("embedding.weight"):
      p.copy_(randn(p.shape))
    elif "norm" in name:
      p.copy_(1 + 0.5 * (rand(p.shape) - 0.5))
    elif name.endswith("A_log"):
      p.copy_(torch.log(1 + 15 * rand(p.shape)))
    elif name.endswith(".D"):
      p.copy_(1 + 0.1 * randn(p.shape))
    elif name.endswith("dt_proj.bias"):
      p.copy_(-1 - 3 * rand(p.shape))
    elif name.endswith("conv1d.weight"):
      p.copy_(0.5 * randn(p.shape))
    elif p.ndim == 1:
      p.copy_(0.1 * randn(p.shape))
    else:
      p.copy_(randn(p.shape) / math.sqrt(p.shape[-1]))


def build_model(config: dict, seed: int | None = None) -> MambaLMRef:
  model = MambaLMRef(config)
  if seed is not None:
    randomize(model, seed)
  return model.eval()


def write_hub_dir(path, config: dict, model: MambaLMRef, fmt: str = "bin", *,
                  dtype: torch.dtype | None = None) -> str:
  """config.json plus `pytorch_model.bin` (fmt "bin": tied head under both names;
  "bin_lightning": `model.` prefix and a metrics counter) or `model.safetensors` (lm_head
  dropped, embedding only). Returns the weight file path."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  sd = dict(model.state_dict())
  if dtype is not None:
    sd = {k: v.to(dtype) for k, v in sd.items()}
  if fmt == "safetensors":
    from safetensors.torch import save_file

    sd.pop("lm_head.weight")
    out = os.path.join(path, "model.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, out, metadata={"format": "pt"})
    return out
  if fmt == "bin_lightning":
    sd = {f"model.{k}": v for k, v in sd.items()}
    sd["train_metrics.num-tokens.count"] = torch.tensor(7.0)
  elif fmt != "bin":
    raise ValueError(f"fmt must be 'bin', 'bin_lightning' or 'safetensors'; got {fmt!r}")
  out = os.path.join(path, "pytorch_model.bin")
  torch.save(sd, out)
  return out
