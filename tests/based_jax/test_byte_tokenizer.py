"""ByteTokenizer: UTF-8 round trips, EOS handling, left-padded batches, errors."""

import numpy as np
import pytest

from based_jax.byte_tokenizer import EOS_ID, VOCAB_SIZE, ByteTokenizer


def _random_text(rng, n):
  # ASCII, Latin-1, CJK and an astral-plane emoji: 1- to 4-byte UTF-8 sequences.
  alphabet = list("abc xyz\n\t{}") + ["é", "ß", "漢", "字", "🙂"]
  return "".join(rng.choice(alphabet, size=n))


def test_encode_is_utf8_and_decode_inverts_it():
  rng = np.random.default_rng()
  tok = ByteTokenizer()
  for n in (1, 7, 50):
    text = _random_text(rng, n)
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_surface_matches_the_hf_wrapper():
  tok = ByteTokenizer()
  assert tok.vocab_size == VOCAB_SIZE == 257
  assert tok.eos_token_id == tok.pad_token_id == EOS_ID == 256


def test_decode_drops_eos_and_replaces_broken_utf8():
  tok = ByteTokenizer()
  assert tok.decode([104, EOS_ID, 105]) == "hi"
  cut = "é".encode("utf-8")[:1]  # half of a 2-byte sequence
  assert tok.decode(list(b"a" + cut)) == "a\ufffd"


def test_decode_rejects_ids_outside_the_vocab():
  with pytest.raises(ValueError, match=r"ids must be in \[0, 257\)"):
    ByteTokenizer().decode([65, 257])
  with pytest.raises(ValueError, match="ids must be"):
    ByteTokenizer().decode([-1])


def test_encode_batch_left_pads_with_eos():
  rng = np.random.default_rng()
  tok = ByteTokenizer()
  prompts = [_random_text(rng, int(n)) for n in rng.integers(1, 12, size=4)]
  ids, mask = tok.encode_batch(prompts)
  lengths = [len(p.encode("utf-8")) for p in prompts]
  assert ids.shape == mask.shape == (4, max(lengths))
  assert ids.dtype == mask.dtype == np.int32
  for row, text, n in zip(range(4), prompts, lengths):
    pad = ids.shape[1] - n
    assert (ids[row, :pad] == EOS_ID).all() and (mask[row, :pad] == 0).all()
    assert (mask[row, pad:] == 1).all()
    assert tok.decode(ids[row, pad:]) == text


@pytest.mark.parametrize("prompts, match", [
    ("abc", "not one string"),
    ([], "at least one prompt"),
    (["ok", ""], r"prompts\[1\] is empty"),
    (["ok", 3], r"prompts\[1\] must be a string"),
])
def test_encode_batch_errors(prompts, match):
  with pytest.raises(ValueError, match=match):
    ByteTokenizer().encode_batch(prompts)


def test_encode_batch_never_truncates():
  with pytest.raises(ValueError, match="more than max_prompt_tokens=3"):
    ByteTokenizer().encode_batch(["abcd"], max_prompt_tokens=3)
