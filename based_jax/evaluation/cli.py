"""`based-jax evaluate`: document-IE accuracy (SWDE / FDA) of one or more checkpoints.

  based-jax evaluate --task swde --model hazyresearch/based-360m
  based-jax evaluate --task fda --protocol demo --limit 64 --batch-size 16 \\
      --model based=hazyresearch/based-360m --model attn=hazyresearch/attn-360m \\
      --model mamba=hazyresearch/mamba-360m --output preds.jsonl --summary results.json

Every model gets one row of the same results table (accuracy, time, tokens/s), printed as
markdown; --summary writes it as JSON plus a `.md` copy next to it; --output writes every
prediction as JSON lines (one object per example and model). Bad input exits with 2.
"""

import argparse
import json
import sys
from pathlib import Path

DTYPES = ("bfloat16", "float32")
IMPLS = ("auto", "reference", "chunked", "pallas", "ffi")
EXIT_USAGE = 2
TABLE_COLUMNS = (("model", "model"), ("task", "task"), ("protocol", "protocol"), ("n", "n"),
                 ("accuracy", "accuracy (%)"), ("total_s", "total time (s)"),
                 ("compile_s", "compile (s)"), ("tokens_per_s", "tokens/s"),
                 ("missing_answers", "answer not in doc"), ("truncated_prompts", "prompts cut"))


class UsageError(Exception):
  """Bad user input: one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
  from based_jax.evaluation.data import TASKS  # pylint: disable=import-outside-toplevel
  from based_jax.evaluation.runner import MAX_NEW_TOKENS, PROTOCOLS  # pylint: disable=import-outside-toplevel

  p = argparse.ArgumentParser(
      prog="based-jax evaluate",
      description="Document information extraction (SWDE / FDA, Arora et al. 2024): greedy "
      "generation with each model, scored by the lm-eval harness rule (contains) or the "
      "ThunderKittens demo rule (prefix match).")
  p.add_argument("--task", required=True, choices=sorted(TASKS),
                 help="swde = hazyresearch/based-swde-v2, fda = hazyresearch/based-fda")
  p.add_argument("--model", action="append", required=True, metavar="[LABEL=]PATH_OR_HUB_ID",
                 help="checkpoint directory or hub id; repeat for a comparison table")
  p.add_argument("--protocol", choices=PROTOCOLS, default="lm-eval",
                 help="lm-eval (default): whole document, until newline, contains; demo: "
                 "1500-token window around the answer, 48 tokens, prefix match")
  p.add_argument("--limit", type=int, default=None, metavar="N",
                 help="evaluate the first N examples (the demo scored 64)")
  p.add_argument("--batch-size", type=int, default=8, metavar="B", help="rows per generate call")
  p.add_argument("--data", default=None, metavar="PATH",
                 help="local .parquet / .jsonl (fields text, key, value) instead of the hub")
  p.add_argument("--output", default=None, metavar="FILE.jsonl", help="write predictions here")
  p.add_argument("--summary", default=None, metavar="FILE.json",
                 help="write the results table as JSON (and markdown to FILE.md)")
  p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="compute dtype")
  p.add_argument("--impl", choices=IMPLS, default="auto",
                 help="linear-attention implementation of Based models (default auto)")
  p.add_argument("--tokenizer", default=None, metavar="NAME_OR_PATH",
                 help="tokenizer (default: the checkpoint's own, else gpt2)")
  p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, metavar="N",
                 help=f"generated tokens per example (default {MAX_NEW_TOKENS})")
  p.add_argument("--context-length", type=int, default=1500, metavar="W",
                 help="demo protocol: tokens of document kept around the answer (default 1500)")
  p.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                 help="keep the last N tokens of longer prompts (counted). Default: 2000 "
                 "(= 2048 - 48, as the lm-eval harness) for lm-eval, no limit for demo; 0 = "
                 "no limit")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _check_args(args) -> None:
  if args.max_prompt_tokens is not None and args.max_prompt_tokens < 0:
    raise UsageError(f"--max-prompt-tokens must be >= 0; got {args.max_prompt_tokens}")
  for name in ("limit", "batch_size", "max_new_tokens", "context_length"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise UsageError(f"--{name.replace('_', '-')} must be >= 1; got {value}")


def _prompt_limit(value: int | None):
  """--max-prompt-tokens: None -> protocol default ("auto"), 0 -> no limit, else N."""
  if value is None:
    return "auto"
  return None if value == 0 else value


def parse_model_spec(spec: str) -> tuple[str, str]:
  """"label=path" -> (label, path); "path" -> (its last path component, path)."""
  label, sep, path = spec.partition("=")
  if sep and label and path:
    return label, path
  if sep:
    raise UsageError(f"--model {spec!r}: expected LABEL=PATH or PATH")
  return Path(spec.rstrip("/")).name or spec, spec


def markdown_table(rows: list[dict]) -> str:
  """The results table (one row per model) as GitHub markdown."""
  def cell(key, value):
    if key == "accuracy":
      return f"{100 * value:.2f}"
    if isinstance(value, float):
      return f"{value:.2f}"
    return str(value)

  head = "| " + " | ".join(t for _, t in TABLE_COLUMNS) + " |"
  sep = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
  body = ["| " + " | ".join(cell(k, r[k]) for k, _ in TABLE_COLUMNS) + " |" for r in rows]
  return "\n".join([head, sep, *body])


def run(args, out=None, err=None) -> list[dict]:
  """Evaluates every --model; returns the results table rows."""
  out, err = out or sys.stdout, err or sys.stderr
  _check_args(args)
  models = [parse_model_spec(s) for s in args.model]
  labels = [label for label, _ in models]
  if len(set(labels)) != len(labels):
    raise UsageError(f"--model labels must be distinct; got {labels} (use LABEL=PATH)")

  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from based_jax import pretrained  # pylint: disable=import-outside-toplevel
  from based_jax.evaluation import data, runner  # pylint: disable=import-outside-toplevel
  from based_jax.tokenizer import (TokenizerUnavailableError, load_tokenizer,  # pylint: disable=import-outside-toplevel
                                   resolve_tokenizer_name)

  try:
    examples = data.load_examples(args.task, args.data, args.limit)
  except (data.DataUnavailableError, ValueError) as e:
    raise UsageError(str(e)) from e
  print(f"[based-jax evaluate] {len(examples)} {args.task} examples, protocol {args.protocol}",
        file=err)
  dtype = getattr(jnp, args.dtype)
  rows = []
  pred_lines = []
  for label, path in models:
    try:
      tokenizer = load_tokenizer(resolve_tokenizer_name(args.tokenizer, path))
    except TokenizerUnavailableError as e:
      raise UsageError(str(e)) from e
    try:
      model, params = pretrained.from_pretrained(path, dtype=dtype, param_dtype=dtype,
                                                 la_impl=args.impl)
    except (OSError, ValueError) as e:
      raise UsageError(f"could not load the model {path!r}: {e}") from e
    try:
      result = runner.evaluate(model, params, tokenizer, examples, task=args.task,
                               protocol=args.protocol, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens,
                               context_length=args.context_length, model_name=label,
                               max_prompt_tokens=_prompt_limit(args.max_prompt_tokens),
                               progress=not args.no_progress)
    except ValueError as e:
      raise UsageError(f"{label}: {e}") from e
    row = result.summary()
    rows.append(row)
    print(f"[based-jax evaluate] {label}: accuracy {100 * result.accuracy:.2f}% "
          f"({result.correct}/{result.n}); {result.total_s:.1f} s (compile {result.compile_s:.1f} s); "
          f"{result.tokens_per_s:.1f} tokens/s; answer not in document: {result.missing_answers}; "
          f"prompts cut: {result.truncated_prompts}",
          file=err)
    for p in result.predictions:
      pred_lines.append(json.dumps({"model": label, "task": args.task, "protocol": args.protocol,
                                    **p.__dict__}, ensure_ascii=False))
  table = markdown_table(rows)
  print(table, file=out)
  if args.output:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(pred_lines) + "\n", encoding="utf-8")
  if args.summary:
    summary = Path(args.summary)
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    summary.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
  return rows


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
  try:
    run(args)
  except UsageError as e:
    print(f"based-jax evaluate: error: {e}", file=sys.stderr)
    return EXIT_USAGE
  return 0


if __name__ == "__main__":
  sys.exit(main())
