"""Prompt construction of both protocols and both metrics, on hand-written documents.

Every expected prompt below was derived by hand from the rules in based_model.md section 6
(not by running the code). The demo tests use a one-character-per-token tokenizer, so token
windows are character windows that can be counted by eye.
"""

import pytest

from based_jax.evaluation import metrics, prompts


class CharTokenizer:
  """token id = code point; decode joins the characters back."""

  def encode(self, text):
    return [ord(ch) for ch in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


LM_EVAL_CASES = [
    # trailing "name:" removed once, the document's own trailing space kept, then " Name:"
    ("Name: Alan Turing. Born: 1912. Field: Computing. name:", "name",
     "Name: Alan Turing. Born: 1912. Field: Computing.  Name:"),
    # cut before the first summary marker; what follows it (including "author:") is gone
    ("Title: Dune\nAuthor: Frank Herbert\nSummary of information above...\nauthor: X\nauthor:",
     "author", "Title: Dune\nAuthor: Frank Herbert\n Author:"),
    # every repetition of the trailing question is removed
    ("City: Paris. city:city:", "city", "City: Paris.  City:"),
    # the suffix check is case-sensitive: "ZIP CODE:" stays; only the first letter is upper-cased
    ("Zip: 94305. ZIP CODE:", "zip code", "Zip: 94305. ZIP CODE: Zip code:"),
    # a marker at the very start leaves an empty document
    ("Summary of information above... year: 1999", "year", " Year:"),
]


@pytest.mark.parametrize("text,key,want", LM_EVAL_CASES)
def test_lm_eval_prompt(text, key, want):
  assert prompts.lm_eval_prompt(text, key) == want


DEMO_CASES = [
    # context "The price is 42 dollars. " (trailing "price:" removed); "42" at char 13 ->
    # window start max(0, 13 - 10 // 2) = 8, end 18 -> "e is 42 do"
    ("  The price is 42 dollars. price: ", "price", "42", 10, "e is 42 do. Price:", True, (8, 18)),
    # the same document with the default 1500-token window keeps the whole context
    ("  The price is 42 dollars. price: ", "price", "42", 1500,
     "The price is 42 dollars. . Price:", True, (0, 25)),
    # answer absent: window from the start, flagged; trailing dots stripped first
    ("Color: red...", "size", "XL", 4, "Colo. Size:", False, (0, 4)),
    # leading "." stripped, "AUTHOR" suffix removed case-insensitively, answer found ignoring case
    # at char 8 of "Author: JOHN smith. " -> start 8 - 3 = 5, end 11 -> "r: JOH"
    (".Author: JOHN smith. AUTHOR", "author", "John Smith", 6, "r: JOH. Author:", True, (5, 11)),
    # answer at the very start: window [0, W)
    ("abcdefgh", "k", "ab", 3, "abc. K:", True, (0, 3)),
]


@pytest.mark.parametrize("text,key,value,width,want,found,window", DEMO_CASES)
def test_demo_prompt(text, key, value, width, want, found, window):
  got = prompts.demo_prompt(text, key, value, CharTokenizer(), context_length=width)
  assert got.prompt == want
  assert got.answer_found is found
  assert got.window == window


def test_demo_prompt_empty_answer_counts_as_missing():
  got = prompts.demo_prompt("some text", "k", "  ", CharTokenizer(), context_length=4)
  assert got.prompt == "some. K:" and got.answer_found is False


def test_demo_prompt_rejects_bad_width():
  with pytest.raises(ValueError, match="context_length must be >= 1"):
    prompts.demo_prompt("x", "k", "x", CharTokenizer(), context_length=0)


@pytest.mark.parametrize("prediction,value,want", [
    ("The answer is Alan TURING.", "alan turing", True),   # anywhere, any case
    ("axb", "a.b", False),                                 # literal text, not a regex
    ("see A.B here", "a.b", True),
    ("Turing", "Alan Turing", False),
    ("", "x", False),
])
def test_contains(prediction, value, want):
  assert metrics.contains(prediction, value) is want


@pytest.mark.parametrize("prediction,value,want", [
    ("  alan turing was born", "Alan Turing ", True),     # stripped and lower-cased
    ("Dr. Alan Turing", "Alan Turing", False),            # must be a prefix
    ("Alan", "Alan Turing", False),
    ("1912\nmore", "1912", True),
])
def test_prefix_match(prediction, value, want):
  assert metrics.prefix_match(prediction, value) is want


def test_first_line():
  assert metrics.first_line(" Paris\nFrance") == " Paris"
  assert metrics.first_line("no newline") == "no newline"
