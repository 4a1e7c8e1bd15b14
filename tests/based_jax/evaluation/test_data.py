"""Data loading: local JSON lines (list values, limit), parquet, hub fetch and its errors."""

import json
import sys

import pytest

from based_jax.evaluation import data


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


ROWS = [
    {"text": "Name: Ada. name:", "key": "name", "value": "Ada", "extra": 1},
    {"text": "Year: 1843.", "key": "year", "value": ["1843", "1842"]},
    {"text": "Place: London.", "key": "place", "value": []},
]


def test_jsonl_rows_become_examples(tmp_path):
  got = data.load_examples("swde", write_jsonl(tmp_path / "d.jsonl", ROWS))
  assert [(e.index, e.text, e.key, e.value) for e in got] == [
      (0, "Name: Ada. name:", "name", "Ada"), (1, "Year: 1843.", "year", "1843"),
      (2, "Place: London.", "place", "")]


def test_limit_keeps_the_first_examples(tmp_path):
  got = data.load_examples("fda", write_jsonl(tmp_path / "d.jsonl", ROWS), limit=2)
  assert [e.index for e in got] == [0, 1]


@pytest.mark.parametrize("rows,match", [
    ([{"text": "t", "key": "k"}], r"row 0 lacks field\(s\) \['value'\]"),
    ([{"text": 3, "key": "k", "value": "v"}], "field 'text' must be a string"),
    ([["not", "an", "object"]], "row 0 is a list"),
    ([{"text": "t", "key": "k", "value": None}], "field 'value' is null"),
])
def test_bad_rows_are_named(tmp_path, rows, match):
  with pytest.raises(data.DataUnavailableError, match=match):
    data.load_examples("swde", write_jsonl(tmp_path / "d.jsonl", rows))


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="task must be one of"):
    data.load_examples("squad", tmp_path)
  with pytest.raises(ValueError, match="limit must be a positive int"):
    data.load_examples("swde", tmp_path, limit=0)
  with pytest.raises(data.DataUnavailableError, match="no such file"):
    data.load_examples("swde", tmp_path / "missing.jsonl")
  (tmp_path / "x.csv").write_text("a,b\n")
  with pytest.raises(data.DataUnavailableError, match="unknown data format"):
    data.load_examples("swde", tmp_path / "x.csv")
  (tmp_path / "bad.jsonl").write_text('{"text": "a"\n')
  with pytest.raises(data.DataUnavailableError, match="line 1 is not valid JSON"):
    data.load_examples("swde", tmp_path / "bad.jsonl")


def test_parquet_without_pyarrow_names_the_fix(tmp_path, monkeypatch):
  path = tmp_path / "validation.parquet"
  path.write_bytes(b"PAR1")
  monkeypatch.setitem(sys.modules, "pyarrow", None)
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
  with pytest.raises(data.DataUnavailableError, match="pip install pyarrow"):
    data.load_examples("swde", path)


def test_parquet_round_trip(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq

  table = pa.table({"text": ["Doc one.", "Doc two."], "key": ["a", "b"],
                    "value": [["x", "y"], ["z"]]})
  (tmp_path / "data").mkdir()
  pq.write_table(table, tmp_path / "data" / "validation-00000.parquet")
  got = data.load_examples("fda", tmp_path)
  assert [(e.text, e.key, e.value) for e in got] == [("Doc one.", "a", "x"), ("Doc two.", "b", "z")]


class _FakeHub:
  """Stands in for huggingface_hub: a repo listing, downloads, or an offline failure."""

  def __init__(self, names=None, offline=False, cached=None):
    self.names, self.offline, self.cached, self.downloaded = names, offline, cached, []

  def list_repo_files(self, repo_id, repo_type):
    assert repo_type == "dataset"
    if self.offline:
      raise OSError("offline")
    return self.names

  def snapshot_download(self, repo_id, repo_type, allow_patterns, local_files_only):
    assert local_files_only and repo_type == "dataset"
    if self.cached is None:
      raise OSError("not cached")
    return self.cached

  def hf_hub_download(self, repo_id, name, repo_type):
    self.downloaded.append((repo_id, name, repo_type))
    return f"/cache/{name}"


def test_hub_picks_the_validation_parquet_files(monkeypatch):
  hub = _FakeHub(names=["README.md", "data/train-0.parquet", "data/validation-0.parquet",
                        "data/validation-1.parquet"])
  monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
  assert data.hub_parquet_files("hazyresearch/based-fda") == [
      "/cache/data/validation-0.parquet", "/cache/data/validation-1.parquet"]
  assert {r[0] for r in hub.downloaded} == {"hazyresearch/based-fda"}


def test_hub_offline_without_cache_names_the_fix(monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", _FakeHub(offline=True))
  with pytest.raises(data.DataUnavailableError, match="--data PATH") as info:
    data.load_examples("swde")
  assert "hf download hazyresearch/based-swde-v2 --repo-type dataset" in str(info.value)


def test_hub_offline_uses_the_cache(monkeypatch, tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "validation-0.parquet").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "huggingface_hub", _FakeHub(offline=True, cached=str(tmp_path)))
  assert data.hub_parquet_files("x/y") == [str(tmp_path / "data" / "validation-0.parquet")]


def test_hub_without_a_validation_split(monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", _FakeHub(names=["data/train-0.parquet"]))
  with pytest.raises(data.DataUnavailableError, match="no parquet file for split 'validation'"):
    data.hub_parquet_files("x/y")
