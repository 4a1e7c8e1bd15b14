"""Train step: loss vs float64 NumPy, accumulation == one big batch, fp32 master weights, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from based_jax import mqar
from based_jax.config import BasedConfig
from based_jax.model import BasedLM
from based_jax.training import data, loop, optim


def _config():
  return BasedConfig.tiny(n_embd=32, n_head=2, n_layer=3, vocab_size=37, window_size=6,
                          la_layers=(1,), swa_layers=(2,))


def _batch(rng, cfg, b, length):
  return {"input_ids": rng.integers(0, cfg.vocab_size, (b, length)).astype(np.int32),
          "targets": rng.integers(0, cfg.vocab_size, (b, length)).astype(np.int32),
          "weights": (rng.random((b, length)) < 0.6).astype(np.float32)}


def test_loss_matches_float64_numpy_cross_entropy():
  rng = np.random.default_rng()
  cfg = _config()
  model = BasedLM(cfg, la_impl="chunked")
  batch = _batch(rng, cfg, 2, 13)
  params = model.init(jax.random.PRNGKey(0), batch["input_ids"])["params"]
  loss, (weight, correct) = loop.loss_and_metrics(model, params, batch)
  logits = np.asarray(model.apply({"params": params}, batch["input_ids"]), np.float64)
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  w = batch["weights"]
  assert logits.shape[-1] == cfg.vocab_size_padded > cfg.vocab_size  # softmax over all Vp
  np.testing.assert_allclose(float(loss), (nll * w).sum(), rtol=1e-5)
  assert float(weight) == w.sum()
  assert float(correct) == (w * (logits.argmax(-1) == batch["targets"])).sum()


def _one_step(cfg, params, batch, accum, dtype=jnp.float32, opt=None):
  model = BasedLM(cfg, dtype=dtype, la_impl="chunked")
  opt = opt or optim.make_optimizer(optim.OptimConfig(lr=1e-2, warmup_steps=0, total_steps=5))
  state = loop.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=opt.init(params), rng=jax.random.PRNGKey(0))
  split = {k: jnp.asarray(v.reshape(accum, -1, *v.shape[1:])) for k, v in batch.items()}
  return loop.make_train_step(model, opt)(state, split)


def test_grad_accumulation_equals_one_batch():
  rng = np.random.default_rng()
  cfg = _config()
  batch = _batch(rng, cfg, 4, 19)
  params = BasedLM(cfg).init(jax.random.PRNGKey(1), batch["input_ids"][:1])["params"]
  copy = lambda: jax.tree_util.tree_map(jnp.array, params)
  # SGD with lr 1 makes (params - new params) the step's gradient, compared leaf by leaf.
  sgd = optax.sgd(1.0)
  s1, m1 = _one_step(cfg, copy(), batch, 1, opt=sgd)
  s4, m4 = _one_step(cfg, copy(), batch, 4, opt=sgd)
  np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
  for p, a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(s1.params),
                     jax.tree_util.tree_leaves(s4.params)):
    g1, g4 = np.asarray(p) - np.asarray(a), np.asarray(p) - np.asarray(b)
    assert np.abs(g4 - g1).max() <= 1e-4 * max(np.abs(g1).max(), 1e-12)
  assert int(s4.step) == 1


def test_bf16_compute_keeps_fp32_master_weights():
  rng = np.random.default_rng()
  cfg = _config()
  batch = _batch(rng, cfg, 2, 16)
  params = BasedLM(cfg).init(jax.random.PRNGKey(2), batch["input_ids"][:1])["params"]
  s16, m16 = _one_step(cfg, jax.tree_util.tree_map(jnp.array, params), batch, 1, jnp.bfloat16)
  _, m32 = _one_step(cfg, jax.tree_util.tree_map(jnp.array, params), batch, 1, jnp.float32)
  for leaf in jax.tree_util.tree_leaves(s16.params) + jax.tree_util.tree_leaves(s16.opt_state):
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert abs(float(m16["loss"]) - float(m32["loss"])) <= 0.02 * float(m32["loss"])
  # the bf16 run really computed in bf16 (not identical to fp32)
  assert float(m16["loss"]) != float(m32["loss"])


@pytest.mark.slow
def test_training_learns_a_tiny_recall_task():
  """A few hundred steps on 2-pair MQAR: answer accuracy far above chance (1/16)."""
  cfg_task = mqar.MQARConfig(vocab_size=32, seq_len=16, num_kv_pairs=2)
  cfg = BasedConfig.tiny(n_embd=32, n_head=2, n_layer=3, vocab_size=32, window_size=4,
                         la_layers=(1,), swa_layers=(2,))
  model = BasedLM(cfg, la_impl="chunked")
  opt = optim.make_optimizer(optim.OptimConfig(lr=1e-2, warmup_steps=20, total_steps=250,
                                               weight_decay=0.0))
  state = loop.init_state(model, opt, seed=0)
  src = data.MQARData(cfg_task, seed=0)
  before = loop.evaluate(loop.make_eval_fn(model), state.params, data.MQARData(cfg_task, seed=9),
                         num_batches=2, batch_size=64)
  state = loop.train(loop.make_train_step(model, opt), state, src, num_steps=250, batch_size=32,
                     hooks=loop.LoopHooks(progress=False))
  after = loop.evaluate(loop.make_eval_fn(model), state.params, data.MQARData(cfg_task, seed=9),
                        num_batches=2, batch_size=64)
  assert before["accuracy"] < 0.2
  assert after["accuracy"] > 0.5, after
  assert after["loss"] < before["loss"] - 1.0


def test_train_rejects_a_target_below_the_state():
  state = loop.TrainState(step=jnp.asarray(3, jnp.int32), params={}, opt_state=(),
                          rng=jax.random.PRNGKey(0))
  src = data.ByteTextData.from_text("abc" * 50, 8)
  never = lambda *_: pytest.fail("no step may run")
  with pytest.raises(ValueError, match="num_steps=2 is below the state's step 3"):
    loop.train(never, state, src, num_steps=2, batch_size=2, hooks=loop.LoopHooks(progress=False))
