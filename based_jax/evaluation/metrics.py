"""Scores of the two protocols: lm-eval `contains` and the demo's prefix match."""

import re


def contains(prediction: str, value: str) -> bool:
  """lm-eval: the gold value occurs anywhere in the prediction, ignoring case (literal text)."""
  return re.search(re.escape(value), prediction, re.IGNORECASE) is not None


def prefix_match(prediction: str, value: str) -> bool:
  """demo: the stripped, lower-cased prediction starts with the stripped, lower-cased value."""
  return prediction.lower().strip().startswith(value.lower().strip())


def first_line(text: str) -> str:
  """The text before the first newline (lm-eval generates until "\\n")."""
  return text.split("\n", 1)[0]


SCORERS = {"lm-eval": contains, "demo": prefix_match}
