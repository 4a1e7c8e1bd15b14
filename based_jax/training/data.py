"""Training batches: byte-level text windows and synthetic MQAR, both a pure function of the step.

A data source maps `(step, batch_size, seq_len)` to numpy arrays
    input_ids [B, L] int32, targets [B, L] int32, weights [B, L] float32 (loss mask).
Batch `step` is drawn from `np.random.default_rng([seed, step])`, so a resumed run sees exactly
the batches a straight run would, with no iterator state to save.
"""

import dataclasses
from typing import Protocol

import numpy as np

from based_jax import mqar


class DataSource(Protocol):
  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]: ...


def pydoc_corpus(held_out_every: int = 10) -> tuple[str, str]:
  """(train, held_out) text from `pydoc_data.topics` (ships with CPython, ~490k characters).

  Topics sorted by name; every `held_out_every`-th topic goes to held_out.
  """
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel

  names = sorted(topics.topics)
  train = [topics.topics[n] for i, n in enumerate(names) if i % held_out_every]
  held = [topics.topics[n] for i, n in enumerate(names) if not i % held_out_every]
  return "\n\n".join(train), "\n\n".join(held)


def bytes_of(text: str) -> np.ndarray:
  """UTF-8 bytes as ids, [N] int32."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ByteTextData:
  """Random windows of L + 1 bytes from one text; next-byte targets, every position counted.

  tokens: [N] int32 byte ids (N >= seq_len + 1).
  """

  tokens: np.ndarray
  seq_len: int
  seed: int = 0

  def __post_init__(self):
    if self.seq_len < 1:
      raise ValueError(f"seq_len must be >= 1; got {self.seq_len}")
    if self.tokens.ndim != 1 or len(self.tokens) < self.seq_len + 1:
      raise ValueError(f"tokens must be a 1-D array of at least seq_len + 1 = {self.seq_len + 1} "
                       f"ids; got shape {self.tokens.shape}")

  @classmethod
  def from_text(cls, text: str, seq_len: int, seed: int = 0) -> "ByteTextData":
    return cls(bytes_of(text), seq_len, seed)

  @classmethod
  def from_file(cls, path: str, seq_len: int, seed: int = 0) -> "ByteTextData":
    with open(path, encoding="utf-8") as f:
      return cls.from_text(f.read(), seq_len, seed)

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, step])
    starts = rng.integers(0, len(self.tokens) - self.seq_len, size=batch_size)  # [B]
    idx = starts[:, None] + np.arange(self.seq_len + 1)  # [B, L + 1]
    window = self.tokens[idx]
    return {"input_ids": window[:, :-1].astype(np.int32),
            "targets": window[:, 1:].astype(np.int32),
            "weights": np.ones((batch_size, self.seq_len), np.float32)}


@dataclasses.dataclass(frozen=True)
class MQARData:
  """Synthetic MQAR batches (see based_jax.mqar); loss only on answer positions."""

  config: mqar.MQARConfig
  seed: int = 0

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    return mqar.generate(self.config, batch_size, np.random.default_rng([self.seed, step]))


def accumulation_batch(source: DataSource, step: int, batch_size: int,
                       grad_accum: int) -> dict[str, np.ndarray]:
  """The batch of optimizer step `step` as `grad_accum` micro-batches: [A, B/A, L] each.

  It is the same `batch_size` rows whatever `grad_accum` is, so accumulation changes only the
  summation order, not the data.
  """
  if grad_accum < 1 or batch_size % grad_accum:
    raise ValueError(f"grad_accum must be >= 1 and divide batch_size={batch_size}; got "
                     f"{grad_accum}")
  full = source.batch(step, batch_size)
  return {k: v.reshape(grad_accum, batch_size // grad_accum, *v.shape[1:])  # [A, B/A, L]
          for k, v in full.items()}


__all__ = ["ByteTextData", "DataSource", "MQARData", "accumulation_batch", "bytes_of",
           "pydoc_corpus"]
