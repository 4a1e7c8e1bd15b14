"""`based-jax train`: --help, a tiny end-to-end run with resume, and argument errors (exit 2)."""

import json

import numpy as np
import pytest

from based_jax.training import cli

TINY = ["--d-model", "32", "--n-head", "2", "--layers", "conv,la,swa", "--window", "6",
        "--seq-len", "24", "--batch-size", "4", "--log-every", "2", "--warmup", "2",
        "--eval-batches", "1", "--no-progress"]


def test_help_lists_the_main_options(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  for flag in ("--data", "--text-file", "--grad-accum", "--resume", "--dtype", "--mqar-kv-pairs",
               "--export", "--max-minutes"):
    assert flag in text


def test_text_run_resume_and_export(tmp_path, capsys):
  rng = np.random.default_rng()
  corpus = tmp_path / "c.txt"
  corpus.write_text("".join(rng.choice(list("hello world\n"), size=4000)), encoding="utf-8")
  out = tmp_path / "run"
  base = ["--data", "text", "--text-file", str(corpus), "--out", str(out), *TINY]
  assert cli.main([*base, "--steps", "4", "--grad-accum", "2", "--eval-batches", "0"]) == 0
  assert cli.main([*base, "--steps", "6", "--grad-accum", "2", "--resume",
                   "--export", str(tmp_path / "exp")]) == 0
  lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
  starts = [x for x in lines if x["event"] == "start"]
  assert [s["step"] for s in starts] == [0, 4]  # the second run resumed
  done = [x for x in lines if x["event"] == "done"][-1]
  assert done["step"] == 6 and np.isfinite(done["eval_loss"])
  logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
  assert [x["step"] for x in logged if x["event"] == "train"] == [2, 4, 6]
  from based_jax.pretrained import from_pretrained

  model, params = from_pretrained(str(tmp_path / "exp"))
  assert model.config.vocab_size == 257 and model.config.n_layer == 3
  for d in (out, tmp_path / "exp"):  # `based-jax generate` picks the byte tokenizer from here
    assert json.loads((d / "config.json").read_text())["tokenizer"] == "byte"


def test_mqar_run(tmp_path, capsys):
  args = ["--data", "mqar", "--mqar-vocab", "32", "--mqar-kv-pairs", "3", "--no-save",
          "--steps", "2", *TINY]
  assert cli.main(args) == 0
  done = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"done"' in x][-1]
  assert 0.0 <= done["eval_accuracy"] <= 1.0


@pytest.mark.parametrize("extra, match", [
    (["--data", "text", "--no-save"], "--data text needs --text-file"),
    (["--grad-accum", "3", "--no-save"], "--grad-accum=3 must divide --batch-size=4"),
    (["--layers", "conv,mamba", "--no-save"], "--layers must be"),
    ([], "--out DIR is required"),
])
def test_bad_arguments_exit_2(extra, match, capsys):
  assert cli.main([*TINY, "--steps", "1", *extra]) == 2
  assert match in capsys.readouterr().err
