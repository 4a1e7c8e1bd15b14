"""Batched document-IE evaluation of one model through `based_jax.generation.generate`.

Prompts are tokenized once, sorted by length (longest first) and cut into batches of
`batch_size`, so rows of a batch need little left padding; the last batch is filled up with
copies of its last row (results dropped) so that every batch has the same shape and the
compiled program is reused (prompt lengths are bucketed to powers of two by `generate`).

Protocols (see prompts.py / metrics.py): "lm-eval" generates 48 greedy tokens, keeps the text
before the first newline (EOS is not a stop, as in the harness: its text stays in the
prediction) and scores `contains`; "demo" generates exactly 48 tokens and scores the prefix match.

Prompt length: the harness left-truncates every prompt to its last `2048 - 48 = 2000` tokens
(HFLM `max_length - max_gen_toks`); `max_prompt_tokens` does the same (default: that value for
lm-eval, no limit for demo, whose windows are short) and every cut prompt is counted.
"""

import dataclasses
import time
from collections.abc import Sequence

from based_jax.evaluation import metrics, prompts
from based_jax.evaluation.data import Example
from based_jax.generation import generate

PROTOCOLS = ("lm-eval", "demo")
MAX_NEW_TOKENS = 48
HARNESS_MAX_LENGTH = 2048  # lm-eval BasedLMWrapper max_length


@dataclasses.dataclass(frozen=True)
class Prediction:
  index: int
  key: str
  value: str
  prediction: str
  correct: bool
  prompt_tokens: int  # before any left truncation
  answer_found: bool  # demo: the answer occurs in the document (lm-eval: always True)
  truncated: bool  # the prompt was cut to its last max_prompt_tokens tokens


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Scores and timings of one model on one task.

  total_s: wall time of all generate calls (compilation included); compile_s: compilation;
  tokens_per_s: decoded positions (loop steps x real rows) per second of generation time
  (compilation excluded); missing_answers: demo examples whose answer is not in the document;
  truncated_prompts: prompts cut to their last max_prompt_tokens tokens.
  """

  model: str
  task: str
  protocol: str
  n: int
  correct: int
  accuracy: float
  total_s: float
  compile_s: float
  tokens_per_s: float
  prompt_tokens: int
  new_tokens: int
  missing_answers: int
  truncated_prompts: int
  predictions: tuple[Prediction, ...]

  def summary(self) -> dict:
    """Everything but the per-example predictions (a results-table row)."""
    out = dataclasses.asdict(self)
    out.pop("predictions")
    return out


def build_prompt(example: Example, protocol: str, tokenizer,
                 context_length: int = prompts.DEMO_CONTEXT_LENGTH) -> tuple[str, bool]:
  """(prompt text, answer_found) of one example under `protocol`."""
  if protocol == "lm-eval":
    return prompts.lm_eval_prompt(example.text, example.key), True
  if protocol == "demo":
    p = prompts.demo_prompt(example.text, example.key, example.value, tokenizer, context_length)
    return p.prompt, p.answer_found
  raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")


def evaluate(model, params, tokenizer, examples: Sequence[Example], *, task: str,
             protocol: str = "lm-eval", batch_size: int = 8,
             max_new_tokens: int = MAX_NEW_TOKENS,
             context_length: int = prompts.DEMO_CONTEXT_LENGTH, model_name: str = "model",
             max_prompt_tokens: int | None | str = "auto", progress: bool = True) -> EvalResult:
  """Runs every example through `generate` (greedy) and scores it. See the module docstring.

  max_prompt_tokens: "auto" (lm-eval: 2048 - max_new_tokens, demo: None), None (no limit) or
    an int: longer prompts keep their last max_prompt_tokens tokens (counted).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
  if not examples:
    raise ValueError("examples is empty: nothing to evaluate")
  if max_prompt_tokens == "auto":
    max_prompt_tokens = HARNESS_MAX_LENGTH - max_new_tokens if protocol == "lm-eval" else None
  if max_prompt_tokens is not None and (isinstance(max_prompt_tokens, bool) or not isinstance(
      max_prompt_tokens, int) or max_prompt_tokens < 1):
    raise ValueError(f"max_prompt_tokens must be 'auto', None or a positive int; got "
                     f"{max_prompt_tokens!r}")
  vocab_padded = getattr(getattr(model, "config", None), "vocab_size_padded", None)
  if vocab_padded is not None and tokenizer.vocab_size > vocab_padded:
    raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                     f"{vocab_padded}; pass the checkpoint's tokenizer")
  built = [build_prompt(e, protocol, tokenizer, context_length) for e in examples]
  encoded = [tokenizer.encode(p) for p, _ in built]
  order = sorted(range(len(examples)), key=lambda i: -len(encoded[i]))
  stops = ("\n",) if protocol == "lm-eval" else ()  # no EOS stop in either protocol (upstream)
  score = metrics.SCORERS[protocol]

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  texts: dict[int, str] = {}
  total_s = compile_s = 0.0
  decoded = new_tokens = 0
  batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
  bar = tqdm(batches, desc=f"{model_name} {task}/{protocol}", unit="batch", disable=not progress)
  for batch in bar:
    texts_in = [built[i][0] for i in batch]
    texts_in += [texts_in[-1]] * (batch_size - len(batch))  # same shape for every call
    ids, mask = tokenizer.encode_batch(texts_in)  # [B, L] left-padded, mask 0 at pads
    if max_prompt_tokens is not None:  # left truncation = the last columns of a left-padded batch
      ids, mask = ids[:, -max_prompt_tokens:], mask[:, -max_prompt_tokens:]  # [B, <= max]
    t0 = time.perf_counter()
    out = generate(model, params, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=None,
                   pad_token_id=tokenizer.pad_token_id, stop_strings=stops, tokenizer=tokenizer,
                   vocab_size=tokenizer.vocab_size)
    total_s += time.perf_counter() - t0
    compile_s += out.compile_s
    decoded += out.steps * len(batch)
    new_tokens += int(out.lengths[:len(batch)].sum())
    for row, i in enumerate(batch):
      texts[i] = metrics.first_line(out.texts[row]) if protocol == "lm-eval" else out.texts[row]
  generation_s = max(total_s - compile_s, 1e-9)

  limit = max_prompt_tokens if max_prompt_tokens is not None else float("inf")
  preds = []
  for i, e in enumerate(examples):
    preds.append(Prediction(index=e.index, key=e.key, value=e.value, prediction=texts[i],
                            correct=bool(score(texts[i], e.value)), prompt_tokens=len(encoded[i]),
                            answer_found=built[i][1], truncated=len(encoded[i]) > limit))
  correct = sum(p.correct for p in preds)
  return EvalResult(model=model_name, task=task, protocol=protocol, n=len(preds), correct=correct,
                    accuracy=correct / len(preds), total_s=total_s, compile_s=compile_s,
                    tokens_per_s=decoded / generation_s,
                    prompt_tokens=sum(len(r) for r in encoded), new_tokens=new_tokens,
                    missing_answers=sum(not p.answer_found for p in preds),
                    truncated_prompts=sum(p.truncated for p in preds),
                    predictions=tuple(preds))
