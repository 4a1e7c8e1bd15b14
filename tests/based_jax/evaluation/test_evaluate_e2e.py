"""End to end on tiny random checkpoints of all three model kinds (Based, attention, Mamba).

- Each hub-format checkpoint converts (the converter CLI) and `generate()` serves it: greedy
  tokens of a left-padded batch equal the PyTorch reference's recurrent greedy generation.
- `based-jax evaluate` (cli.main) with three models on a local JSON-lines fixture writes one
  results row per model (same columns), predictions that equal the torch reference's greedy
  continuations cut at the newline, and accuracies that agree with the predictions.
"""

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from based_jax.evaluation import cli, prompts  # pylint: disable=g-import-not-at-top
from based_jax.generation import generate  # pylint: disable=g-import-not-at-top
from based_jax.pretrained import from_pretrained  # pylint: disable=g-import-not-at-top
from based_jax.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
from convert.__main__ import main as convert_main  # pylint: disable=g-import-not-at-top
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top
from tests.torch_ref import mamba as tm  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

VOCAB = 320  # >= the fixture tokenizer's ids
DOCS = [
    {"text": "Title: The Hobbit. Author: J. R. R. Tolkien. Year: 1937. Pages: 310. author:",
     "key": "author", "value": "Tolkien"},
    {"text": "Company: Acme Corp\nState: Delaware\nEmployees: 1200\nSummary of information "
             "above...\nstate:", "key": "state", "value": ["delaware", "DE"]},
    {"text": "Device: Infusion pump model X2. Applicant: MedTech Inc. Decision date: 2019. ",
     "key": "applicant", "value": "MedTech Inc"},
    {"text": "Film: Dune. Director: Denis Villeneuve. Runtime: 155 minutes.", "key": "genre",
     "value": "science fiction"},  # the answer is not in the document
    {"text": "Name: Ada Lovelace. Born: London. Field: mathematics and early computing.",
     "key": "born", "value": "London"},
]
MISSING_IN_DOC = 1  # DOCS[3]


def make_tokenizer(directory) -> str:
  """A byte-level BPE (GPT-2 style, <|endoftext|>) trained on the fixture text."""
  from tokenizers import ByteLevelBPETokenizer
  from transformers import PreTrainedTokenizerFast

  corpus = [d["text"] for d in DOCS] * 3
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                          special_tokens=["<|endoftext|>"])
  PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(
      str(directory))
  return str(directory)


def _based_case():
  cfg = ck.hub_config(n_embd=64, n_head=4, n_layer=4, vocab_size=VOCAB, la_layers=(1,),
                      swa_layers=(2,), window_size=16)
  return cfg, lambda seed: ck.TinyCase("based", cfg).build(seed), ck.write_hub_dir


def _attn_case():
  cfg = ck.hub_config(n_embd=64, n_head=4, n_layer=2, vocab_size=VOCAB, attention_only=True,
                      rotary_emb_fraction=0.5, pad_vocab_size_multiple=16)
  return cfg, lambda seed: ck.TinyCase("attn", cfg).build(seed), ck.write_hub_dir


def _mamba_case():
  cfg = tm.hub_config(d_model=32, n_layer=2, vocab_size=VOCAB)
  return cfg, lambda seed: tm.build_model(cfg, seed), tm.write_hub_dir


CASES = {"based": _based_case, "attn": _attn_case, "mamba": _mamba_case}
SEEDS = {"based": 11, "attn": 12, "mamba": 13}


def damped(model):
  """Shrinks the (tied) embedding: with O(1) random embeddings a tied head mostly copies the
  current token; small ones let the mixers decide, so outputs depend on the context."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("embedding.weight") or name.endswith("word_embeddings.weight"):
        p.mul_(0.05)
  return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  tok_dir = make_tokenizer(root / "tok")
  dirs, refs = {}, {}
  for name, make in CASES.items():
    cfg, build, write = make()
    write(root / f"{name}-torch", cfg, damped(build(SEEDS[name])))
    assert convert_main([str(root / f"{name}-torch"), str(root / name), "--quiet"]) == 0
    dirs[name] = str(root / name)
    refs[name] = damped(build(SEEDS[name])).double()
  # One more example whose gold value is taken from the Mamba reference's own continuation
  # (upper-cased), so that at least one prediction must score as correct.
  tokenizer = load_tokenizer(tok_dir)
  for doc in DOCS:
    cont = reference_continuation(refs["mamba"], tokenizer,
                                  prompts.lm_eval_prompt(doc["text"], doc["key"]), 48).strip()
    if cont:
      docs = DOCS + [{**doc, "value": cont[:4].upper()}]
      break
  else:
    raise AssertionError("every reference continuation is empty; change the seeds")
  data = root / "docs.jsonl"
  data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
  return {"root": root, "tok": tok_dir, "dirs": dirs, "refs": refs, "data": str(data),
          "docs": docs}


def reference_continuation(ref, tokenizer, prompt: str, num_new: int,
                           keep_last: int | None = None) -> str:
  """Torch greedy tokens from the prompt (its last `keep_last` tokens), decoded with special
  tokens kept (the harness does not stop at EOS), cut at the first newline."""
  ids = tokenizer.encode(prompt)
  ids = torch.tensor([ids[-keep_last:] if keep_last else ids])
  tokens = ref.generate_greedy(ids, num_new)[0].tolist()
  return tokenizer.decode(tokens).split("\n")[0]


@pytest.mark.parametrize("name", list(CASES))
def test_converted_checkpoint_served_by_generate_matches_torch(setup, name):
  """Left-padded, bucketed batch of 3 prompts, 64 new tokens, vs torch greedy per row."""
  model, params = from_pretrained(setup["dirs"][name], dtype=jnp.float32)
  rng = np.random.default_rng()
  rows = [rng.integers(0, VOCAB, n) for n in (3, 9, 20)]
  ids = np.zeros((3, 20), np.int32)
  mask = np.zeros((3, 20), np.int32)
  for i, r in enumerate(rows):
    ids[i, 20 - len(r):], mask[i, 20 - len(r):] = r, 1
  out = generate(model, params, ids, mask, max_new_tokens=64)
  for i, r in enumerate(rows):
    want = setup["refs"][name].generate_greedy(torch.from_numpy(r[None]), 64).numpy()[0]
    np.testing.assert_array_equal(out.tokens[i], want, err_msg=f"{name} row {i}")


def test_evaluate_three_models_lm_eval(setup, capsys):
  root = setup["root"]
  argv = ["--task", "swde", "--data", setup["data"], "--tokenizer", setup["tok"],
          "--dtype", "float32", "--batch-size", "2", "--no-progress",
          "--output", str(root / "preds.jsonl"), "--summary", str(root / "results.json")]
  for name in CASES:
    argv += ["--model", f"{name}={setup['dirs'][name]}"]
  assert cli.main(argv) == 0
  table = capsys.readouterr().out
  rows = json.loads((root / "results.json").read_text())
  assert [r["model"] for r in rows] == list(CASES)
  assert all(set(r) == set(rows[0]) for r in rows)  # the same shape for every model
  md = (root / "results.md").read_text()
  assert md.strip() == table.strip() and len(md.strip().splitlines()) == 2 + len(CASES)
  preds = [json.loads(line) for line in (root / "preds.jsonl").read_text().splitlines()]
  docs = setup["docs"]
  assert len(preds) == len(CASES) * len(docs)
  tokenizer = load_tokenizer(setup["tok"])
  for name, row in zip(CASES, rows):
    mine = sorted((p for p in preds if p["model"] == name), key=lambda p: p["index"])
    assert [p["index"] for p in mine] == list(range(len(docs)))
    for p, doc in zip(mine, docs):
      gold = doc["value"][0] if isinstance(doc["value"], list) else doc["value"]
      assert p["value"] == gold
      want = reference_continuation(setup["refs"][name], tokenizer,
                                    prompts.lm_eval_prompt(doc["text"], doc["key"]), 48)
      assert p["prediction"] == want, (name, p["index"])
      assert p["correct"] == (gold.lower() in want.lower())
    assert row["n"] == len(docs) and row["protocol"] == "lm-eval" and row["task"] == "swde"
    assert row["correct"] == sum(p["correct"] for p in mine)
    assert row["accuracy"] == pytest.approx(row["correct"] / len(docs))
    if name == "mamba":
      assert mine[-1]["correct"], "the example built from the reference's answer must score"
    assert row["total_s"] > 0 and row["tokens_per_s"] > 0 and row["missing_answers"] == 0
    assert row["truncated_prompts"] == 0  # every fixture prompt is far below 2000 tokens
  assert len({p["prediction"] for p in preds}) > 3  # outputs depend on model and document


def test_evaluate_demo_protocol_counts_missing_answers(setup, capsys, tmp_path):
  """demo: exactly 48 tokens, prefix match; the answer-less example is scored and counted.
  Runs the CLI's default bfloat16 policy (params stored bf16, Mamba A_log / D float32)."""
  argv = ["--task", "fda", "--protocol", "demo", "--data", setup["data"], "--tokenizer",
          setup["tok"], "--dtype", "bfloat16", "--batch-size", "4", "--limit", "4",
          "--no-progress", "--model", setup["dirs"]["mamba"], "--output", str(tmp_path / "p.jsonl"),
          "--summary", str(tmp_path / "s.json")]
  assert cli.main(argv) == 0
  capsys.readouterr()
  (row,) = json.loads((tmp_path / "s.json").read_text())
  assert row["model"] == "mamba" and row["n"] == 4 and row["missing_answers"] == MISSING_IN_DOC
  preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
  assert [p["answer_found"] for p in sorted(preds, key=lambda p: p["index"])] == [
      True, True, True, False]
  assert row["new_tokens"] == 4 * 48  # no EOS / newline stop in the demo protocol
  assert row["truncated_prompts"] == 0
  for p in preds:
    assert p["correct"] == p["prediction"].lower().strip().startswith(p["value"].lower().strip())


def test_long_prompts_keep_their_last_tokens(setup, capsys, tmp_path):
  """--max-prompt-tokens 20: every prompt is cut to its last 20 tokens (as the harness cuts to
  2000) and counted; predictions equal the torch reference run on those 20 tokens."""
  docs = setup["docs"][:3]
  argv = ["--task", "swde", "--data", setup["data"], "--tokenizer", setup["tok"], "--dtype",
          "float32", "--batch-size", "3", "--limit", "3", "--max-prompt-tokens", "20",
          "--no-progress", "--model", setup["dirs"]["attn"], "--output", str(tmp_path / "p.jsonl"),
          "--summary", str(tmp_path / "s.json")]
  assert cli.main(argv) == 0
  capsys.readouterr()
  (row,) = json.loads((tmp_path / "s.json").read_text())
  assert row["truncated_prompts"] == 3
  tokenizer = load_tokenizer(setup["tok"])
  preds = sorted((json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()),
                 key=lambda p: p["index"])
  for p, doc in zip(preds, docs):
    assert p["truncated"] and p["prompt_tokens"] > 20
    want = reference_continuation(setup["refs"]["attn"], tokenizer,
                                  prompts.lm_eval_prompt(doc["text"], doc["key"]), 48, keep_last=20)
    assert p["prediction"] == want


@pytest.mark.parametrize("argv,match", [
    (["--limit", "0"], "--limit must be >= 1"),
    (["--model", "a=x", "--model", "a=y"], "labels must be distinct"),
    (["--data", "/nonexistent/d.jsonl"], "no such file"),
    (["--model", "=x"], "expected LABEL=PATH"),
    (["--max-prompt-tokens", "-1"], "--max-prompt-tokens must be >= 0"),
])
def test_cli_usage_errors_exit_2(setup, capsys, argv, match):
  base = ["--task", "swde", "--tokenizer", setup["tok"], "--data", setup["data"]]
  if "--model" not in argv:
    base += ["--model", setup["dirs"]["attn"]]
  assert cli.main(base + argv) == 2
  assert re.search(match, capsys.readouterr().err)
