"""Training data: byte windows are real slices of the text, batches are a function of the step."""

import numpy as np
import pytest

from based_jax.training import data


def _text(rng, n=2000):
  return "".join(rng.choice(list("abcdefgh é漢\n"), size=n))


def test_byte_windows_are_slices_with_shifted_targets():
  rng = np.random.default_rng()
  text = _text(rng)
  raw = text.encode("utf-8")
  src = data.ByteTextData.from_text(text, seq_len=33, seed=int(rng.integers(1 << 30)))
  batch = src.batch(7, 5)
  assert batch["input_ids"].shape == (5, 33) and batch["input_ids"].dtype == np.int32
  assert (batch["weights"] == 1).all()
  for x, y in zip(batch["input_ids"], batch["targets"]):
    window = bytes(x.tolist()) + bytes([y[-1]])
    assert window in raw
    np.testing.assert_array_equal(x[1:], y[:-1])


def test_batches_depend_only_on_seed_and_step():
  text = _text(np.random.default_rng())
  a = data.ByteTextData.from_text(text, 16, seed=3)
  b = data.ByteTextData.from_text(text, 16, seed=3)
  np.testing.assert_array_equal(a.batch(11, 4)["input_ids"], b.batch(11, 4)["input_ids"])
  assert not np.array_equal(a.batch(11, 4)["input_ids"], a.batch(12, 4)["input_ids"])


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_accumulation_splits_the_same_rows(accum):
  src = data.ByteTextData.from_text(_text(np.random.default_rng()), 8)
  full = src.batch(5, 8)
  split = data.accumulation_batch(src, 5, 8, accum)
  for k in full:
    assert split[k].shape == (accum, 8 // accum, 8)
    np.testing.assert_array_equal(split[k].reshape(full[k].shape), full[k])


def test_accumulation_must_divide():
  src = data.ByteTextData.from_text("x" * 100, 8)
  with pytest.raises(ValueError, match="grad_accum must be >= 1 and divide batch_size=6"):
    data.accumulation_batch(src, 0, 6, 4)


def test_text_shorter_than_a_window_is_an_error():
  with pytest.raises(ValueError, match="at least seq_len \\+ 1 = 11"):
    data.ByteTextData.from_text("short", 10)


def test_pydoc_corpus_split_is_disjoint():
  train, held = data.pydoc_corpus()
  assert len(train) > 100_000 and len(held) > 10_000
  paragraph = held.split("\n\n")[0]
  assert len(paragraph) > 20 and paragraph not in train


def test_mqar_source_is_reproducible():
  from based_jax import mqar

  cfg = mqar.MQARConfig(vocab_size=32, seq_len=24, num_kv_pairs=4)
  a, b = data.MQARData(cfg, seed=1), data.MQARData(cfg, seed=1)
  np.testing.assert_array_equal(a.batch(3, 4)["targets"], b.batch(3, 4)["targets"])
  assert a.batch(3, 4)["weights"].sum() == 16
