"""The `based-jax` CLI: --help, routing, bad input -> one error line + exit 2, and a real
generate run from a tiny hub-format checkpoint (streamed text == generate()'s tokens)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from based_jax import cli

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", "based_jax.cli", *argv], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  from tests.based_jax.test_tokenizer import write_byte_bpe_tokenizer

  return write_byte_bpe_tokenizer(tmp_path_factory.mktemp("tok"))


def test_top_level_help_lists_subcommands():
  out = run_cli("--help")
  assert out.returncode == 0, out.stderr
  for word in ("generate", "convert", "evaluate", "train", "bench"):
    assert word in out.stdout


def test_evaluate_routes_to_the_evaluation_cli(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["evaluate", "--help"])
  assert exc.value.code == 0
  text = capsys.readouterr().out
  assert "based-jax evaluate" in text and "--task" in text


def test_bad_evaluate_arguments_exit_2(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["evaluate", "--task", "no-such-task", "--model", "x"])
  assert exc.value.code == 2


def test_generate_help_lists_options(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["generate", "--help"])
  assert exc.value.code == 0
  text = capsys.readouterr().out
  for flag in ("--model", "--prompt-file", "--max-new-tokens", "--temperature", "--top-k",
               "--top-p", "--seed", "--batch-size", "--dtype", "--impl", "--attn-impl",
               "--mlp-impl", "--max-prompt-tokens"):
    assert flag in text
  from based_jax.mixers import ATTENTION_IMPLS
  from based_jax.ops import GATED_LINEAR_IMPLS
  assert cli.ATTN_IMPLS == ATTENTION_IMPLS
  assert cli.MLP_IMPLS == GATED_LINEAR_IMPLS


def test_bench_help_and_convert_routing(capsys):
  assert cli.main(["bench", "--help"]) == 0
  assert "e2e" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exc:
    cli.main(["convert", "--help"])
  assert exc.value.code == 0
  assert "based-jax-convert" in capsys.readouterr().out


def test_bench_e2e_help_runs_the_script():
  out = run_cli("bench", "e2e", "--help")
  assert out.returncode == 0, out.stderr
  assert "--prefill-batch-sizes" in out.stdout and "e2e.json" in out.stdout


@pytest.mark.parametrize("name, needle", [("kernels", "--sweeps"), ("e2e", "--isolate")])
def test_bench_scripts_run_from_anywhere(name, needle, tmp_path):
  """The installed entry point, outside the checkout and without PYTHONPATH, runs each benchmark
  (they import `benchmarks.common`, which needs the checkout on sys.path)."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-m", "based_jax.cli", "bench", name, "--help"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert out.returncode == 0, out.stderr
  assert needle in out.stdout


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--model", "m"], "give a prompt"),
    (["generate", "--model", "m", "--prompt", ""], "prompt 0 is empty"),
    (["generate", "--model", "m", "--prompt", "  \n"], "prompt 0 is empty"),
    (["generate", "--model", "m", "--prompt", "hi", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["generate", "--model", "m", "--prompt", "hi", "--top-p", "0"], "--top-p"),
    (["generate", "--model", "m", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
    (["generate", "--model", "m", "--prompt", "hi", "--top-k", "-3"], "--top-k"),
    (["generate", "--model", "m", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["generate", "--model", "m", "--prompt", "hi", "--batch-size", "0"], "--batch-size"),
    (["generate", "--model", "m", "--prompt-file", "/no/such/file.txt"], "--prompt-file"),
    (["bench", "nope"], "unknown benchmark 'nope'"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, needle, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("based-jax: error:") and needle in err
  assert "Traceback" not in err and err.count("\n") == 1


def test_bad_input_through_the_entry_point_has_no_traceback():
  out = run_cli("generate", "--model", "m", "--prompt", "hi", "--top-p", "2")
  assert out.returncode == 2
  assert "--top-p" in out.stderr and "Traceback" not in out.stderr


def test_bad_choice_is_an_argparse_usage_error(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["generate", "--model", "m", "--prompt", "hi", "--dtype", "float8"])
  assert exc.value.code == 2
  assert "invalid choice" in capsys.readouterr().err


def test_prompt_over_limit_and_missing_model(tok_dir, capsys):
  argv = ["generate", "--model", "/no/such/model", "--tokenizer", tok_dir]
  assert cli.main(argv + ["--prompt", "the quick brown fox jumps over", "--max-prompt-tokens",
                          "2"]) == 2
  assert "more than --max-prompt-tokens 2" in capsys.readouterr().err
  assert cli.main(argv + ["--prompt", "hello"]) == 2
  assert "could not load the model '/no/such/model'" in capsys.readouterr().err


def test_tokenizer_dir_without_files(tmp_path, capsys):
  assert cli.main(["generate", "--model", "m", "--tokenizer", str(tmp_path), "--prompt", "x"]) == 2
  assert "holds no tokenizer files" in capsys.readouterr().err


@pytest.mark.torch
def test_generate_end_to_end_from_hub_checkpoint(tok_dir, tmp_path, capsys):
  """Tiny random hub checkpoint + local tokenizer: streamed text == generate()'s greedy tokens."""
  pytest.importorskip("torch")
  from based_jax.generation import generate
  from based_jax.pretrained import from_pretrained
  from based_jax.tokenizer import load_tokenizer
  from tests.torch_ref import checkpoints as ck

  tok = load_tokenizer(tok_dir)
  config = ck.hub_config(n_embd=64, n_head=4, n_layer=3, vocab_size=tok.vocab_size,
                         la_layers=(1,), swa_layers=(2,), window_size=8)
  ck.write_hub_dir(tmp_path, config, ck.TinyCase("cli", config).build(seed=7), "bin")
  prompts = ["hello world", "the lazy dog jumps over the quick brown fox"]
  base = ["generate", "--model", str(tmp_path), "--tokenizer", tok_dir, "--max-new-tokens", "12",
          "--dtype", "float32", "--impl", "chunked", "--ignore-eos"]

  model, params = from_pretrained(tmp_path, dtype=np.float32, la_impl="chunked")
  ids, mask = tok.encode_batch(prompts)
  want = generate(model, params, ids, mask, max_new_tokens=12, tokenizer=tok)

  assert cli.main(base + ["--prompt", prompts[0], "--prompt", prompts[1]]) == 0
  captured = capsys.readouterr()
  lines = captured.out.splitlines()
  assert lines[0] == prompts[0] + want.texts[0]  # streamed row 0
  assert lines[1] == "--- [1] ---" and lines[2] == prompts[1] + want.texts[1]
  assert "prefill" in captured.err and "tokens/s" in captured.err and "B=2" in captured.err

  assert cli.main(base + ["--prompt", prompts[1], "--batch-size", "3", "--no-stream"]) == 0
  captured = capsys.readouterr()
  assert captured.out.count(prompts[1] + want.texts[1]) == 3
  assert "B=3" in captured.err

  text = want.texts[1]
  assert len(text) >= 4, "fixture: the generated text should have a few characters"
  stop = text[2:4]
  assert cli.main(base + ["--prompt", prompts[1], "--stop", stop, "--no-stream"]) == 0
  captured = capsys.readouterr()
  assert captured.out == prompts[1] + text[:text.find(stop)] + "\n"
  assert "row 0: text cut before a stop string" in captured.err


def test_generate_without_model_uses_the_shipped_offline_model(capsys, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert cli.main(["generate", "The ", "--max-new-tokens", "12", "--no-stream",
                   "--dtype", "float32"]) == 0
  captured = capsys.readouterr()
  assert captured.out.startswith("The ")
  assert len(captured.out.rstrip("\n")) > len("The ")
  assert "byte-based" in captured.err and "decode" in captured.err


@pytest.mark.parametrize("flag, bad, message, good", [
    ("--attn-impl", "cudnn", "cuDNN flash attention takes bfloat16", "xla"),
    ("--mlp-impl", "pallas", "the Pallas kernel computes in bfloat16", "auto"),  # auto -> xla
])
def test_generate_kernel_flag_where_it_cannot_run_is_a_usage_error(capsys, monkeypatch, flag, bad,
                                                                   message, good):
  """float32 runs neither on cuDNN nor on the Pallas gated-linear kernel: one error line naming
  the flag, on any backend; the fallback choice runs."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  common = ["generate", "The ", "--max-new-tokens", "4", "--no-stream", "--dtype", "float32"]
  assert cli.main(common + [flag, bad]) == 2
  assert f"{flag} {bad}: {message}" in capsys.readouterr().err
  assert cli.main(common + [flag, good]) == 0
  assert f"{flag[2:].replace('-', '_')}={good}" in capsys.readouterr().err
