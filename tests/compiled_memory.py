"""What a compiled program allocates, read from its optimized HLO text.

`largest_array_bytes` gives the size of the biggest array any instruction of the program
produces (tuple members included). A test that the prefill holds no [L, L] buffer compares it
with L * L bytes (one boolean [L, L] mask) directly, so the check does not depend on how XLA's
gemm autotuner splits the work. The total temporaries do: on the H200 the fp32 8192-token
attention prefill sends its score gemm to cuBLASLt (a separate output beside the softmax
fusion's, plus a 32 MiB workspace) where the 4096-token one uses a Triton fusion; that doubles
the number of live [H, L, 256] score blocks, and the temporaries grew x3.29 from 4096 to 8192
tokens, then x2.00 from 8192 to 16384 (s10).
"""

import math
import re

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# `f32[4,8192,256]{2,1,0}`, `pred[]`, `s8[33554432]{0}`, `f8e4m3fn[16]`: a dtype, its dimensions.
_ARRAY = re.compile(r"\b(pred|[su](?:8|16|32|64)|b?f(?:16|32|64)|f8e\w+|c64|c128)\[([\d,]*)\]")
# `%name = <result shape> op(...)`: the shape an instruction produces, before the op name.
_RESULT = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s[\w\-]+\(")


def array_sizes(hlo_text: str) -> list[tuple[str, int]]:
  """(shape, bytes) of every array an instruction of `hlo_text` produces."""
  sizes = []
  for line in hlo_text.splitlines():
    if result := _RESULT.match(line):
      for dtype, dims in _ARRAY.findall(result.group(1)):
        shape = [int(d) for d in dims.split(",") if d]
        sizes.append((f"{dtype}[{dims}]", math.prod(shape) * _BYTES.get(dtype, 1)))
  return sizes


def largest_array_bytes(hlo_text: str) -> tuple[str, int]:
  """(shape, bytes) of the largest array produced in `hlo_text`; ("", 0) if it has none."""
  return max(array_sizes(hlo_text), key=lambda size: size[1], default=("", 0))
