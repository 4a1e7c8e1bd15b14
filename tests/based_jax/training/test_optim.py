"""AdamW + warmup/cosine: the schedule against its formula, decay only on matrices, errors."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from based_jax.training import optim


def test_schedule_is_linear_warmup_then_cosine():
  cfg = optim.OptimConfig(lr=2e-3, warmup_steps=10, total_steps=50, final_lr_ratio=0.1)
  sched = optim.lr_schedule(cfg)
  end = cfg.lr * cfg.final_lr_ratio
  for step in range(0, 60):
    if step <= 10:
      want = cfg.lr * step / 10
    elif step <= 50:
      t = (step - 10) / 40
      want = end + (cfg.lr - end) * 0.5 * (1 + math.cos(math.pi * t))
    else:
      want = end
    assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-9), step


def test_weight_decay_applies_to_matrices_only():
  cfg = optim.OptimConfig(lr=1e-2, warmup_steps=0, total_steps=10, weight_decay=0.5,
                          clip_norm=0.0)
  opt = optim.make_optimizer(cfg)
  rng = np.random.default_rng()
  params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
            "norm": jnp.asarray(rng.standard_normal(4), jnp.float32)}
  zeros = {k: jnp.zeros_like(v) for k, v in params.items()}
  updates, _ = opt.update(zeros, opt.init(params), params)
  # zero gradient: Adam's step is 0, so the update is the decoupled decay -lr * wd * p (lr at 0)
  np.testing.assert_allclose(np.asarray(updates["w"]), -1e-2 * 0.5 * np.asarray(params["w"]),
                             rtol=1e-6)
  assert np.all(np.asarray(updates["norm"]) == 0)


def test_clipping_bounds_the_update_input():
  cfg = optim.OptimConfig(lr=1.0, warmup_steps=0, total_steps=10, weight_decay=0.0, clip_norm=1.0,
                          b1=0.0, b2=0.0, eps=0.0)
  opt = optim.make_optimizer(cfg)
  params = {"w": jnp.ones((2, 2))}
  big = {"w": jnp.full((2, 2), 100.0)}
  updates, _ = opt.update(big, opt.init(params), params)
  # with b1 = b2 = 0 Adam's update is sign(g) * lr whatever the clipping; finite and bounded
  np.testing.assert_allclose(np.asarray(updates["w"]), -1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0.0), "lr must be > 0"),
    (dict(total_steps=0), "total_steps"),
    (dict(warmup_steps=20, total_steps=10), "warmup_steps"),
    (dict(final_lr_ratio=2.0), "final_lr_ratio"),
    (dict(weight_decay=-1.0), "weight_decay"),
])
def test_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.OptimConfig(**kwargs)
