"""Batched document-IE evaluation of one model through `based_jax.generation.generate`.

Prompts are tokenized once, sorted by length (longest first) and cut into batches of
`batch_size`, so rows of a batch need little left padding; the last batch is filled up with
copies of its last row (results dropped) so that every batch has the same shape and the
compiled program is reused (prompt lengths are bucketed to powers of two by `generate`).

Protocols (see prompts.py / metrics.py): "lm-eval" generates greedily until a newline or EOS
(at most 48 tokens) and scores `contains`; "demo" generates exactly 48 tokens and scores the
prefix match.
"""

import dataclasses
import time
from collections.abc import Sequence

from based_jax.evaluation import metrics, prompts
from based_jax.evaluation.data import Example
from based_jax.generation import generate

PROTOCOLS = ("lm-eval", "demo")
MAX_NEW_TOKENS = 48


@dataclasses.dataclass(frozen=True)
class Prediction:
  index: int
  key: str
  value: str
  prediction: str
  correct: bool
  prompt_tokens: int
  answer_found: bool  # demo: the answer occurs in the document (lm-eval: always True)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Scores and timings of one model on one task.

  total_s: wall time of all generate calls (compilation included); compile_s: compilation;
  tokens_per_s: decoded positions (loop steps x real rows) per second of generation time
  (compilation excluded); missing_answers: demo examples whose answer is not in the document.
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
             progress: bool = True) -> EvalResult:
  """Runs every example through `generate` (greedy) and scores it. See the module docstring."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
  if not examples:
    raise ValueError("examples is empty: nothing to evaluate")
  vocab_padded = getattr(getattr(model, "config", None), "vocab_size_padded", None)
  if vocab_padded is not None and tokenizer.vocab_size > vocab_padded:
    raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                     f"{vocab_padded}; pass the checkpoint's tokenizer")
  built = [build_prompt(e, protocol, tokenizer, context_length) for e in examples]
  encoded = [tokenizer.encode(p) for p, _ in built]
  order = sorted(range(len(examples)), key=lambda i: -len(encoded[i]))
  if protocol == "lm-eval":
    eos, stops = tokenizer.eos_token_id, ("\n",)
  else:
    eos, stops = None, ()  # upstream demo: exactly max_new_tokens tokens, no stop
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
    t0 = time.perf_counter()
    out = generate(model, params, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                   pad_token_id=tokenizer.pad_token_id, stop_strings=stops, tokenizer=tokenizer,
                   vocab_size=tokenizer.vocab_size)
    total_s += time.perf_counter() - t0
    compile_s += out.compile_s
    decoded += out.steps * len(batch)
    new_tokens += int(out.lengths[:len(batch)].sum())
    for row, i in enumerate(batch):
      texts[i] = metrics.first_line(out.texts[row]) if protocol == "lm-eval" else out.texts[row]
  generation_s = max(total_s - compile_s, 1e-9)

  preds = []
  for i, e in enumerate(examples):
    preds.append(Prediction(index=e.index, key=e.key, value=e.value, prediction=texts[i],
                            correct=bool(score(texts[i], e.value)), prompt_tokens=len(encoded[i]),
                            answer_found=built[i][1]))
  correct = sum(p.correct for p in preds)
  return EvalResult(model=model_name, task=task, protocol=protocol, n=len(preds), correct=correct,
                    accuracy=correct / len(preds), total_s=total_s, compile_s=compile_s,
                    tokens_per_s=decoded / generation_s,
                    prompt_tokens=sum(len(r) for r in encoded), new_tokens=new_tokens,
                    missing_answers=sum(not p.answer_found for p in preds),
                    predictions=tuple(preds))
