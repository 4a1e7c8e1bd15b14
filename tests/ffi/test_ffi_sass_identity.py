"""ffi.sass_identity on CPU: cubin .text extraction and the comparison (nvcc needed to compile)."""

import pytest

from ffi import _compile, sass_identity

TINY = """
template <int K> __global__ void scale(float* x) { x[threadIdx.x] *= K; }
template __global__ void scale<2>(float*);
template __global__ void scale<3>(float*);
"""


def test_text_sections_and_compare(tmp_path):
  nvcc = _compile.find_nvcc()
  if nvcc is None:
    pytest.skip("nvcc not found")
  source = tmp_path / "tiny.cu"
  source.write_text(TINY)
  sections = sass_identity.text_sections(sass_identity.compile_cubin(source, tmp_path / "tiny.cubin", nvcc))
  assert set(sections) == {"_Z5scaleILi2EEvPf", "_Z5scaleILi3EEvPf"}
  assert all(len(code) > 0 and len(code) % 16 == 0 for code in sections.values())  # 16-byte sm_90 instructions
  assert sections["_Z5scaleILi2EEvPf"] != sections["_Z5scaleILi3EEvPf"]
  same = sass_identity.compare(sections, sections, [])
  assert all(line.startswith("IDENTICAL") for line in same)
  renamed = sass_identity.compare({"_Z5scaleILi9EEvPf": sections["_Z5scaleILi2EEvPf"]}, sections, [("Li9", "Li2")])
  assert renamed[0].startswith("IDENTICAL")
  swapped = sass_identity.compare({"_Z5scaleILi2EEvPf": sections["_Z5scaleILi3EEvPf"]}, sections, [])
  assert swapped[0].startswith("DIFFERS")
  assert sass_identity.compare({"_Z1fv": b""}, sections, [])[0].startswith("MISSING")
