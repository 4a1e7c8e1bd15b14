"""The shipped byte-level Based model: loads offline, predicts held-out pydoc text, generates."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import assets
from based_jax.byte_tokenizer import ByteTokenizer
from based_jax.training import data


@pytest.fixture(scope="module")
def shipped():
  return assets.load_byte_based()


def test_files_are_small_bf16_and_name_the_byte_tokenizer(shipped):
  model, params, _ = shipped
  path = assets.asset_dir()
  assert os.path.getsize(os.path.join(path, "params.safetensors")) <= 20 * 2**20
  with open(os.path.join(path, "config.json")) as f:
    assert json.load(f)["tokenizer"] == "byte"
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  cfg = model.config
  assert cfg.vocab_size == ByteTokenizer().vocab_size == 257
  assert {"conv", "linear_attention", "sliding_window"} <= set(cfg.layer_types)


def test_held_out_pydoc_loss_is_far_below_uniform(shipped):
  """Next-byte loss on held-out topics (never trained on), in float64 from the fp32 logits."""
  model, params, _ = shipped
  _, held = data.pydoc_corpus()
  paragraphs = [p for p in held.split("\n\n") if len(p.encode("utf-8")) > 300][:4]
  assert len(paragraphs) == 4
  ids = np.stack([data.bytes_of(p)[:201] for p in paragraphs])  # [4, 201]
  logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids[:, :-1])),
                      np.float64)  # [4, 200, Vp]
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0]  # [4, 200]
  assert nll.mean() < 2.0 < math.log(256), nll.mean()  # measured 1.34 nats/byte at release
  # padded ids (>= 257) never win the argmax, so greedy decoding only emits bytes or EOS
  assert (logits.argmax(-1) < 257).all()


def test_greedy_generation_is_deterministic_printable_text(shipped):
  from based_jax.generation import generate

  model, params, tok = shipped
  ids, mask = tok.encode_batch(["The \"if\" statement", "def "])
  run = lambda: generate(model, params, ids, mask, max_new_tokens=48, tokenizer=tok,
                         eos_token_id=tok.eos_token_id)
  first, second = run(), run()
  assert first.texts == second.texts
  np.testing.assert_array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
  for text in first.texts:
    assert len(text) >= 16
    assert all(c.isprintable() or c in "\n\t" for c in text), repr(text)
    assert len(set(text)) > 3  # not one repeated character


def test_missing_asset_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="shipped checkpoint 'nope' is missing"):
    assets.asset_dir("nope")
