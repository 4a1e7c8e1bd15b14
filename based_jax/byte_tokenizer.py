"""A byte-level tokenizer: id = UTF-8 byte (0..255), plus one end-of-text id 256.

Same surface as `based_jax.tokenizer.Tokenizer` (encode / decode / encode_batch, eos_token_id,
pad_token_id, vocab_size), so `generate` and the CLI take either. Needs no files and no network:
the shipped offline model `based_jax/assets/byte-based` uses it.

    tok = ByteTokenizer()
    ids = tok.encode("héllo")          # [104, 195, 169, 108, 108, 111]
    tok.decode(ids) == "héllo"
    input_ids, mask = tok.encode_batch(["a", "abc"])   # [B, L] left-padded with EOS, mask 0/1
"""

from collections.abc import Sequence

import numpy as np

from based_jax.tokenizer import left_pad_batch

NUM_BYTES = 256
EOS_ID = 256  # "<|endoftext|>"; also the pad id (as GPT-2 does)
VOCAB_SIZE = 257


class ByteTokenizer:
  """UTF-8 bytes as ids. decode() drops EOS and replaces invalid UTF-8 with U+FFFD."""

  eos_token = "<|endoftext|>"

  @property
  def eos_token_id(self) -> int:
    return EOS_ID

  @property
  def pad_token_id(self) -> int:
    return EOS_ID

  @property
  def vocab_size(self) -> int:
    return VOCAB_SIZE

  def encode(self, text: str) -> list[int]:
    """UTF-8 bytes of `text` as ids; no BOS/EOS is added."""
    if not isinstance(text, str):
      raise ValueError(f"text must be a str; got {type(text).__name__}")
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    """ids in [0, 257) -> text. EOS (256) is dropped; a broken UTF-8 sequence becomes U+FFFD."""
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
      raise ValueError(f"ids must be in [0, {VOCAB_SIZE}) (bytes and EOS={EOS_ID}); got "
                       f"{bad[:5]}{' ...' if len(bad) > 5 else ''}")
    return bytes(i for i in ids if i < NUM_BYTES).decode("utf-8", errors="replace")

  def encode_batch(self, prompts: Sequence[str], *,
                   max_prompt_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded batch: input_ids [B, L] int32 (EOS on the left), attention_mask [B, L] int32.

    L is the longest prompt in bytes. An empty prompt, or one longer than `max_prompt_tokens`,
    raises ValueError; nothing is truncated (`based_jax.tokenizer.left_pad_batch`).
    """
    return left_pad_batch(prompts, self.encode, self.pad_token_id,
                          max_prompt_tokens=max_prompt_tokens)
