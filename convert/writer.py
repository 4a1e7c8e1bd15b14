"""A streaming safetensors writer: the header first, then one tensor at a time.

`safetensors.numpy.save_file` needs every array in memory at once; this writes the same file
format (8-byte little-endian header length, JSON header, raw little-endian data) while holding
a single tensor, so converting never needs more than the checkpoint plus one tensor of RAM.
The file is written under a temporary name and renamed at the end, so a failed conversion
never leaves a half-written `params.safetensors`.
"""

import json
import os
import struct
import sys
from collections.abc import Iterable

import ml_dtypes
import numpy as np

_DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16",
                np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}


def write_safetensors(path: str | os.PathLike,
                      layout: list[tuple],
                      dtype: np.dtype,
                      arrays: Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> None:
  """Writes `arrays` (yielded lazily, in `layout` order) as one safetensors file.

  layout: [(name, shape)] or [(name, shape, dtype)] of every tensor, known before any data is
    produced; an entry without its own dtype uses `dtype`.
  arrays: yields (name, array) matching `layout` one by one; each is cast to its dtype.
  """
  if sys.byteorder != "little":
    raise RuntimeError("safetensors files are little-endian; this writer supports little-endian hosts")
  layout = [(e[0], tuple(e[1]), np.dtype(e[2] if len(e) > 2 else dtype)) for e in layout]
  header: dict[str, object] = {"__metadata__": dict(metadata or {})}
  offset = 0
  for name, shape, entry_dtype in layout:
    nbytes = int(np.prod(shape, dtype=np.int64)) * entry_dtype.itemsize
    header[name] = {"dtype": _DTYPE_NAMES[entry_dtype], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
  path = os.fspath(path)
  tmp = path + ".partial"
  try:
    with open(tmp, "wb") as f:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      expected = iter(layout)
      for name, array in arrays:
        want_name, want_shape, want_dtype = next(expected, (None, None, None))
        if name != want_name or tuple(array.shape) != tuple(want_shape):
          raise RuntimeError(f"writer got {name} {array.shape}, expected {want_name} {want_shape}")
        np.ascontiguousarray(array, dtype=want_dtype).tofile(f)  # native order: little-endian
      missing = [n for n, _, _ in expected]
      if missing:
        raise RuntimeError(f"writer did not receive {missing}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
