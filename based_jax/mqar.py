"""Multi-query associative recall (MQAR), the synthetic recall task of Zoology / Based.

One example of length L (= seq_len) over `vocab_size` ids:

    [k1 v1 k2 v2 ... kN vN] [ . . kq1 . . . kq2 . . ... ]
     context: N key-value pairs     queries: every key once, in random order, at random even
                                     offsets; every other query-section token is 0 (blank)

Keys are distinct ids from [1, V/2), values are ids from [V/2, V) (repeats allowed), 0 is the blank.
The model reads `input_ids = seq[:-1]` and must predict `targets = seq[1:]`; the loss and the
accuracy count only the answer positions (the position of each query key, whose target is that
key's value), `weights` is 1 there and 0 elsewhere. So an example asks N recalls, and a model
that only looks a fixed distance back cannot answer: the pair can be anywhere in the context.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MQARConfig:
  """vocab_size V (ids 0..V-1, 0 = blank), seq_len L (tokens fed to the model), num_kv_pairs N."""

  vocab_size: int = 256
  seq_len: int = 128
  num_kv_pairs: int = 16

  def __post_init__(self):
    v, length, n = self.vocab_size, self.seq_len, self.num_kv_pairs
    if n < 1:
      raise ValueError(f"MQARConfig: num_kv_pairs must be >= 1; got {n}")
    if v < 4 or n > v // 2 - 1:
      raise ValueError(f"MQARConfig: need num_kv_pairs <= vocab_size // 2 - 1 distinct keys; got "
                       f"vocab_size={v}, num_kv_pairs={n}")
    if length + 1 < 4 * n:
      raise ValueError(f"MQARConfig: seq_len + 1 must be >= 4 * num_kv_pairs (context 2N plus 2N "
                       f"query slots); got seq_len={length}, num_kv_pairs={n}")


def generate(cfg: MQARConfig, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch of MQAR examples.

  Returns input_ids [B, L] int32, targets [B, L] int32 and weights [B, L] float32 (1 at the N
  answer positions of each row, else 0).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}")
  v, n, length = cfg.vocab_size, cfg.num_kv_pairs, cfg.seq_len
  half = v // 2
  total = length + 1  # one more token than the model reads: the last target
  keys = np.argsort(rng.random((batch_size, half - 1)), axis=1)[:, :n] + 1  # [B, N] distinct
  values = rng.integers(half, v, size=(batch_size, n))  # [B, N]
  seq = np.zeros((batch_size, total), np.int64)  # [B, L + 1]
  seq[:, 0:2 * n:2] = keys
  seq[:, 1:2 * n:2] = values
  # Query slots: the key at an even offset 2s of the query section, its value right after it.
  num_slots = (total - 2 * n) // 2
  slots = np.argsort(rng.random((batch_size, num_slots)), axis=1)[:, :n]  # [B, N] distinct
  order = np.argsort(rng.random((batch_size, n)), axis=1)  # [B, N] which pair goes where
  rows = np.arange(batch_size)[:, None]
  key_pos = 2 * n + 2 * slots  # [B, N]
  seq[rows, key_pos] = keys[rows, order]
  seq[rows, key_pos + 1] = values[rows, order]
  weights = np.zeros((batch_size, total), np.float32)
  weights[rows, key_pos] = 1.0  # the target of position key_pos is seq[key_pos + 1]
  # Blank the answers in the inputs: a later query can never copy an earlier answer.
  blanked = seq.copy()
  blanked[rows, key_pos + 1] = 0
  input_ids = blanked[:, :-1]  # [B, L]
  return {"input_ids": input_ids.astype(np.int32),
          "targets": seq[:, 1:].astype(np.int32),
          "weights": weights[:, :-1]}


def answer_accuracy(logits: np.ndarray, batch: dict[str, np.ndarray]) -> float:
  """Fraction of answer positions whose argmax (over the first vocab ids) is the target."""
  pred = np.argmax(np.asarray(logits), axis=-1)  # [B, L]
  w = batch["weights"] > 0
  return float(np.mean(pred[w] == batch["targets"][w]))
