"""Static look at a refused pickle: which globals it would import. Nothing is executed.

torch's weights_only unpickler stops at the first opcode it does not allow and does not always
name a global ("Unsupported operand 149" for a protocol-4 frame). To tell a pickle that wants to
run code from a file that is simply not a pickle, this walks the opcode stream with
`pickletools.genops` (a parser, not an unpickler) and lists the `module.name` globals it imports.
"""

import io
import pickletools
import zipfile

# Globals a plain torch state dict legitimately references.
_SAFE_MODULES = ("torch", "collections", "_codecs", "numpy")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def _pickle_bytes(path: str) -> bytes:
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
      if name is None:
        raise ValueError("zip archive without a data.pkl entry")
      return z.read(name)
  with open(path, "rb") as f:
    return f.read()


def imported_globals(path: str) -> list[str]:
  """`module.name` of every GLOBAL / STACK_GLOBAL in the (first) pickle of `path`.

  Raises ValueError when the bytes are not a pickle stream.
  """
  found: list[str] = []
  stack: list[str | None] = []  # recent pushes that are strings (None: something else)
  memo: dict[int, str | None] = {}
  for op, arg, _ in pickletools.genops(io.BytesIO(_pickle_bytes(path))):
    if op.name in _STRING_OPS:
      stack.append(arg if isinstance(arg, str) else str(arg))
    elif op.name == "GLOBAL":
      found.append(str(arg).replace(" ", "."))
    elif op.name == "STACK_GLOBAL":
      if len(stack) >= 2 and None not in stack[-2:]:
        found.append(f"{stack[-2]}.{stack[-1]}")
      else:
        found.append("<unknown>.<unknown>")
    elif op.name == "MEMOIZE":
      memo[len(memo)] = stack[-1] if stack else None
    elif op.name in _MEMO_PUT:
      memo[arg] = stack[-1] if stack else None
    elif op.name in _MEMO_GET:
      stack.append(memo.get(arg))
    else:
      stack.append(None)
  return found


def unsafe_globals(path: str) -> list[str]:
  """The imported globals outside the modules a state dict needs (torch, collections, ...)."""
  return [g for g in imported_globals(path) if g.split(".")[0] not in _SAFE_MODULES]
