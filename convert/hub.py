"""Find the files of a checkpoint: a local directory or a Hugging Face hub repo id.

A PyTorch checkpoint is `config.json` plus `model.safetensors` (preferred: no pickle) or
`pytorch_model.bin`. A converted based-jax checkpoint is `config.json` plus `params.safetensors`.
Hub downloads go through huggingface_hub, so its cache and `HF_HUB_OFFLINE` apply.
"""

import dataclasses
import os
import re
from typing import Literal

from convert.errors import CheckpointNotFoundError, MissingDependencyError

CONFIG_NAME = "config.json"
CONVERTED_NAME = "params.safetensors"
# Preference order for PyTorch weights.
TORCH_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
  kind: Literal["converted", "torch"]
  config: str   # path of config.json
  weights: str  # path of params.safetensors / model.safetensors / pytorch_model.bin


def locate(src: str | os.PathLike, revision: str | None = None) -> CheckpointFiles:
  """Local directory (converted or PyTorch) or hub repo id -> the file paths."""
  src_str = os.fspath(src)
  if os.path.isdir(src_str):
    if revision is not None:
      raise CheckpointNotFoundError(
          f"revision={revision!r} applies to hub ids only; {src_str!r} is a local directory")
    return _locate_local(src_str)
  if os.path.exists(src_str):
    raise CheckpointNotFoundError(
        f"{src_str!r} is a file; pass the directory that holds config.json and the weights")
  if not _HUB_ID.fullmatch(src_str):
    raise CheckpointNotFoundError(
        f"{src_str!r} is neither an existing directory nor a hub repo id like "
        "'hazyresearch/based-360m'")
  return _download(src_str, revision)


def _locate_local(directory: str) -> CheckpointFiles:
  config = os.path.join(directory, CONFIG_NAME)
  if not os.path.isfile(config):
    raise CheckpointNotFoundError(
        f"{directory!r} has no {CONFIG_NAME}; found {sorted(os.listdir(directory))}")
  for kind, names in (("converted", (CONVERTED_NAME,)), ("torch", TORCH_WEIGHT_NAMES)):
    for name in names:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        return CheckpointFiles(kind, config, path)
  raise CheckpointNotFoundError(
      f"{directory!r} has no weight file: expected {CONVERTED_NAME} (converted) or one of "
      f"{list(TORCH_WEIGHT_NAMES)} (PyTorch); found {sorted(os.listdir(directory))}")


def _download(repo_id: str, revision: str | None) -> CheckpointFiles:
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    from huggingface_hub import constants as hf_constants  # pylint: disable=import-outside-toplevel
    from huggingface_hub import errors as hf_errors  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise MissingDependencyError(
        f"downloading {repo_id!r} needs huggingface_hub: `pip install huggingface_hub`") from e
  offline = bool(hf_constants.HF_HUB_OFFLINE)
  at = f" at revision {revision!r}" if revision else ""

  def fetch(filename: str) -> str | None:
    """Path of a downloaded/cached file; None if the repo does not have it."""
    try:
      return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision)
    except hf_errors.LocalEntryNotFoundError as e:
      # Not cached, and offline (HF_HUB_OFFLINE) or the hub is unreachable.
      reason = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
      raise CheckpointNotFoundError(
          f"{repo_id}{at}: {filename} is not in the local Hugging Face cache and {reason}. "
          f"Fix: download it once with network access (`hf download {repo_id}"
          f"{' --revision ' + revision if revision else ''}`, with HF_HUB_OFFLINE unset), point "
          f"HF_HOME / HF_HUB_CACHE at a cache that has it, or pass a local directory with "
          f"config.json and the weights.") from e
    except hf_errors.EntryNotFoundError:
      return None
    except hf_errors.RepositoryNotFoundError as e:
      raise CheckpointNotFoundError(
          f"hub repo {repo_id!r} does not exist or is private (log in with `hf auth login`)") from e
    except hf_errors.RevisionNotFoundError as e:
      raise CheckpointNotFoundError(f"hub repo {repo_id!r} has no revision {revision!r}") from e

  config = fetch(CONFIG_NAME)
  if config is None:
    raise CheckpointNotFoundError(f"hub repo {repo_id}{at} has no {CONFIG_NAME}")
  for name in TORCH_WEIGHT_NAMES:
    weights = _fetch_if_listed(fetch, repo_id, revision, name, offline, huggingface_hub)
    if weights is not None:
      return CheckpointFiles("torch", config, weights)
  raise CheckpointNotFoundError(
      f"hub repo {repo_id}{at} has neither of {list(TORCH_WEIGHT_NAMES)}")


def _fetch_if_listed(fetch, repo_id, revision, name, offline, huggingface_hub) -> str | None:
  """Fetches `name` unless the repo surely lacks it. Offline, a file that is not cached is
  skipped when another weight file is cached (so a cached .bin is found)."""
  if offline:
    cached = huggingface_hub.try_to_load_from_cache(repo_id, name, revision=revision)
    if not isinstance(cached, str):
      others = [n for n in TORCH_WEIGHT_NAMES if n != name and isinstance(
          huggingface_hub.try_to_load_from_cache(repo_id, n, revision=revision), str)]
      if others:
        return None
  return fetch(name)
