"""Tokenizer: local directory loading, left-padded batch encoding, errors (offline, empty, long)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from based_jax.tokenizer import (DEFAULT_TOKENIZER, TokenizerUnavailableError, left_pad_batch,
                                 load_tokenizer, resolve_tokenizer_name)

CORPUS = "the quick brown fox jumps over the lazy dog. hello world, hello based jax! " * 4


def write_byte_bpe_tokenizer(directory) -> str:
  """A small byte-level BPE tokenizer (GPT-2 style, <|endoftext|> special) saved as HF files."""
  from tokenizers import ByteLevelBPETokenizer
  from transformers import PreTrainedTokenizerFast

  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator([CORPUS], vocab_size=320, min_frequency=1,
                          special_tokens=["<|endoftext|>"])
  PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(
      str(directory))
  return str(directory)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return write_byte_bpe_tokenizer(tmp_path_factory.mktemp("tok"))


def test_encode_batch_left_pads_and_round_trips(tok_dir):
  tok = load_tokenizer(tok_dir)
  prompts = ["hello", "the quick brown fox jumps", "é ü, lazy dog"]  # non-ASCII: byte fallback
  ids, mask = tok.encode_batch(prompts)
  lengths = [len(tok.encode(p)) for p in prompts]
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  assert ids.shape == mask.shape == (3, max(lengths))
  for row, (p, n) in enumerate(zip(prompts, lengths)):
    assert mask[row].tolist() == [0] * (ids.shape[1] - n) + [1] * n
    assert (ids[row, :ids.shape[1] - n] == tok.pad_token_id).all()
    assert tok.decode(ids[row, ids.shape[1] - n:]) == p
  assert tok.pad_token_id == tok.eos_token_id  # GPT-2 convention: pad with <|endoftext|>


def test_encode_batch_errors(tok_dir):
  tok = load_tokenizer(tok_dir)
  with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
    tok.encode_batch(["hello", ""])
  with pytest.raises(ValueError, match="max_prompt_tokens=3"):
    tok.encode_batch(["the quick brown fox jumps over"], max_prompt_tokens=3)
  with pytest.raises(ValueError, match="at least one prompt"):
    tok.encode_batch([])
  with pytest.raises(ValueError, match="not one string"):
    tok.encode_batch("hello")


def test_resolve_tokenizer_name(tok_dir, tmp_path):
  assert resolve_tokenizer_name("foo/bar", tok_dir) == "foo/bar"
  assert resolve_tokenizer_name(None, tok_dir) == tok_dir
  assert resolve_tokenizer_name(None, str(tmp_path)) == DEFAULT_TOKENIZER  # checkpoint, no files
  assert resolve_tokenizer_name(None, "hazyresearch/based-360m") == DEFAULT_TOKENIZER


def test_resolve_from_config_json_tokenizer_key(tmp_path):
  (tmp_path / "config.json").write_text('{"n_embd": 8, "tokenizer": "byte"}')
  assert resolve_tokenizer_name(None, str(tmp_path)) == "byte"
  (tmp_path / "config.json").write_text('{"n_embd": 8}')
  assert resolve_tokenizer_name(None, str(tmp_path)) == DEFAULT_TOKENIZER


def test_left_pad_batch_with_any_encoder():
  rng = np.random.default_rng()
  prompts = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, n)) for n in (3, 1, 7)]
  ids, mask = left_pad_batch(prompts, lambda t: [ord(c) for c in t], pad_id=5)
  assert ids.shape == (3, 7) and ids.dtype == np.int32
  for row, p in enumerate(prompts):
    n = len(p)
    assert ids[row, 7 - n:].tolist() == [ord(c) for c in p] and (ids[row, :7 - n] == 5).all()
    assert mask[row].tolist() == [0] * (7 - n) + [1] * n


def test_byte_tokenizer_by_name():
  pytest.importorskip("based_jax.byte_tokenizer")
  tok = load_tokenizer("byte")
  ids, mask = tok.encode_batch(["hé", "x"])
  assert tok.decode(ids[0][mask[0] == 1]) == "hé"


def test_directory_without_tokenizer_files_is_a_clear_error(tmp_path):
  with pytest.raises(TokenizerUnavailableError, match="holds no tokenizer files"):
    load_tokenizer(tmp_path)


def test_offline_and_not_cached_names_the_fix(tmp_path):
  code = ("from based_jax.tokenizer import load_tokenizer\n"
          "try:\n  load_tokenizer('gpt2')\nexcept Exception as e:\n"
          "  print(type(e).__name__); print(e)\n")
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
  env.pop("HF_HUB_CACHE", None)
  env.pop("TRANSFORMERS_CACHE", None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.stdout.startswith("TokenizerUnavailableError"), out.stdout + out.stderr
  assert "HF_HUB_OFFLINE=1" in out.stdout and "hf download gpt2" in out.stdout
