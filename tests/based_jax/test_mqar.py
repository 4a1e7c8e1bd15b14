"""MQAR generator: structure of every example, checked independently of the generator's code."""

import numpy as np
import pytest

from based_jax import mqar


@pytest.mark.parametrize("vocab, length, pairs", [(32, 24, 4), (256, 64, 8), (64, 63, 16),
                                                  (16, 7, 2)])
def test_examples_are_well_formed(vocab, length, pairs):
  cfg = mqar.MQARConfig(vocab_size=vocab, seq_len=length, num_kv_pairs=pairs)
  rng = np.random.default_rng()
  batch = mqar.generate(cfg, 16, rng)
  x, y, w = batch["input_ids"], batch["targets"], batch["weights"]
  assert x.shape == y.shape == w.shape == (16, length)
  assert x.dtype == y.dtype == np.int32 and w.dtype == np.float32
  assert x.min() >= 0 and x.max() < vocab and y.min() >= 0 and y.max() < vocab
  half = vocab // 2
  for row in range(16):
    keys, values = x[row, 0:2 * pairs:2], x[row, 1:2 * pairs:2]
    assert len(set(keys.tolist())) == pairs and keys.min() >= 1 and keys.max() < half
    assert values.min() >= half
    # targets are the inputs shifted by one inside the context
    np.testing.assert_array_equal(y[row, :2 * pairs - 1], x[row, 1:2 * pairs])
    answers = np.flatnonzero(w[row])
    assert len(answers) == pairs and set(np.unique(w[row])) <= {0.0, 1.0}
    table = dict(zip(keys.tolist(), values.tolist()))
    # each answer position holds a query key whose target is that key's value
    assert sorted(x[row, answers].tolist()) == sorted(keys.tolist())
    for pos in answers:
      assert pos >= 2 * pairs
      assert y[row, pos] == table[int(x[row, pos])]
    # outside the keys, the query section is blank in the inputs (answers are never shown)
    query = np.arange(2 * pairs, length)
    others = np.setdiff1d(query, answers)
    assert (x[row, others] == 0).all()


def test_batches_differ_and_are_reproducible():
  cfg = mqar.MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4)
  a = mqar.generate(cfg, 8, np.random.default_rng(5))
  b = mqar.generate(cfg, 8, np.random.default_rng(5))
  c = mqar.generate(cfg, 8, np.random.default_rng(6))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["input_ids"], c["input_ids"])
  # the answer positions are not always the same (queries are shuffled)
  assert len({tuple(np.flatnonzero(r)) for r in a["weights"]}) > 1


def test_answer_accuracy_counts_only_answer_positions():
  cfg = mqar.MQARConfig(vocab_size=32, seq_len=24, num_kv_pairs=4)
  batch = mqar.generate(cfg, 4, np.random.default_rng())
  logits = np.zeros((4, 24, 32), np.float32)
  rows, cols = np.nonzero(batch["weights"])
  logits[rows, cols, batch["targets"][rows, cols]] = 1.0
  assert mqar.answer_accuracy(logits, batch) == 1.0
  logits[rows[0], cols[0]] = 0
  logits[rows[0], cols[0], 0] = 1.0
  assert mqar.answer_accuracy(logits, batch) == pytest.approx(1 - 1 / len(rows))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_kv_pairs=0), "num_kv_pairs must be >= 1"),
    (dict(vocab_size=16, num_kv_pairs=8), "distinct keys"),
    (dict(seq_len=10, num_kv_pairs=4), "seq_len"),
])
def test_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mqar.MQARConfig(**kwargs)


def test_batch_size_error():
  with pytest.raises(ValueError, match="batch_size"):
    mqar.generate(mqar.MQARConfig(), 0, np.random.default_rng())
