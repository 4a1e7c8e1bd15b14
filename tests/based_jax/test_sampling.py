"""Sampling: config validation, greedy argmax, top-k / top-p masks against float64 NumPy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax.sampling import SamplingConfig, filter_logits, mask_padded_vocab, sample


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.5), ("temperature", float("nan")), ("temperature", "hot"),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True),
    ("top_p", 0.0), ("top_p", -0.1), ("top_p", 1.5), ("top_p", float("nan")),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
  with pytest.raises(ValueError, match=f"SamplingConfig.{field}"):
    SamplingConfig(**{field: value})


def test_config_greedy_property():
  assert SamplingConfig().greedy
  assert SamplingConfig(temperature=0.8, top_k=1).greedy
  assert not SamplingConfig(temperature=0.8).greedy
  with pytest.raises(dataclasses.FrozenInstanceError):
    SamplingConfig().temperature = 1.0  # frozen


def test_greedy_is_argmax_over_all_padded_columns():
  rng = np.random.default_rng()
  logits = rng.normal(size=(4, 40)).astype(np.float32)
  logits[1, 38] = 50.0  # a padded column (vocab 35) wins: greedy keeps upstream's behaviour
  got = np.asarray(sample(jnp.asarray(logits), jax.random.key(0), SamplingConfig(), vocab_size=35))
  np.testing.assert_array_equal(got, logits.argmax(-1))
  assert got[1] == 38


def numpy_filter(logits: np.ndarray, temperature: float, top_k: int, top_p: float,
                 vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Independent float64 reference: (tempered logits with -inf, mass-before for the top-p cut)."""
  x = logits.astype(np.float64).copy()
  x[:, vocab_size:] = -np.inf
  if 0 < top_k < x.shape[1]:
    kth = np.sort(x, axis=1)[:, ::-1][:, top_k - 1:top_k]
    x[x < kth] = -np.inf
  x = x / temperature
  mass = np.zeros_like(x)
  if top_p < 1.0:
    for b in range(x.shape[0]):
      order = np.argsort(-x[b], kind="stable")
      p = np.exp(x[b, order] - x[b, order[0]])
      p /= p.sum()
      before = np.cumsum(p) - p
      mass[b, order] = before
      x[b, order[before >= top_p]] = -np.inf
  return x, mass


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (0.5, 12, 0.8), (2.0, 3, 0.3), (1.0, 0, 0.05),
])
def test_filter_matches_numpy(temperature, top_k, top_p):
  rng = np.random.default_rng()
  vp, vocab = 67, 61  # odd sizes; 6 padded columns
  logits = rng.normal(scale=2.0, size=(6, vp)).astype(np.float32)
  config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
  got = np.asarray(filter_logits(jnp.asarray(logits), config, vocab))
  want, mass = numpy_filter(logits, temperature, top_k, top_p, vocab)
  # float32 vs float64 cumulative sums can only disagree for tokens right at the top-p boundary
  ambiguous = np.abs(mass - top_p) < 1e-5 if top_p < 1.0 else np.zeros_like(mass, bool)
  kept_got, kept_want = np.isfinite(got), np.isfinite(want)
  assert np.array_equal(kept_got | ambiguous, kept_want | ambiguous)
  assert not kept_got[:, vocab:].any(), "padded vocab columns must be masked when sampling"
  both = kept_got & kept_want
  np.testing.assert_allclose(got[both], want[both], rtol=1e-6, atol=1e-6)
  assert kept_got.sum(axis=1).min() >= 1
  if top_k or top_p < 1.0:
    assert (kept_want.sum(axis=1) < vocab).all(), "the case must actually filter something"


def test_mask_padded_vocab():
  x = jnp.zeros((2, 10))
  got = np.asarray(mask_padded_vocab(x, 7))
  assert np.isneginf(got[:, 7:]).all() and (got[:, :7] == 0).all()
  assert mask_padded_vocab(x, None) is x


def test_sampled_frequencies_match_numpy_distribution():
  rng = np.random.default_rng()
  vp, vocab, n = 10, 8, 40000
  row = rng.normal(size=(vp,)).astype(np.float32)
  row[9] = 10.0  # a padded column with a huge logit must never be drawn
  config = SamplingConfig(temperature=0.7, top_k=6, top_p=0.9)
  logits = jnp.broadcast_to(jnp.asarray(row), (n, vp))
  draws = np.asarray(sample(logits, jax.random.key(int(rng.integers(1 << 30))), config, vocab))
  want, _ = numpy_filter(row[None], 0.7, 6, 0.9, vocab)
  p = np.exp(want[0] - want[0].max())
  p /= p.sum()
  freq = np.bincount(draws, minlength=vp) / n
  assert freq[vocab:].sum() == 0
  assert (freq[p == 0] == 0).all()
  np.testing.assert_allclose(freq, p, atol=0.015)


def test_same_key_same_draws_other_key_other_draws():
  rng = np.random.default_rng()
  logits = jnp.asarray(rng.normal(size=(64, 50)).astype(np.float32))
  config = SamplingConfig(temperature=1.0)
  a = np.asarray(sample(logits, jax.random.key(1), config))
  b = np.asarray(sample(logits, jax.random.key(1), config))
  c = np.asarray(sample(logits, jax.random.key(2), config))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
