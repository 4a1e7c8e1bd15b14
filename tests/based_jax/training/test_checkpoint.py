"""Save/resume: N steps + save + restore + M steps == N + M straight; the dir is a model dir."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax.config import BasedConfig
from based_jax.model import BasedLM
from based_jax.training import checkpoint, data, loop, optim


def _setup(accum=1):
  cfg = BasedConfig.tiny(n_embd=32, n_head=2, n_layer=3, vocab_size=257, window_size=6,
                         la_layers=(1,), swa_layers=(2,))
  model = BasedLM(cfg, la_impl="chunked")
  opt = optim.make_optimizer(optim.OptimConfig(lr=3e-3, warmup_steps=3, total_steps=8))
  text = "".join(np.random.default_rng(0).choice(list("the quick brown fox\n"), size=3000))
  src = data.ByteTextData.from_text(text, seq_len=24, seed=int(np.random.default_rng().integers(99)))
  return cfg, model, opt, src


@pytest.fixture(scope="module")
def setup():
  """(config, model, optimizer, source, jitted step, initial state): compiled once per module."""
  cfg, model, opt, src = _setup()
  return cfg, model, opt, src, loop.make_train_step(model, opt), loop.init_state(model, opt, 4)


def _fresh(state):
  """A copy (train steps donate their input state)."""
  return jax.tree_util.tree_map(jnp.array, state)


def _run(step_fn, state, src, steps, hooks=None):
  return loop.train(step_fn, state, src, num_steps=steps, batch_size=4, grad_accum=2,
                    hooks=hooks or loop.LoopHooks(progress=False))


def test_resume_equals_straight_run(tmp_path, setup):
  cfg, _, _, src, step_fn, init = setup
  straight = _run(step_fn, _fresh(init), src, 8)

  first = _run(step_fn, _fresh(init), src, 5)
  checkpoint.save(str(tmp_path / "ck"), cfg, first, extra={"note": "x"})
  assert not os.path.exists(str(tmp_path / "ck.tmp"))
  # a template with other values everywhere: everything must come from the checkpoint
  template = jax.tree_util.tree_map(lambda x: x + 1, _fresh(init))
  cfg2, restored, extra = checkpoint.restore(str(tmp_path / "ck"), template)
  assert cfg2 == cfg and extra == {"note": "x"} and int(restored.step) == 5
  np.testing.assert_array_equal(np.asarray(jax.random.key_data(restored.rng)
                                           if jnp.issubdtype(restored.rng.dtype,
                                                             jax.dtypes.prng_key)
                                           else restored.rng),
                                np.asarray(first.rng))
  resumed = _run(step_fn, restored, src, 8)
  assert int(resumed.step) == int(straight.step) == 8
  leaves_a = jax.tree_util.tree_leaves((straight.params, straight.opt_state))
  leaves_b = jax.tree_util.tree_leaves((resumed.params, resumed.opt_state))
  assert len(leaves_a) == len(leaves_b)
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_checkpoint_dir_loads_with_from_pretrained(tmp_path, setup):
  from based_jax.pretrained import from_pretrained

  cfg, model, _, src, _, state = setup
  checkpoint.save(str(tmp_path / "ck"), cfg, state)
  checkpoint.save_model(str(tmp_path / "bf16"), cfg, state.params, dtype="bfloat16")
  ids = jnp.asarray(src.batch(0, 2)["input_ids"])
  want = model.apply({"params": state.params}, ids)
  for sub, tol in (("ck", 1e-6), ("bf16", 0.05)):
    loaded_model, params = from_pretrained(str(tmp_path / sub))
    assert loaded_model.config == cfg
    got = loaded_model.apply({"params": params}, ids)
    err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    assert err <= tol, (sub, err)
  with open(tmp_path / "ck" / "trainer_state.json") as f:
    assert json.load(f)["step"] == 0


def test_restore_names_mismatched_tensors(tmp_path, setup):
  cfg, _, _, _, _, state = setup
  checkpoint.save(str(tmp_path / "ck"), cfg, state)
  other = BasedConfig.tiny(n_embd=48, n_head=2, n_layer=3, vocab_size=257, window_size=6,
                           la_layers=(1,), swa_layers=(2,))
  shapes = jax.eval_shape(BasedLM(other, la_impl="chunked").init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 4), jnp.int32))["params"]
  template = state.replace(params=shapes)
  with pytest.raises(ValueError,
                     match=r"word_embeddings/embedding: shape \(264, 32\) != \(264, 48\)"):
    checkpoint.restore(str(tmp_path / "ck"), template)


def test_restore_of_a_non_checkpoint_is_clear(tmp_path, setup):
  with pytest.raises(FileNotFoundError, match="is not a training checkpoint"):
    checkpoint.restore(str(tmp_path), setup[-1])


def test_save_keeps_other_files_and_leaves_no_temporaries(tmp_path, setup):
  cfg, _, _, _, _, state = setup
  out = tmp_path / "ck"
  checkpoint.save(str(out), cfg, state)
  (out / "log.jsonl").write_text("{}\n")
  checkpoint.save(str(out), cfg, state)
  assert (out / "log.jsonl").read_text() == "{}\n"
  assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_save_model_rejects_unknown_dtype(tmp_path, setup):
  with pytest.raises(ValueError, match="dtype must be one of"):
    checkpoint.save_model(str(tmp_path), setup[0], setup[-1].params, dtype="fp8")
