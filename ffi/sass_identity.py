"""Check that a change left kernels' machine code byte-identical (no GPU needed, nvcc only).

    python -m ffi.sass_identity REV [--source ffi/based_attention_wgmma.cu] [--rename OLD=NEW ...]

Compiles SOURCE as of git revision REV and as in the working tree to sm_90a cubins (the flags of
ffi.build) and compares every kernel's .text section (the SASS). --rename maps a kernel's mangled
name at REV to its name now (e.g. a template parameter was appended: OLD and NEW are substrings,
replaced in REV's names). Prints one line per kernel of REV: IDENTICAL, DIFFERS or MISSING; exits 1
unless all are identical. Used for based_attention_wgmma.cu's segments / gram_sums options, whose
default kernels gained a trailing `bool kGram = false` template parameter:

    python -m ffi.sass_identity 6af8159 --rename EEEvNS_6ParamsE=ELb0EEEvNS_6ParamsE
"""

import argparse
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from ffi import _compile

REPO = Path(__file__).resolve().parents[1]


def text_sections(cubin: bytes) -> dict[str, bytes]:
  """{kernel mangled name: .text bytes} of an ELF64 little-endian cubin."""
  assert cubin[:4] == b"\x7fELF" and cubin[4] == 2, "not an ELF64 file"
  shoff, = struct.unpack_from("<Q", cubin, 0x28)
  shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
  headers = []
  for i in range(shnum):
    name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize)
    headers.append((name, offset, size))
  strtab = headers[shstrndx][1]
  out = {}
  for name, offset, size in headers:
    end = cubin.index(b"\0", strtab + name)
    section = cubin[strtab + name:end].decode()
    if section.startswith(".text."):
      out[section[len(".text."):]] = cubin[offset:offset + size]
  return out


def compile_cubin(source: Path, out: Path, nvcc: str) -> bytes:
  """source -> cubin bytes with ffi.build's code-generation flags."""
  flags = [f for f in _compile.NVCC_FLAGS if f not in ("-shared", "-Xcompiler", "-fPIC")]
  cmd = [nvcc, *flags, "-cubin", f"-I{_compile.include_dir()}", str(source), "-o", str(out)]
  subprocess.run(cmd, check=True, capture_output=True, text=True)
  return out.read_bytes()


def compare(old: dict[str, bytes], new: dict[str, bytes], renames: list[tuple[str, str]]) -> list[str]:
  """One line per kernel of `old`."""
  lines = []
  for name, code in sorted(old.items()):
    now = name
    for a, b in renames:
      now = now.replace(a, b)
    if now not in new:
      lines.append(f"MISSING    {name} (as {now})")
    else:
      lines.append(f"{'IDENTICAL' if new[now] == code else 'DIFFERS':10s} {name} ({len(code)} bytes)")
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ffi.sass_identity", description=__doc__.split("\n\n")[0])
  parser.add_argument("rev", help="git revision to compare against")
  parser.add_argument("--source", default="ffi/based_attention_wgmma.cu", help="path relative to the repo")
  parser.add_argument("--rename", action="append", default=[], help="OLD=NEW substring of mangled names")
  args = parser.parse_args(argv)
  nvcc = _compile.find_nvcc()
  if nvcc is None:
    print("sass_identity: nvcc not found", file=sys.stderr)
    return 2
  renames = [tuple(r.split("=", 1)) for r in args.rename]
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    old_source = tmp / Path(args.source).name  # same directory layout does not matter: no local includes
    old_source.write_bytes(subprocess.run(["git", "show", f"{args.rev}:{args.source}"], cwd=REPO, check=True,
                                          capture_output=True).stdout)
    old = text_sections(compile_cubin(old_source, tmp / "old.cubin", nvcc))
    new = text_sections(compile_cubin(REPO / args.source, tmp / "new.cubin", nvcc))
  lines = compare(old, new, renames)
  print("\n".join(lines))
  return 0 if lines and all(line.startswith("IDENTICAL") for line in lines) else 1


if __name__ == "__main__":
  sys.exit(main())
