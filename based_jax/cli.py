"""The `based-jax` command line: generate text, convert checkpoints, run benchmarks.

  based-jax generate --model hazyresearch/based-360m --prompt "The capital of France is"
  based-jax convert ...        (the checkpoint converter, `convert.__main__`)
  based-jax bench e2e ...      (benchmarks/e2e.py; `bench kernels` runs benchmarks/kernels.py)
  based-jax evaluate ...       (document-IE accuracy, `based_jax.evaluation.cli`)
  based-jax train ...          (training and fine-tuning, `based_jax.training.cli`)

Bad input (empty prompt, prompt over --max-prompt-tokens, bad sampling values, unknown model
path, tokenizer not available offline) prints one `based-jax: error: ...` line and exits with 2.
"""

import argparse
import inspect
import runpy
import sys
import time
from pathlib import Path

DTYPES = ("bfloat16", "float32")
IMPLS = ("auto", "reference", "chunked", "pallas", "ffi")
ATTN_IMPLS = ("auto", "xla", "cudnn")  # = mixers.ATTENTION_IMPLS, not imported: --help stays light
MLP_IMPLS = ("xla", "pallas", "auto")  # = ops.GATED_LINEAR_IMPLS, likewise
BENCHMARKS = ("e2e", "kernels")
DEFAULT_MAX_PROMPT_TOKENS = 8192
EXIT_USAGE = 2


class UsageError(Exception):
  """Bad user input: reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="based-jax",
      description="Based language models (Arora et al. 2024) in JAX: generate, convert, "
      "evaluate, train, bench.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

  gen = sub.add_parser(
      "generate", help="generate text from a prompt (streams to the terminal)",
      description="Generate text with a Based / attention checkpoint. The whole decode loop runs "
      "compiled on the device; the first call for a new batch size / prompt bucket compiles.")
  gen.add_argument("prompt_text", nargs="*", metavar="PROMPT",
                   help="prompt text (the same as --prompt; several are batched together)")
  gen.add_argument("--model", default=None, metavar="PATH_OR_HUB_ID",
                   help="checkpoint directory or hub id, e.g. hazyresearch/based-360m (default: "
                   "the small byte-level Based model shipped in the package, which runs offline)")
  gen.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="prompt text; repeat for several prompts (batched together)")
  gen.add_argument("--prompt-file", metavar="FILE",
                   help="read one more prompt from FILE (whole file; '-' reads stdin)")
  gen.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="tokens to generate per prompt (default 64)")
  gen.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy (default); > 0 samples")
  gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
  gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
  gen.add_argument("--seed", type=int, default=0, help="PRNG seed for sampling (default 0)")
  gen.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="rows per generate call; with one prompt, the prompt is repeated B times "
                   "(default: all prompts in one batch)")
  gen.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="compute dtype")
  gen.add_argument("--impl", choices=IMPLS, default="auto",
                   help="linear-attention implementation (default auto)")
  gen.add_argument("--attn-impl", choices=ATTN_IMPLS, default="auto",
                   help="softmax attention (sliding window, full MHA) in the prompt pass: auto "
                   "(cuDNN for unpadded batches on a GPU in bf16, else XLA), xla, or cudnn "
                   "(cuDNN for every batch, left-padded prompt buckets included; an error where "
                   "it cannot run)")
  gen.add_argument("--mlp-impl", choices=MLP_IMPLS, default="xla",
                   help="the SwiGLU MLPs' fc1 + gate: xla (the default), pallas (the gate fused "
                   "into a Mosaic GPU gemm; Hopper, bfloat16; an error where it cannot run) or "
                   "auto (pallas for prompts of more than 4096 tokens in all, where it can run)")
  gen.add_argument("--tokenizer", default=None, metavar="NAME_OR_PATH",
                   help="tokenizer: a directory, a hub id, or 'byte' (default: the checkpoint "
                   "directory's own files, else config.json's \"tokenizer\", else gpt2)")
  gen.add_argument("--max-prompt-tokens", type=int, default=DEFAULT_MAX_PROMPT_TOKENS, metavar="N",
                   help=f"reject longer prompts (default {DEFAULT_MAX_PROMPT_TOKENS})")
  gen.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop string, checked after generation (repeatable)")
  gen.add_argument("--ignore-eos", action="store_true",
                   help="keep generating after the end-of-text token")
  gen.add_argument("--no-stream", action="store_true",
                   help="print only at the end (streaming syncs the device once per token)")

  sub.add_parser("convert", add_help=False,
                 help="convert a PyTorch checkpoint (arguments go to the converter; see "
                 "`based-jax convert --help`)")
  sub.add_parser("evaluate", add_help=False,
                 help="document-IE accuracy on SWDE / FDA (see `based-jax evaluate --help`)")
  sub.add_parser("train", add_help=False,
                 help="train or fine-tune a model (see `based-jax train --help`)")
  sub.add_parser("bench", add_help=False,
                 help=f"run a benchmark: `based-jax bench {{{','.join(BENCHMARKS)}}} [ARGS]` "
                 "(see `based-jax bench e2e --help`)")
  return parser


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def _read_prompts(args) -> list[str]:
  prompts = list(args.prompt_text) + list(args.prompt)
  if args.prompt_file:
    if args.prompt_file == "-":
      prompts.append(sys.stdin.read())
    else:
      path = Path(args.prompt_file)
      if not path.is_file():
        raise UsageError(f"--prompt-file: no such file: {args.prompt_file}")
      prompts.append(path.read_text(encoding="utf-8"))
  if not prompts:
    raise UsageError("give a prompt: based-jax generate TEXT, --prompt TEXT or --prompt-file FILE")
  for i, text in enumerate(prompts):
    if not text.strip():
      raise UsageError(f"prompt {i} is empty; give at least one non-blank character")
  return prompts


def _sampling_from_args(args):
  from based_jax.sampling import SamplingConfig

  try:
    return SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
  except ValueError as err:
    message = str(err)
    for field in ("temperature", "top_k", "top_p"):
      message = message.replace(f"SamplingConfig.{field}", "--" + field.replace("_", "-"))
    raise UsageError(message) from err


def _check_generate_args(args) -> None:
  if args.max_new_tokens < 1:
    raise UsageError(f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
  if args.batch_size is not None and args.batch_size < 1:
    raise UsageError(f"--batch-size must be >= 1; got {args.batch_size}")
  if args.max_prompt_tokens < 1:
    raise UsageError(f"--max-prompt-tokens must be >= 1; got {args.max_prompt_tokens}")
  if any(not s for s in args.stop):
    raise UsageError("--stop must not be empty")


def _load_model(name: str, dtype: str, impl: str, attn_impl: str = "auto",
                mlp_impl: str = "xla"):
  """(model, params) from a checkpoint directory or hub id; params stored in `dtype`."""
  import jax.numpy as jnp

  from based_jax import pretrained

  jdtype = getattr(jnp, dtype)
  return pretrained.from_pretrained(name, dtype=jdtype, param_dtype=jdtype, la_impl=impl,
                                    attn_impl=attn_impl, mlp_impl=mlp_impl)


def _check_mlp_impl(model, mlp_impl: str) -> None:
  """--mlp-impl pallas where the kernel cannot run: a usage error before generating. Models
  without SwiGLU MLPs (Mamba) ignore the flag."""
  if mlp_impl != "pallas" or not hasattr(model.config, "mlp_fc1_bias"):
    return
  import importlib

  gated_linear = importlib.import_module("based_jax.ops.gated_linear")
  reason = gated_linear.pallas_model_reason(model.dtype, model.config.mlp_fc1_bias)
  if reason is not None:
    raise UsageError(f"--mlp-impl pallas: {reason}")


def _check_attn_impl(model, attn_impl: str) -> None:
  """--attn-impl cudnn where cuDNN cannot run: a usage error before generating, not a traceback
  from inside the compiled program. Models without softmax-attention layers ignore the flag."""
  if attn_impl != "cudnn":
    return
  from based_jax.mixers.mha import cudnn_unavailable_reason

  kinds = getattr(model.config, "layer_types", ())
  if not any(kind in ("sliding_window", "mha") for kind in kinds):
    return
  reason = cudnn_unavailable_reason(model.dtype, model.config.head_dim)
  if reason is not None:
    raise UsageError(f"--attn-impl cudnn: {reason}")


class _Streamer:
  """Prints row 0's new text as tokens arrive (decodes the whole row so far each step)."""

  def __init__(self, tokenizer, out):
    self.tokenizer = tokenizer
    self.out = out
    self.ids: list[int] = []
    self.printed = ""

  def __call__(self, step, tokens, active):
    del step
    if not active[0]:
      return
    self.ids.append(int(tokens[0]))
    text = self.tokenizer.decode(self.ids)
    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
      return
    if text.startswith(self.printed):
      self.out.write(text[len(self.printed):])
      self.out.flush()
    self.printed = text


def _batches(prompts: list[str], batch_size: int | None) -> list[list[str]]:
  if batch_size is None:
    return [prompts]
  if len(prompts) == 1:
    return [prompts * batch_size]
  return [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]


def cmd_generate(args, out=None, err=None) -> int:
  out = out or sys.stdout
  err = err or sys.stderr
  _check_generate_args(args)
  if args.model is None:
    from based_jax import assets

    args.model = assets.asset_dir()
  sampling = _sampling_from_args(args)
  prompts = _read_prompts(args)

  from based_jax.generation import generate
  from based_jax.tokenizer import TokenizerUnavailableError, load_tokenizer, resolve_tokenizer_name

  try:
    tokenizer = load_tokenizer(resolve_tokenizer_name(args.tokenizer, args.model))
  except TokenizerUnavailableError as e:
    raise UsageError(str(e)) from e
  encoded = []
  for batch in _batches(prompts, args.batch_size):
    try:
      encoded.append(
          (batch, tokenizer.encode_batch(batch, max_prompt_tokens=args.max_prompt_tokens)))
    except ValueError as e:
      raise UsageError(str(e).replace("max_prompt_tokens=", "--max-prompt-tokens ")) from e

  t0 = time.perf_counter()
  try:
    model, params = _load_model(args.model, args.dtype, args.impl, args.attn_impl,
                                args.mlp_impl)
  except (OSError, ValueError) as e:
    raise UsageError(f"could not load the model {args.model!r}: {e}") from e
  load_s = time.perf_counter() - t0
  _check_attn_impl(model, args.attn_impl)
  _check_mlp_impl(model, args.mlp_impl)
  model_vocab = model.config.vocab_size_padded
  if tokenizer.vocab_size > model_vocab:
    raise UsageError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                     f"{model_vocab}; pass the checkpoint's tokenizer with --tokenizer")
  print(f"[based-jax] loaded {args.model} ({args.dtype}, impl={args.impl}, "
        f"attn_impl={args.attn_impl}, mlp_impl={args.mlp_impl}) in {load_s:.1f} s", file=err)

  eos = None if args.ignore_eos else tokenizer.eos_token_id
  for batch, (input_ids, mask) in encoded:
    streamer = None if args.no_stream else _Streamer(tokenizer, out)
    if streamer is not None:
      out.write(batch[0])
      out.flush()
    result = generate(model, params, input_ids, mask, max_new_tokens=args.max_new_tokens,
                      sampling=sampling, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                      stop_strings=tuple(args.stop), tokenizer=tokenizer, seed=args.seed,
                      callback=streamer, vocab_size=tokenizer.vocab_size)
    if streamer is not None:
      out.write("\n")
    for i, (prompt, text) in enumerate(zip(batch, result.texts)):
      if result.finish_reasons[i] == "stop_string":
        print(f"[based-jax] row {i}: text cut before a stop string (it had streamed past it)"
              if streamer is not None and i == 0 else
              f"[based-jax] row {i}: text cut before a stop string", file=err)
      if streamer is not None and i == 0:
        continue
      out.write(f"--- [{i}] ---\n{prompt}{text}\n" if len(batch) > 1 else f"{prompt}{text}\n")
    out.flush()
    rows, new = input_ids.shape[0], int(result.lengths.sum())
    print(f"[based-jax] B={rows} prompt={input_ids.shape[1]} tokens "
          f"(bucket {result.prompt_length}); "
          f"compile {result.compile_s:.2f} s; prefill {result.prefill_s * 1e3:.1f} ms; "
          f"decode {new - rows} tokens in {result.decode_s * 1e3:.1f} ms = "
          f"{result.decode_tokens_per_s:.1f} tokens/s; finish: {', '.join(result.finish_reasons)}",
          file=err)
  return 0


# --------------------------------------------------------------------------------------------
# convert / bench: routed to other entry points
# --------------------------------------------------------------------------------------------


def cmd_convert(argv: list[str]) -> int:
  try:
    from convert.__main__ import main as convert_main  # lazy: needs torch
  except ImportError as e:
    raise UsageError(f"the converter is not available ({e}); install based-jax[torch]") from e
  params = inspect.signature(convert_main).parameters
  if params:
    result = convert_main(argv)
  else:
    saved = sys.argv
    sys.argv = ["based-jax convert", *argv]
    try:
      result = convert_main()
    finally:
      sys.argv = saved
  return int(result or 0)


def benchmark_path(name: str) -> Path:
  return Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"


def cmd_bench(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help"):
    print(f"usage: based-jax bench {{{','.join(BENCHMARKS)}}} [ARGS ...]\n\n"
          "Runs benchmarks/<name>.py from the source checkout; `based-jax bench e2e --help` "
          "lists its arguments.")
    return 0
  name, rest = argv[0], argv[1:]
  if name not in BENCHMARKS:
    raise UsageError(f"bench: unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
  path = benchmark_path(name)
  if not path.is_file():
    raise UsageError(f"bench: {path} not found; benchmarks run from a source checkout of based-jax")
  saved, saved_path = sys.argv, list(sys.path)
  sys.argv = [str(path), *rest]
  sys.path.insert(0, str(path.parent.parent))  # the checkout: `benchmarks` imports as a package
  try:
    runpy.run_path(str(path), run_name="__main__")
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv, sys.path[:] = saved, saved_path
  return 0


# Subcommands whose whole argument list goes to another module's `main(argv)`.
_ROUTED_MODULES = {"evaluate": "based_jax.evaluation.cli", "train": "based_jax.training.cli"}


def cmd_routed(command: str, argv: list[str]) -> int:
  import importlib  # pylint: disable=import-outside-toplevel

  try:
    module = importlib.import_module(_ROUTED_MODULES[command])
  except ImportError as e:
    raise UsageError(f"`based-jax {command}` is not available ({e})") from e
  return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    if argv and argv[0] == "convert":
      return cmd_convert(argv[1:])
    if argv and argv[0] == "bench":
      return cmd_bench(argv[1:])
    if argv and argv[0] in _ROUTED_MODULES:
      return cmd_routed(argv[0], argv[1:])
    args = build_parser().parse_args(argv)  # exits 2 with usage on bad flags
    return cmd_generate(args)
  except UsageError as e:
    print(f"based-jax: error: {e}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
  sys.exit(main())
