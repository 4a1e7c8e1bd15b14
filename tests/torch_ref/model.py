"""Compact PyTorch Based / attention LM: parallel forward and greedy recurrent generation.

Shape legend: B batch, L length, H heads, F = 16 feature dim, E = 273 Taylor features,
D head (value) dim, d model width, C conv channels (d_inner), Vp padded vocab.

Built from the hub `config.json` dict (GPT2Config style, see `RefConfig.from_hub_dict`).
Everything is computed in the parameter dtype (use `.double()` for a float64 oracle); unlike
upstream, the sliding-window attention is NOT run in bf16.
"""

import dataclasses
import math

import torch
from torch import nn
import torch.nn.functional as F

FEATURE_DIM = 16
CONV_KERNEL = 3


def _ceil_to(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class RefConfig:
  """What the reference needs from a hub config.json, with upstream defaults applied."""

  d_model: int
  n_layer: int
  n_head: int
  vocab_size_padded: int
  mlp_hidden: int
  mlp_bias: tuple[bool, bool]  # fc1, fc2
  norm_eps: float
  layer_kinds: tuple[str, ...]  # "conv" | "linear_attention" | "sliding_window" | "mha"
  conv_d_inner: int
  conv_use_bias: bool
  conv_bias: bool
  la_heads: int
  la_head_dim: int
  la_eps: float
  la_output_norm: bool  # variant B (g_norm, no denominator)
  window_size: int
  rotary_fraction: float
  rotary_base: float

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_head

  @property
  def rotary_dim(self) -> int:
    return int(self.rotary_fraction * self.head_dim)

  @classmethod
  def from_hub_dict(cls, cfg: dict, *, la_output_norm: bool = False,
                    conv_bias: bool = False) -> "RefConfig":
    """Parses a hub config dict. The g_norm variant and the conv bias are not in config.json
    (upstream they depend on the code base and `use_cuda`), so they are passed explicitly."""
    d = cfg["n_embd"]
    n_layer = cfg["n_layer"]
    vocab_padded = _ceil_to(cfg["vocab_size"], cfg.get("pad_vocab_size_multiple", 1))
    n_inner = cfg.get("n_inner")
    hidden = _ceil_to(n_inner if n_inner is not None else int(8 * d / 3), 256)
    mixer, alt, alt2 = cfg.get("mixer"), cfg.get("alt_mixer"), cfg.get("alt_mixer_2")
    alt_layers = set(cfg.get("alt_mixer_layers") or ())
    alt2_layers = set(cfg.get("alt_mixer_2_layers") or ())
    kinds = []
    for i in range(n_layer):
      if i in alt2_layers:
        spec, kind = alt2, "sliding_window"
      elif i in alt_layers:
        spec, kind = alt, "linear_attention"
      else:
        spec, kind = mixer, "conv"
      kinds.append(kind if spec is not None else "mha")
    mixer, alt, alt2 = mixer or {}, alt or {}, alt2 or {}
    la_heads = alt.get("num_heads", 16)
    return cls(
        d_model=d,
        n_layer=n_layer,
        n_head=cfg["n_head"],
        vocab_size_padded=vocab_padded,
        mlp_hidden=hidden,
        mlp_bias=(cfg.get("mlp_fc1_bias", True), cfg.get("mlp_fc2_bias", True)),  # upstream getattr
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        layer_kinds=tuple(kinds),
        conv_d_inner=mixer.get("expand_proj", 4) * d // 2,
        conv_use_bias=mixer.get("use_bias", True),
        conv_bias=conv_bias,
        la_heads=la_heads,
        la_head_dim=alt.get("head_dim") or d // la_heads,
        la_eps=alt.get("eps", 1e-12),
        la_output_norm=la_output_norm,
        window_size=alt2.get("window_size", 0),
        rotary_fraction=cfg.get("rotary_emb_fraction", 0.0),
        rotary_base=cfg.get("rotary_emb_base", 10000.0),
    )


class RMSNorm(nn.Module):

  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(dim))

  def forward(self, x):  # [..., dim]
    rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
    return x * rms * self.weight


class SwiGLU(nn.Module):
  """fc1 output = [value | gate]; y = fc2(value * silu(gate))."""

  def __init__(self, d: int, hidden: int, bias: tuple[bool, bool] = (False, False)):
    super().__init__()
    self.fc1 = nn.Linear(d, 2 * hidden, bias=bias[0])
    self.fc2 = nn.Linear(hidden, d, bias=bias[1])

  def forward(self, x):  # [B, L, d]
    value, gate = self.fc1(x).chunk(2, dim=-1)  # [B, L, hidden] each
    return self.fc2(value * F.silu(gate))


class _DepthwiseConv(nn.Module):
  """Holds `conv` so that the weight key is `mixer.conv.conv.weight` as upstream."""

  def __init__(self, channels: int, bias: bool):
    super().__init__()
    self.conv = nn.Conv1d(channels, channels, CONV_KERNEL, groups=channels,
                          padding=CONV_KERNEL - 1, bias=bias)


class BaseConv(nn.Module):
  """u = in_proj(x) = [u1 | u2]; y = out_proj(silu(causal_conv(u1)) * u2).

  State: the last K values of u1, [B, C, K], oldest first.
  """

  def __init__(self, cfg: RefConfig):
    super().__init__()
    c = cfg.conv_d_inner
    self.d_inner = c
    self.in_proj = nn.Linear(cfg.d_model, 2 * c, bias=cfg.conv_use_bias)
    self.conv = _DepthwiseConv(c, cfg.conv_bias)
    self.out_proj = nn.Linear(c, cfg.d_model, bias=cfg.conv_use_bias)

  def _gate_out(self, conv_out, u2):
    return self.out_proj(F.silu(conv_out) * u2)

  def forward(self, x):  # [B, L, d]
    u1, u2 = self.in_proj(x).chunk(2, dim=-1)  # [B, L, C] each
    length = x.shape[1]
    c = self.conv.conv(u1.transpose(1, 2))[..., :length].transpose(1, 2)  # [B, L, C]
    return self._gate_out(c, u2)

  def prefill(self, x):
    u1 = self.in_proj(x).chunk(2, dim=-1)[0].transpose(1, 2)  # [B, C, L]
    state = F.pad(u1, (CONV_KERNEL, 0))[..., -CONV_KERNEL:]  # [B, C, K]
    return self.forward(x), state

  def step(self, x, state, pos):  # x: [B, 1, d]
    del pos
    u1, u2 = self.in_proj(x).chunk(2, dim=-1)  # [B, 1, C] each
    state = torch.cat([state[..., 1:], u1.transpose(1, 2)], dim=-1)  # [B, C, K]
    weight = self.conv.conv.weight[:, 0, :]  # [C, K]
    c = (state * weight).sum(-1)  # [B, C]
    if self.conv.conv.bias is not None:
      c = c + self.conv.conv.bias
    return self._gate_out(c[:, None, :], u2), state


def taylor_features(x):
  """phi(x) = [1, x/2, vec(x x^T)/(4 sqrt 2)], i-major. [..., 16] -> [..., 273]."""
  quad = (x[..., :, None] * x[..., None, :]).flatten(-2)  # [..., 256]
  return torch.cat([torch.ones_like(x[..., :1]), x / 2, quad / (4 * math.sqrt(2))], dim=-1)


class LinearAttention(nn.Module):
  """Taylor linear attention. Variant A: y = num / (den + eps). Variant B: RMSNorm_D(num) * g.

  State: kv [B, H, E, D] = sum phi(k) v^T and k_state [B, H, E] = sum phi(k).
  """

  def __init__(self, cfg: RefConfig):
    super().__init__()
    self.h, self.dh, self.eps = cfg.la_heads, cfg.la_head_dim, cfg.la_eps
    self.proj_q = nn.Linear(cfg.d_model, self.h * FEATURE_DIM, bias=False)
    self.proj_k = nn.Linear(cfg.d_model, self.h * FEATURE_DIM, bias=False)
    self.proj_v = nn.Linear(cfg.d_model, self.h * self.dh, bias=False)
    self.out_proj = nn.Linear(self.h * self.dh, cfg.d_model, bias=False)
    self.g_norm = RMSNorm(self.dh, 1e-5) if cfg.la_output_norm else None

  def _features(self, x):  # [B, L, d]
    b, length, _ = x.shape
    q = self.proj_q(x).view(b, length, self.h, FEATURE_DIM)  # [B, L, H, F]
    k = self.proj_k(x).view(b, length, self.h, FEATURE_DIM)  # [B, L, H, F]
    v = self.proj_v(x).view(b, length, self.h, self.dh)  # [B, L, H, D]
    return taylor_features(q), taylor_features(k), v  # [B, L, H, E] x2, [B, L, H, D]

  def _finish(self, num, den):  # num: [B, L, H, D], den: [B, L, H]
    y = self.g_norm(num) if self.g_norm is not None else num / (den[..., None] + self.eps)
    return self.out_proj(y.flatten(-2))  # [B, L, d]

  def forward(self, x):
    fq, fk, v = self._features(x)
    length = x.shape[1]
    scores = torch.einsum("blhe,bmhe->bhlm", fq, fk)  # [B, H, L, L]
    causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    scores = scores.masked_fill(~causal, 0.0)
    num = torch.einsum("bhlm,bmhd->blhd", scores, v)  # [B, L, H, D]
    return self._finish(num, scores.sum(-1).transpose(1, 2))

  def prefill(self, x):
    _, fk, v = self._features(x)
    kv = torch.einsum("blhe,blhd->bhed", fk, v)  # [B, H, E, D]
    return self.forward(x), (kv, fk.sum(1))  # k_state [B, H, E]

  def step(self, x, state, pos):  # x: [B, 1, d]
    del pos
    fq, fk, v = self._features(x)
    kv = state[0] + torch.einsum("bhe,bhd->bhed", fk[:, 0], v[:, 0])  # [B, H, E, D]
    k_state = state[1] + fk[:, 0]  # [B, H, E]
    num = torch.einsum("bhe,bhed->bhd", fq[:, 0], kv)  # [B, H, D]
    den = torch.einsum("bhe,bhe->bh", fq[:, 0], k_state)  # [B, H]
    return self._finish(num[:, None], den[:, None]), (kv, k_state)


def apply_rope(x, positions, rotary_dim: int, base: float):
  """NeoX (half-split) rotary on the first rotary_dim dims. x: [B, L, H, D], positions: [L]."""
  if rotary_dim == 0:
    return x
  half = rotary_dim // 2
  inv_freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
  theta = positions.to(torch.float64)[:, None] * inv_freq  # [L, rd/2]
  cos = theta.cos().to(x.dtype)[None, :, None, :]  # [1, L, 1, rd/2]
  sin = theta.sin().to(x.dtype)[None, :, None, :]
  x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


class Attention(nn.Module):
  """Causal softmax attention with NeoX RoPE; `window` w > 0 keeps keys i-w..i (SWA).

  State: post-RoPE K and V caches, [B, T, H, D] each (kept whole; only the last w+1 are read).
  """

  def __init__(self, cfg: RefConfig, window: int):
    super().__init__()
    self.h, self.dh, self.window = cfg.n_head, cfg.head_dim, window
    self.rotary_dim, self.base = cfg.rotary_dim, cfg.rotary_base
    self.Wqkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
    self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

  def _qkv(self, x, positions):  # x: [B, L, d]
    b, length, _ = x.shape
    q, k, v = self.Wqkv(x).view(b, length, 3, self.h, self.dh).unbind(2)  # [B, L, H, D] each
    q = apply_rope(q, positions, self.rotary_dim, self.base)
    k = apply_rope(k, positions, self.rotary_dim, self.base)
    return q, k, v

  def _attend(self, q, k, v, q_pos, k_pos):  # q: [B, L, H, D], k, v: [B, T, H, D]
    scores = torch.einsum("blhd,bthd->bhlt", q, k) / math.sqrt(self.dh)  # [B, H, L, T]
    rel = q_pos[:, None] - k_pos[None, :]  # [L, T]
    allowed = rel >= 0
    if self.window > 0:
      allowed &= rel <= self.window
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = torch.einsum("bhlt,bthd->blhd", scores.softmax(-1), v)  # [B, L, H, D]
    return self.out_proj(o.flatten(-2))

  def prefill(self, x):
    pos = torch.arange(x.shape[1], device=x.device)
    q, k, v = self._qkv(x, pos)
    return self._attend(q, k, v, pos, pos), (k, v)

  def forward(self, x):
    return self.prefill(x)[0]

  def step(self, x, state, pos):  # x: [B, 1, d]
    q, k, v = self._qkv(x, torch.tensor([pos], device=x.device))
    k, v = torch.cat([state[0], k], 1), torch.cat([state[1], v], 1)  # [B, T+1, H, D]
    k_pos = torch.arange(k.shape[1], device=x.device)
    return self._attend(q, k, v, torch.tensor([pos], device=x.device), k_pos), (k, v)


def _make_mixer(cfg: RefConfig, kind: str) -> nn.Module:
  if kind == "conv":
    return BaseConv(cfg)
  if kind == "linear_attention":
    return LinearAttention(cfg)
  if kind == "sliding_window":
    return Attention(cfg, window=cfg.window_size // 2)
  return Attention(cfg, window=0)


class Block(nn.Module):

  def __init__(self, cfg: RefConfig, kind: str):
    super().__init__()
    self.mixer = _make_mixer(cfg, kind)
    self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden, cfg.mlp_bias)

  def _run(self, residual, mix):  # residual: [B, L, d]
    y, state = mix(self.norm1(residual))
    residual = residual + y
    return residual + self.mlp(self.norm2(residual)), state


class _Embeddings(nn.Module):

  def __init__(self, cfg: RefConfig):
    super().__init__()
    self.word_embeddings = nn.Embedding(cfg.vocab_size_padded, cfg.d_model)


class _Backbone(nn.Module):

  def __init__(self, cfg: RefConfig):
    super().__init__()
    self.embeddings = _Embeddings(cfg)
    self.layers = nn.ModuleList(Block(cfg, kind) for kind in cfg.layer_kinds)
    self.ln_f = RMSNorm(cfg.d_model, cfg.norm_eps)


class BasedLMRef(nn.Module):
  """Pre-norm LM with a tied head: `transformer.*` and `lm_head.weight` as upstream."""

  def __init__(self, cfg: RefConfig):
    super().__init__()
    self.config = cfg
    self.transformer = _Backbone(cfg)
    self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size_padded, bias=False)
    self.lm_head.weight = self.transformer.embeddings.word_embeddings.weight

  def _run(self, input_ids, per_layer):
    """per_layer(i, block) -> mix function; returns logits [B, L, Vp] and the layer states."""
    residual = self.transformer.embeddings.word_embeddings(input_ids)  # [B, L, d]
    states = []
    for i, block in enumerate(self.transformer.layers):
      residual, state = block._run(residual, per_layer(i, block))
      states.append(state)
    return self.lm_head(self.transformer.ln_f(residual)), states

  def forward(self, input_ids):  # [B, L] int64 -> [B, L, Vp]
    return self._run(input_ids, lambda i, blk: lambda x: (blk.mixer(x), None))[0]

  def prefill(self, input_ids):
    return self._run(input_ids, lambda i, blk: blk.mixer.prefill)

  def step(self, token, states, pos):  # token: [B, 1] at absolute position pos
    return self._run(token, lambda i, blk: lambda x: blk.mixer.step(x, states[i], pos))

  @torch.no_grad()
  def generate_greedy(self, input_ids, num_new: int):
    """Prefill, then one-token recurrent steps; argmax over all Vp columns. -> [B, num_new]."""
    logits, states = self.prefill(input_ids)
    tokens = [logits[:, -1].argmax(-1)]
    pos = input_ids.shape[1]
    for _ in range(num_new - 1):
      logits, states = self.step(tokens[-1][:, None], states, pos)
      tokens.append(logits[:, -1].argmax(-1))
      pos += 1
    return torch.stack(tokens, dim=1)


def build_model(hub_config: dict, *, la_output_norm: bool = False, conv_bias: bool = False,
                seed: int | None = None) -> BasedLMRef:
  """Builds the reference from a hub config dict, with random weights (see `randomize`)."""
  model = BasedLMRef(RefConfig.from_hub_dict(hub_config, la_output_norm=la_output_norm,
                                             conv_bias=conv_bias))
  if seed is not None:
    randomize(model, seed)
  return model.eval()


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
  """Random weights with O(1) activations so that logits are spread out (argmax is stable).

  Matrices ~ N(0, 1/fan_in); norm weights ~ 1 + U(-0.25, 0.25); biases and conv ~ N(0, 0.1-0.5).
  """
  gen = torch.Generator().manual_seed(seed)
  for name, p in model.named_parameters():
    if name.endswith("word_embeddings.weight"):
      p.copy_(torch.randn(p.shape, generator=gen))
    elif "norm" in name or "ln_f" in name:
      p.copy_(1 + 0.5 * (torch.rand(p.shape, generator=gen) - 0.5))
    elif name.endswith("conv.conv.weight"):
      p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    elif p.ndim == 1:
      p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    else:
      p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
