"""Optimizer: optax AdamW with linear warmup then cosine decay, global-norm clipping.

Weight decay applies to matrices (kernels, embeddings, conv filters) only; norms and biases
(rank-1 params) are not decayed.
"""

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """lr: peak learning rate; warmup_steps of linear warmup from 0, then cosine to
  lr * final_lr_ratio at total_steps. clip_norm <= 0 disables clipping."""

  lr: float = 3e-3
  warmup_steps: int = 100
  total_steps: int = 1000
  final_lr_ratio: float = 0.1
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0

  def __post_init__(self):
    if not self.lr > 0:
      raise ValueError(f"OptimConfig: lr must be > 0; got {self.lr}")
    if self.total_steps < 1:
      raise ValueError(f"OptimConfig: total_steps must be >= 1; got {self.total_steps}")
    if not 0 <= self.warmup_steps < self.total_steps:
      raise ValueError(f"OptimConfig: warmup_steps must be in [0, total_steps={self.total_steps});"
                       f" got {self.warmup_steps}")
    if not 0 <= self.final_lr_ratio <= 1:
      raise ValueError(f"OptimConfig: final_lr_ratio must be in [0, 1]; got {self.final_lr_ratio}")
    if self.weight_decay < 0:
      raise ValueError(f"OptimConfig: weight_decay must be >= 0; got {self.weight_decay}")


def lr_schedule(cfg: OptimConfig) -> optax.Schedule:
  """0 -> lr linearly over warmup_steps, then cosine down to lr * final_lr_ratio."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=cfg.total_steps, end_value=cfg.lr * cfg.final_lr_ratio)


def _decay_mask(params):
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """Clip by global norm (if clip_norm > 0), then AdamW with the warmup/cosine schedule."""
  adamw = optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=_decay_mask)
  if cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
  return adamw
