"""`based-jax train`: train a Based LM on a byte-level text file, the pydoc corpus, or MQAR.

Examples:
    based-jax train --data pydoc --out runs/byte --steps 450 --d-model 256 --n-layer 6 \
        --layers conv,la,swa,conv,la,swa --window 64 --seq-len 256 --batch-size 16
    based-jax train --data mqar --mqar-kv-pairs 8 --seq-len 64 --layers conv,la,swa,la ...
    based-jax train --data text --text-file corpus.txt --out runs/x --resume

The run directory (`--out`) is a training checkpoint (see based_jax.training.checkpoint) and at
the same time a converted model directory that `based_jax.from_pretrained` loads. `--resume`
continues from it: same batches, same optimizer state, so resumed == uninterrupted.
Every log line is JSON (also appended to `--out/log.jsonl`); the tqdm bar goes to stderr.
"""

import argparse
import json
import os
import sys

_LAYER_CODES = {"conv": "conv", "la": "linear_attention", "swa": "sliding_window"}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="based-jax train", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  d = p.add_argument_group("data")
  d.add_argument("--data", choices=("pydoc", "text", "mqar"), default="pydoc",
                 help="pydoc: byte-level text of pydoc_data.topics (ships with Python; every 10th "
                      "topic held out); text: byte-level --text-file; mqar: synthetic recall")
  d.add_argument("--text-file", metavar="PATH", help="UTF-8 text file for --data text")
  d.add_argument("--seq-len", type=int, default=256, help="tokens per training row")
  d.add_argument("--mqar-vocab", type=int, default=256, help="MQAR vocabulary size")
  d.add_argument("--mqar-kv-pairs", type=int, default=8, help="MQAR key-value pairs per example")
  d.add_argument("--data-seed", type=int, default=0, help="seed of the batch stream")
  m = p.add_argument_group("model (BasedConfig.tiny)")
  m.add_argument("--d-model", type=int, default=256)
  m.add_argument("--n-head", type=int, default=4,
                 help="heads of SWA and of linear attention (feature dim 16 each)")
  m.add_argument("--layers", default="conv,la,swa,conv,la,swa",
                 help="comma-separated layer kinds: conv (BaseConv), la (Taylor linear attention),"
                      " swa (sliding-window softmax attention)")
  m.add_argument("--window", type=int, default=64,
                 help="SWA window_size (a query sees itself and window//2 keys before it)")
  m.add_argument("--la-impl", default="chunked",
                 choices=("auto", "reference", "chunked", "pallas", "ffi"))
  o = p.add_argument_group("optimization")
  o.add_argument("--steps", type=int, default=1000, help="total optimizer steps")
  o.add_argument("--batch-size", type=int, default=16, help="rows per optimizer step")
  o.add_argument("--grad-accum", type=int, default=1,
                 help="micro-batches per step (must divide --batch-size)")
  o.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
  o.add_argument("--warmup", type=int, default=100,
                 help="linear warmup steps (capped at --steps - 1)")
  o.add_argument("--final-lr-ratio", type=float, default=0.1, help="cosine floor / peak lr")
  o.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay (matrices only)")
  o.add_argument("--clip-norm", type=float, default=1.0, help="global-norm clip (0 = off)")
  o.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                 help="compute dtype (params stay float32); auto = bfloat16 on GPU/TPU, float32 "
                      "on CPU, where XLA's bf16 matmuls are several times slower")
  o.add_argument("--seed", type=int, default=0, help="parameter-init seed")
  r = p.add_argument_group("run")
  r.add_argument("--out", metavar="DIR", help="checkpoint directory (required unless --no-save)")
  r.add_argument("--resume", action="store_true", help="continue from --out if it holds a checkpoint")
  r.add_argument("--checkpoint-every", type=int, default=0, help="steps between saves (0 = end only)")
  r.add_argument("--log-every", type=int, default=50, help="steps per logged average")
  r.add_argument("--eval-batches", type=int, default=8, help="held-out batches evaluated at the end")
  r.add_argument("--max-minutes", type=float, default=None,
                 help="stop (and save) after this much training time")
  r.add_argument("--export", metavar="DIR",
                 help="also write a model-only directory (config.json + params.safetensors)")
  r.add_argument("--export-dtype", choices=("float32", "bfloat16"), default="bfloat16")
  r.add_argument("--no-save", action="store_true", help="do not write checkpoints")
  r.add_argument("--no-progress", action="store_true", help="no tqdm bar")
  return p


def parse_layers(spec: str) -> tuple[str, ...]:
  kinds = tuple(s.strip() for s in spec.split(",") if s.strip())
  bad = [k for k in kinds if k not in _LAYER_CODES]
  if not kinds or bad:
    raise ValueError(f"--layers must be a comma-separated list of {sorted(_LAYER_CODES)}; got "
                     f"{spec!r}")
  return kinds


def build_config(args):
  """BasedConfig.tiny from the model flags; vocab 257 (bytes + EOS) or the MQAR vocab."""
  from based_jax.byte_tokenizer import VOCAB_SIZE  # pylint: disable=import-outside-toplevel
  from based_jax.config import BasedConfig  # pylint: disable=import-outside-toplevel

  kinds = parse_layers(args.layers)
  vocab = args.mqar_vocab if args.data == "mqar" else VOCAB_SIZE
  return BasedConfig.tiny(
      n_embd=args.d_model, n_head=args.n_head, n_layer=len(kinds), vocab_size=vocab,
      window_size=args.window,
      la_layers=tuple(i for i, k in enumerate(kinds) if k == "la"),
      swa_layers=tuple(i for i, k in enumerate(kinds) if k == "swa"))


def build_data(args):
  """(train source, held-out source) for the chosen --data."""
  from based_jax import mqar  # pylint: disable=import-outside-toplevel
  from based_jax.training import data  # pylint: disable=import-outside-toplevel

  if args.data == "mqar":
    cfg = mqar.MQARConfig(vocab_size=args.mqar_vocab, seq_len=args.seq_len,
                          num_kv_pairs=args.mqar_kv_pairs)
    return data.MQARData(cfg, args.data_seed), data.MQARData(cfg, args.data_seed + 1)
  if args.data == "text":
    if not args.text_file:
      raise ValueError("--data text needs --text-file PATH")
    with open(args.text_file, encoding="utf-8") as f:
      text = f.read()
    cut = int(len(text) * 0.95)  # last 5% held out
    train, held = text[:cut], text[cut:]
  else:
    train, held = data.pydoc_corpus()
  return (data.ByteTextData.from_text(train, args.seq_len, args.data_seed),
          data.ByteTextData.from_text(held, args.seq_len, args.data_seed + 1))


def _check(args) -> None:
  for name in ("steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_batches"):
    if getattr(args, name) < (0 if name == "eval_batches" else 1):
      raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(args, name)}")
  if args.batch_size % args.grad_accum:
    raise ValueError(f"--grad-accum={args.grad_accum} must divide --batch-size={args.batch_size}")
  if not args.no_save and not args.out:
    raise ValueError("--out DIR is required (or pass --no-save)")
  if args.resume and not args.out:
    raise ValueError("--resume needs --out DIR")


def run(args) -> dict:
  """Train as the flags say; returns the final summary dict (also printed as JSON)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from based_jax.model import BasedLM  # pylint: disable=import-outside-toplevel
  from based_jax.training import checkpoint, loop, optim  # pylint: disable=import-outside-toplevel

  _check(args)
  config = build_config(args)
  source, held_out = build_data(args)
  dtype = args.dtype
  if dtype == "auto":
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  model = BasedLM(config, dtype=jnp.dtype(dtype), la_impl=args.la_impl)
  opt_cfg = optim.OptimConfig(lr=args.lr, warmup_steps=min(args.warmup, args.steps - 1),
                              total_steps=args.steps, final_lr_ratio=args.final_lr_ratio,
                              weight_decay=args.weight_decay, clip_norm=args.clip_norm)
  optimizer = optim.make_optimizer(opt_cfg)
  state = loop.init_state(model, optimizer, args.seed)
  run_info = dict(vars(args))
  if args.resume and checkpoint.exists(args.out):
    _, state, _ = checkpoint.restore(args.out, state)
  log_path = None if args.no_save else os.path.join(args.out, "log.jsonl")
  # Byte-level models name their tokenizer in config.json, so `based-jax generate` finds it.
  config_extra = None if args.data == "mqar" else {"tokenizer": "byte"}

  def emit(record):
    line = json.dumps(record)
    print(line, flush=True)
    if log_path:
      os.makedirs(args.out, exist_ok=True)
      with open(log_path, "a") as f:
        f.write(line + "\n")

  n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(state.params))
  emit({"event": "start", "step": int(state.step), "params": n_params, "dtype": dtype,
        "layers": list(config.layer_types), "backend": jax.default_backend()})
  hooks = loop.LoopHooks(
      log_every=args.log_every, checkpoint_every=args.checkpoint_every,
      on_log=lambda step, m: emit({"event": "train", "step": step, **m}),
      on_checkpoint=None if args.no_save else (
          lambda s: checkpoint.save(args.out, config, s, extra=run_info,
                                    config_extra=config_extra)),
      progress=not args.no_progress,
      max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes)
  state = loop.train(loop.make_train_step(model, optimizer), state, source,
                     num_steps=args.steps, batch_size=args.batch_size,
                     grad_accum=args.grad_accum, hooks=hooks)
  summary = {"event": "done", "step": int(state.step), "params": n_params}
  if args.eval_batches:
    ev = loop.evaluate(loop.make_eval_fn(model), state.params, held_out,
                       num_batches=args.eval_batches, batch_size=args.batch_size)
    summary.update({"eval_loss": ev["loss"], "eval_accuracy": ev["accuracy"]})
  if args.export:
    checkpoint.save_model(args.export, config, state.params, dtype=args.export_dtype,
                          metadata={"step": str(int(state.step))}, config_extra=config_extra)
  emit(summary)
  return summary


def main(argv=None) -> int:
  """Entry point of `based-jax train`; returns the exit status (2 on bad arguments)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"based-jax train: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
