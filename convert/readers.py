"""Lazy readers for PyTorch weight files: `pytorch_model.bin` and `model.safetensors`.

Both give a `{name: TensorRef}` dict whose entries know their shape and dtype without reading
data; `TensorRef.load()` reads one tensor as a NumPy array (bfloat16 via ml_dtypes).

`.bin` files are torch pickles. They are opened with `torch.load(weights_only=True,
mmap=True)`: torch's restricted unpickler only rebuilds tensors and plain containers, so a
pickle that would import or call anything else is refused before any of it runs.
"""

import contextlib
import dataclasses
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator

import numpy as np

from convert import pickle_scan
from convert.errors import (CorruptCheckpointError, MissingDependencyError,
                            UnsafeCheckpointError, CheckpointError)


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """One stored tensor: metadata now, data on `load()`."""

  shape: tuple[int, ...]
  dtype: str  # "float32", "bfloat16", "float16", "int64", ...
  load: Callable[[], np.ndarray]

  @property
  def is_floating(self) -> bool:
    return self.dtype in ("float64", "float32", "bfloat16", "float16")


@contextlib.contextmanager
def open_weights(path: str | os.PathLike) -> Iterator[dict[str, TensorRef]]:
  """Opens a `.bin` or `.safetensors` file lazily; the refs are valid inside the `with`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CorruptCheckpointError(f"weight file {path!r} does not exist or is not a file")
  if path.endswith(".safetensors"):
    with _open_safetensors(path) as refs:
      yield refs
  elif path.endswith((".bin", ".pt", ".pth")):
    yield _open_torch_pickle(path)
  else:
    raise CheckpointError(
        f"weight file {path!r}: unknown format; expected pytorch_model.bin or model.safetensors")


# ---- torch pickles (.bin) -------------------------------------------------------------------


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise MissingDependencyError(
        "reading a PyTorch .bin checkpoint needs torch (CPU is enough): "
        "`pip install 'based-jax[torch]'`, or convert from a model.safetensors instead") from e
  return torch


def _torch_to_numpy(t) -> np.ndarray:
  import ml_dtypes  # pylint: disable=import-outside-toplevel

  torch = _import_torch()
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:  # numpy has no bf16: reinterpret the bits
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def _open_torch_pickle(path: str) -> dict[str, TensorRef]:
  torch = _import_torch()
  size = os.path.getsize(path)
  is_zip = zipfile.is_zipfile(path)
  try:
    # Legacy (pre-1.6, non-zip) files cannot be memory-mapped; they are still weights_only.
    with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not the user's concern
      warnings.simplefilter("ignore")
      sd = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
  except pickle.UnpicklingError as e:
    if "weights only load failed" in str(e).lower():
      raise _refused(path, size, is_zip, e) from None
    raise _corrupt(path, size, is_zip, e) from None
  except Exception as e:  # pylint: disable=broad-except  # torch raises RuntimeError, EOFError, ...
    raise _corrupt(path, size, is_zip, e) from None
  if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
    sd = sd["state_dict"]  # a Lightning .ckpt wraps the weights
  if not isinstance(sd, dict):
    raise CheckpointError(f"{path!r} holds a {type(sd).__name__}, expected a state dict")
  not_tensors = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
  if not_tensors:
    raise CheckpointError(f"{path!r}: entries that are not tensors: {not_tensors}")
  return {
      k: TensorRef(tuple(v.shape), str(v.dtype).removeprefix("torch."),
                   lambda v=v: _torch_to_numpy(v))
      for k, v in sd.items()
  }


def _refused(path: str, size: int, is_zip: bool, e: BaseException) -> CheckpointError:
  """Why torch's restricted unpickler stopped: code in the pickle, or not a pickle at all."""
  reason = _unpickler_reason(e)
  try:
    bad = pickle_scan.unsafe_globals(path)  # a static parse; executes nothing
  except Exception:  # pylint: disable=broad-except  # not a pickle stream
    bad = None
  if bad or "global" in reason.lower():
    names = f" It imports {', '.join(dict.fromkeys(bad))}." if bad else ""
    return UnsafeCheckpointError(
        f"{path!r} is a pickle that asks to import or call objects other than tensors; it was "
        f"refused without running any of it (torch.load weights_only=True).{names} Only load "
        f"checkpoints you trust, or use a model.safetensors. torch said: {reason}")
  if bad is None:
    return _corrupt(path, size, is_zip, e)
  return CheckpointError(
      f"{path!r} uses a pickle construct that torch's safe loader does not support (torch said: "
      f"{reason}); re-save it with torch.save(state_dict) or use a model.safetensors")


def _unpickler_reason(e: BaseException) -> str:
  """The line of torch's weights_only error that names the refused global."""
  lines = [ln.strip() for ln in str(e).splitlines()]
  for ln in lines:
    if "unsupported" in ln.lower():  # "... unsupported GLOBAL posix.system", "Unsupported operand"
      return ln
  return _first_line(e)


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _corrupt(path: str, size: int, is_zip: bool, e: BaseException) -> CorruptCheckpointError:
  with open(path, "rb") as f:
    magic = f.read(2)
  hint = ""
  if magic == b"PK" and not is_zip:
    hint = " It starts like a zip archive but its end is missing: the file is probably truncated."
  return CorruptCheckpointError(
      f"could not read {path!r} ({size} bytes) as a torch checkpoint; it is truncated or corrupt "
      f"(re-download it).{hint} torch said: {type(e).__name__}: {_first_line(e)}")


# ---- safetensors ----------------------------------------------------------------------------

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}


@contextlib.contextmanager
def _open_safetensors(path: str) -> Iterator[dict[str, TensorRef]]:
  import jax  # pylint: disable=import-outside-toplevel
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  size = os.path.getsize(path)
  # framework="flax" because safetensors' numpy backend cannot produce bfloat16; pinned to CPU.
  try:
    with jax.default_device(jax.devices("cpu")[0]):
      handle = safe_open(path, framework="flax")
      handle.__enter__()
  except Exception as e:  # pylint: disable=broad-except  # SafetensorError, OSError
    raise CorruptCheckpointError(
        f"could not read {path!r} ({size} bytes) as safetensors; it is truncated or corrupt "
        f"(re-download it). safetensors said: {type(e).__name__}: {_first_line(e)}") from None

  def load(name):
    with jax.default_device(jax.devices("cpu")[0]):
      return np.asarray(handle.get_tensor(name))

  try:
    refs = {}
    for name in handle.keys():
      sl = handle.get_slice(name)
      dtype = _ST_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower())
      refs[name] = TensorRef(tuple(sl.get_shape()), dtype, lambda n=name: load(n))
    yield refs
  finally:
    handle.__exit__(None, None, None)
