"""`based-jax-convert SRC DST`: convert a PyTorch Based checkpoint for based-jax."""

import argparse
import sys
import time

_EPILOG = """\
SRC is a local directory with config.json and model.safetensors or pytorch_model.bin, or a
Hugging Face hub id such as hazyresearch/based-360m (downloaded through the hub cache; with
HF_HUB_OFFLINE=1 only cached files are used). .bin files are read with
torch.load(weights_only=True): pickles that would run code are refused.

DST receives config.json (BasedConfig) and params.safetensors (keys "transformer/layers_0/...").
Mamba checkpoints (backbone.* keys, e.g. hazyresearch/mamba-360m) are recognised and written as
a MambaConfig (model_type "mamba") with keys "backbone/layers_0/..."; A_log and D stay float32.
Load it with based_jax.pretrained.from_pretrained(DST).

examples:
  based-jax-convert hazyresearch/based-360m ./based-360m
  based-jax-convert ./my-torch-ckpt ./my-jax-ckpt --dtype bfloat16
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="based-jax-convert",
      description="Convert a PyTorch Based / attention / Mamba checkpoint (HazyResearch layout) to "
      "based-jax, checking every tensor name and shape.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", metavar="SRC", help="PyTorch checkpoint directory or hub repo id")
  parser.add_argument("dst", metavar="DST", help="output directory (created if missing)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="storage dtype of params.safetensors (default: float32)")
  parser.add_argument("--revision", default=None,
                      help="hub branch, tag or commit (hub ids only; e.g. refs/pr/1)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  from convert.errors import CheckpointError  # pylint: disable=import-outside-toplevel
  from convert.torch_to_flax import convert_checkpoint  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  try:
    out = convert_checkpoint(args.src, args.dst, dtype=args.dtype, revision=args.revision,
                             progress=not args.quiet)
  except CheckpointError as e:
    print(f"based-jax-convert: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
