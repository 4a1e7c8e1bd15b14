"""Document information-extraction data: SWDE and FDA examples (fields text, key, value).

Sources:
- the hub datasets `hazyresearch/based-swde-v2` (task "swde") and `hazyresearch/based-fda`
  (task "fda"), split "validation", fetched as parquet files with `huggingface_hub` (the
  `datasets` package is not needed) and read with pyarrow;
- a local copy: a `.parquet` file, a `.jsonl` file (one JSON object per line) or a directory
  of parquet files.

`value` may be a list (upstream FDA): its first element is the gold answer.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

TASKS = {"swde": "hazyresearch/based-swde-v2", "fda": "hazyresearch/based-fda"}
SPLIT = "validation"
FIELDS = ("text", "key", "value")


class DataUnavailableError(RuntimeError):
  """The data set could not be found or read; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One extraction question. index: position in the source file (after --limit, unchanged)."""

  index: int
  text: str
  key: str
  value: str


def _gold(value: Any, where: str) -> str:
  if isinstance(value, (list, tuple)):
    if not value:
      return ""
    value = value[0]
  if value is None:
    raise DataUnavailableError(f"{where}: field 'value' is null")
  return str(value)


def _to_example(i: int, row: Any, where: str) -> Example:
  if not isinstance(row, dict):
    raise DataUnavailableError(f"{where}: row {i} is a {type(row).__name__}, expected an object "
                               f"with fields {list(FIELDS)}")
  missing = [f for f in FIELDS if f not in row]
  if missing:
    raise DataUnavailableError(f"{where}: row {i} lacks field(s) {missing}; every row needs "
                               f"{list(FIELDS)} (got {sorted(row)})")
  for f in ("text", "key"):
    if not isinstance(row[f], str):
      raise DataUnavailableError(f"{where}: row {i} field {f!r} must be a string; got "
                                 f"{type(row[f]).__name__}")
  return Example(i, row["text"], row["key"], _gold(row["value"], f"{where} row {i}"))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise DataUnavailableError(f"{path}: line {n} is not valid JSON: {e}") from None
  return rows


def read_parquet(path: str | os.PathLike) -> list[dict]:
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataUnavailableError(
        f"reading {path} needs pyarrow, which is not installed. Fix: `pip install pyarrow`, or "
        "pass a JSON-lines copy (fields text, key, value) with --data FILE.jsonl") from None
  return pq.read_table(str(path), columns=list(FIELDS)).to_pylist()


def _read_local(path: Path) -> list[dict]:
  if path.is_dir():
    files = sorted(p for p in path.rglob("*.parquet") if SPLIT in str(p.relative_to(path))) or \
        sorted(path.rglob("*.parquet"))
    if not files:
      raise DataUnavailableError(f"{path} is a directory without .parquet files")
    return [row for p in files for row in read_parquet(p)]
  if path.suffix == ".parquet":
    return read_parquet(path)
  if path.suffix in (".jsonl", ".json"):
    return read_jsonl(path)
  raise DataUnavailableError(f"{path}: unknown data format; expected .parquet, .jsonl or a "
                             "directory of parquet files")


def hub_parquet_files(repo_id: str, split: str = SPLIT) -> list[str]:
  """Local paths of the split's parquet files of a hub dataset (downloaded or cached)."""
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataUnavailableError(f"fetching {repo_id} needs huggingface_hub (`pip install "
                               "huggingface_hub`), or pass a local copy with --data") from None
  fix = (f"Fix: on a machine with network access run `hf download {repo_id} --repo-type dataset` "
         f"(unset HF_HUB_OFFLINE), or pass a local copy (parquet or JSON lines with fields "
         f"text, key, value) with --data PATH")
  pattern = f"*{split}*.parquet"
  try:
    names = huggingface_hub.list_repo_files(repo_id, repo_type="dataset")
  except Exception as online_error:  # pylint: disable=broad-except  # offline, no network, ...
    try:
      root = huggingface_hub.snapshot_download(repo_id, repo_type="dataset",
                                               allow_patterns=[pattern, f"**/{pattern}"],
                                               local_files_only=True)
    except Exception:  # pylint: disable=broad-except
      root = None
    files = sorted(str(p) for p in Path(root).rglob("*.parquet")) if root else []
    if files:
      return files
    raise DataUnavailableError(f"dataset {repo_id} is not in the local Hugging Face cache and the "
                               f"hub could not be listed ({type(online_error).__name__}: "
                               f"{online_error}). {fix}") from None
  picked = sorted(n for n in names if n.endswith(".parquet") and split in n)
  if not picked:
    raise DataUnavailableError(f"dataset {repo_id} has no parquet file for split {split!r} "
                               f"(files: {sorted(names)[:20]}). {fix}")
  return [huggingface_hub.hf_hub_download(repo_id, n, repo_type="dataset") for n in picked]


def load_examples(task: str, data: str | os.PathLike | None = None,
                  limit: int | None = None) -> list[Example]:
  """The first `limit` (all when None) examples of `task` from `data` or the hub."""
  if task not in TASKS:
    raise ValueError(f"task must be one of {sorted(TASKS)}; got {task!r}")
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
    raise ValueError(f"limit must be a positive int or None; got {limit!r}")
  if data is not None:
    path = Path(data)
    if not path.exists():
      raise DataUnavailableError(f"--data {data}: no such file or directory")
    rows, where = _read_local(path), str(path)
  else:
    rows, where = [r for f in hub_parquet_files(TASKS[task]) for r in read_parquet(f)], TASKS[task]
  if not rows:
    raise DataUnavailableError(f"{where} holds no examples")
  rows = rows[:limit] if limit is not None else rows
  return [_to_example(i, row, where) for i, row in enumerate(rows)]
