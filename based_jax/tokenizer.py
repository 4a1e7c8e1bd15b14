"""The checkpoints' Hugging Face tokenizer, with left-padded batch encoding for `generate`.

Every Based / attention checkpoint uses the GPT-2 BPE tokenizer (`AutoTokenizer.from_pretrained
("gpt2")`, 50257 ids, `<|endoftext|>` = 50256 as EOS and pad); the released model repos ship no
tokenizer files, so "gpt2" is the default unless a checkpoint directory holds its own.
`transformers` is imported lazily: `import based_jax` does not need it.
"""

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DEFAULT_TOKENIZER = "gpt2"
BYTE_TOKENIZER = "byte"  # based_jax.byte_tokenizer.ByteTokenizer (UTF-8 bytes + EOS; no files)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


class TokenizerUnavailableError(RuntimeError):
  """The tokenizer is neither local nor downloadable; the message says how to fix it."""


def _offline() -> bool:
  value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
  return value.strip().lower() in ("1", "true", "yes", "on")


def has_tokenizer_files(path: str | os.PathLike) -> bool:
  """True when `path` is a local directory holding tokenizer files."""
  p = Path(path)
  return p.is_dir() and any((p / name).is_file() for name in _TOKENIZER_FILES)


def resolve_tokenizer_name(tokenizer: str | None, model: str | None = None) -> str:
  """Which tokenizer to load.

  In order: `tokenizer` if given; the model directory itself when it holds tokenizer files; the
  string under "tokenizer" in the model directory's config.json (e.g. "byte"); else "gpt2".
  """
  if tokenizer:
    return tokenizer
  if model and has_tokenizer_files(model):
    return str(model)
  config = Path(model) / "config.json" if model else None
  if config is not None and config.is_file():
    try:
      named = json.loads(config.read_text(encoding="utf-8")).get("tokenizer")
    except (OSError, ValueError, AttributeError):
      named = None
    if isinstance(named, str) and named:
      return named
  return DEFAULT_TOKENIZER


def left_pad_batch(prompts: Sequence[str], encode: Callable[[str], list[int]], pad_id: int, *,
                   max_prompt_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Encode prompts of different lengths into one left-padded batch (any tokenizer's `encode`).

  Returns input_ids [B, L] int32 (pad_id on the left) and attention_mask [B, L] int32
  (0 pad, 1 token), L the longest prompt. An empty prompt or one longer than
  `max_prompt_tokens` raises ValueError naming it; nothing is truncated.
  """
  if isinstance(prompts, str):
    raise ValueError("prompts must be a sequence of strings, not one string; wrap it in a list")
  if len(prompts) == 0:
    raise ValueError("prompts must hold at least one prompt; got an empty sequence")
  rows = []
  for i, text in enumerate(prompts):
    if not isinstance(text, str):
      raise ValueError(f"prompts[{i}] must be a string; got {type(text).__name__}")
    ids = list(encode(text))
    if not ids:
      raise ValueError(f"prompts[{i}] is empty: it encodes to 0 tokens; give at least one token")
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
      raise ValueError(
          f"prompts[{i}] has {len(ids)} tokens, more than max_prompt_tokens={max_prompt_tokens}; "
          "shorten it or raise the limit")
    rows.append(ids)
  length = max(len(r) for r in rows)
  input_ids = np.full((len(rows), length), pad_id, np.int32)  # [B, L]
  mask = np.zeros((len(rows), length), np.int32)  # [B, L]
  for i, ids in enumerate(rows):
    input_ids[i, length - len(ids):] = ids
    mask[i, length - len(ids):] = 1
  return input_ids, mask


class Tokenizer:
  """A thin wrapper over a Hugging Face tokenizer: ids in, ids out, left padding."""

  def __init__(self, hf_tokenizer):
    self.hf = hf_tokenizer
    if self.hf.eos_token_id is None and self.hf.pad_token_id is None:
      raise ValueError("tokenizer has neither an eos nor a pad token; cannot left-pad batches")

  @property
  def eos_token_id(self) -> int | None:
    return self.hf.eos_token_id

  @property
  def pad_token_id(self) -> int:
    """The pad id (the EOS id when the tokenizer has no pad token, as for GPT-2)."""
    pad = self.hf.pad_token_id
    return int(pad if pad is not None else self.hf.eos_token_id)

  @property
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce (added tokens included)."""
    return len(self.hf)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; no BOS/EOS is added (Based prompts have none)."""
    return list(self.hf.encode(text, add_special_tokens=False))

  def decode(self, ids: Sequence[int]) -> str:
    return self.hf.decode(list(ids), skip_special_tokens=False)

  def encode_batch(self, prompts: Sequence[str], *,
                   max_prompt_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded batch: input_ids [B, L] int32, attention_mask [B, L] int32 (left_pad_batch)."""
    return left_pad_batch(prompts, self.encode, self.pad_token_id,
                          max_prompt_tokens=max_prompt_tokens)


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_TOKENIZER):
  """Load a tokenizer from a local directory or the Hugging Face hub (cached after first use).

  "byte" gives the file-free `based_jax.byte_tokenizer.ByteTokenizer` (same interface).
  Raises TokenizerUnavailableError with the fix when it is not cached and cannot be downloaded
  (HF_HUB_OFFLINE=1 or no network).
  """
  name = str(name_or_path)
  if name == BYTE_TOKENIZER:
    from based_jax.byte_tokenizer import ByteTokenizer  # pylint: disable=import-outside-toplevel

    return ByteTokenizer()
  local = Path(name).is_dir()
  if local and not has_tokenizer_files(name):
    raise TokenizerUnavailableError(
        f"tokenizer directory {name!r} holds no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
        f"pass a directory saved with save_pretrained, or a hub id such as {DEFAULT_TOKENIZER!r}")
  from transformers import AutoTokenizer  # lazy: heavy, and optional for the library

  try:
    hf = AutoTokenizer.from_pretrained(name)
  except (OSError, ValueError) as err:
    if local:
      raise TokenizerUnavailableError(f"could not load the tokenizer in {name!r}: {err}") from err
    how = ("HF_HUB_OFFLINE=1 forbids downloading it" if _offline()
           else "downloading it failed (no network?)")
    raise TokenizerUnavailableError(
        f"tokenizer {name!r} is not in the local Hugging Face cache and {how}. Fix: on a machine "
        f"with network access run `hf download {name}` (or unset HF_HUB_OFFLINE), or pass a "
        "local directory holding tokenizer.json (--tokenizer PATH)."
        f" Underlying error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    ) from err
  return Tokenizer(hf)
