"""Prompts of the two document-IE protocols (based_model.md section 6).

lm-eval (HazyResearch/based-evaluation-harness, task swde / fda):
    text cut before the first "Summary of information above..."; every trailing `key:` removed
    (case-sensitive); prompt = text + " " + Key + ":"   (Key = key with its first letter upper)

demo (HazyResearch/ThunderKittens demos/based/document_ie_based.py):
    context = text.strip().strip("."), minus a trailing `key:` or `key` (case-insensitive);
    a = token position of the answer's first case-insensitive occurrence (0 when absent);
    window = tokens [start, min(n, start + W)) with start = max(0, a - W // 2), W = 1500;
    prompt = decode(window, skip special tokens) + ". " + Key + ":"
An answer missing from its document (upstream crashes) gets the window from the start and is
flagged `answer_found=False` so that the runner can count it.
"""

import dataclasses
from collections.abc import Sequence
from typing import Protocol

SUMMARY_MARKER = "Summary of information above..."
DEMO_CONTEXT_LENGTH = 1500


class TextTokenizer(Protocol):
  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


def capitalize_key(key: str) -> str:
  """First letter upper-cased, the rest unchanged ("zip code" -> "Zip code")."""
  return key[:1].upper() + key[1:]


def lm_eval_prompt(text: str, key: str) -> str:
  """The lm-eval prompt of one document (see the module docstring)."""
  doc = text.split(SUMMARY_MARKER, 1)[0]
  question = key + ":"
  while question and doc.endswith(question):
    doc = doc[:-len(question)]
  return doc + " " + capitalize_key(key) + ":"


@dataclasses.dataclass(frozen=True)
class DemoPrompt:
  prompt: str
  answer_found: bool  # False: the answer does not occur in the document (window from the start)
  window: tuple[int, int]  # [start, end) token range of the context that was kept


def _demo_context(text: str, key: str) -> str:
  context = text.strip().strip(".")
  low, k = context.lower(), key.lower()
  if k and low.endswith(k + ":"):
    context = context[:-(len(key) + 1)]
  elif k and low.endswith(k):
    context = context[:-len(key)]
  return context


def _decode_skipping_special(tokenizer: TextTokenizer, ids: list[int]) -> str:
  hf = getattr(tokenizer, "hf", None)  # based_jax.tokenizer.Tokenizer wraps a HF tokenizer
  if hf is not None:
    return hf.decode(ids, skip_special_tokens=True)
  return tokenizer.decode(ids)


def demo_prompt(text: str, key: str, value: str, tokenizer: TextTokenizer,
                context_length: int = DEMO_CONTEXT_LENGTH) -> DemoPrompt:
  """The demo prompt: a `context_length`-token window around the answer (module docstring)."""
  if context_length < 1:
    raise ValueError(f"context_length must be >= 1; got {context_length}")
  context = _demo_context(text, key)
  ids = tokenizer.encode(context)
  pos = context.lower().find(value.lower()) if value.strip() else -1
  found = pos >= 0
  answer_at = len(tokenizer.encode(context[:pos])) if found and pos > 0 else 0
  start = max(0, answer_at - context_length // 2)
  end = min(len(ids), start + context_length)
  window = _decode_skipping_special(tokenizer, ids[start:end])
  return DemoPrompt(window + ". " + capitalize_key(key) + ":", found, (start, end))
