"""Python side of the FFI package on any machine: import hygiene, argument errors, availability."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import ffi
from based_jax.ops import LinearAttentionState
from ffi import _loader, availability

REPO = Path(__file__).resolve().parents[2]


def _args(b=2, length=5, h=3, dv=64, dtype=jnp.bfloat16):
  q = jnp.ones((b, length, h, 16), dtype)  # [B, L, H, F]
  v = jnp.ones((b, length, h, dv), dtype)  # [B, L, H, Dv]
  return q, q, v


def test_import_pulls_in_neither_torch_nor_the_library():
  code = ("import sys, ffi, based_jax; "
          "assert 'torch' not in sys.modules; "
          "from ffi import _loader; assert _loader._library is None; print('ok')")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "change,name",
    [
        (lambda q, k, v: (q.astype(jnp.float32), k, v), "q"),
        (lambda q, k, v: (q, k.astype(jnp.float16), v), "k"),
        (lambda q, k, v: (q, k, v.astype(jnp.float32)), "v"),
        (lambda q, k, v: (q, k, v[..., :48]), "v"),
        (lambda q, k, v: (q[..., :8], k[..., :8], v), "q"),
        (lambda q, k, v: (q, k[:, :4], v), "k"),
        (lambda q, k, v: (q, k, v[:, :4]), "v"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(change, name):
  q, k, v = change(*_args())
  with pytest.raises(ValueError, match=rf"\b{name}\b"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None)


def test_bad_initial_state_and_attributes():
  q, k, v = _args()
  bad_kv = LinearAttentionState(jnp.zeros((2, 3, 273, 32)), jnp.zeros((2, 3, 273)))
  with pytest.raises(ValueError, match=r"initial_state\.kv"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=bad_kv)
  bad_ks = LinearAttentionState(jnp.zeros((2, 3, 273, 64)), jnp.zeros((2, 3, 272)))
  with pytest.raises(ValueError, match=r"initial_state\.k_state"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=bad_ks)
  with pytest.raises(ValueError, match="eps"):
    ffi.linear_attention(q, k, v, normalize=True, eps=float("nan"), initial_state=None)
  with pytest.raises(ValueError, match="eps"):
    ffi.linear_attention(q, k, v, normalize=True, eps=jnp.float32(1e-6), initial_state=None)
  with pytest.raises(ValueError, match="normalize"):
    ffi.linear_attention(q, k, v, normalize=1, eps=1e-6, initial_state=None)


def test_validation_happens_before_the_library_is_touched(monkeypatch):
  def fail():
    raise AssertionError("library loaded for invalid arguments")

  monkeypatch.setattr(_loader, "ensure_registered", fail)
  q, k, v = _args(dv=40)
  with pytest.raises(ValueError):
    jax.jit(lambda q, k, v: ffi.linear_attention(q, k, v, normalize=False, eps=0.0, initial_state=None))(q, k, v)


@pytest.mark.parametrize("dv,ok", [(64, True), (112, True), (128, True), (56, True), (48, False), (100, False)])
def test_supported_value_dims(dv, ok):
  assert availability.supported_value_dim(dv) is ok
  reason = availability.shape_reason(*_args(dv=dv))
  assert (reason is None) is ok
  if not ok:
    assert f"Dv={dv}" in reason


def test_unavailable_reason_explains_dtype_and_gpu():
  q, k, v = _args(dtype=jnp.float32)
  assert "bfloat16" in ffi.unavailable_reason(q, k, v)
  q, k, v = _args()
  if jax.default_backend() != "gpu":
    reason = ffi.unavailable_reason(q, k, v)
    assert reason is not None and "GPU" in reason
    with pytest.raises(RuntimeError, match="GPU"):
      ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None)


def test_library_reason(monkeypatch, tmp_path):
  monkeypatch.setenv("BASED_JAX_CACHE_DIR", str(tmp_path))  # empty cache: nothing built
  monkeypatch.delenv(_loader.LIBRARY_ENV, raising=False)
  monkeypatch.setattr(availability.build, "find_nvcc", lambda: None)
  reason = availability.library_reason()
  assert reason is not None and "nvcc" in reason and "python -m ffi.build" in reason
  monkeypatch.setattr(availability.build, "find_nvcc", lambda: "/usr/bin/nvcc")
  assert availability.library_reason() is None  # buildable now
  monkeypatch.setenv(_loader.LIBRARY_ENV, str(tmp_path / "missing.so"))
  assert "does not exist" in availability.library_reason()
  built = tmp_path / "ffi" / availability.build.cache_key() / availability.build.LIBRARY_NAME
  built.parent.mkdir(parents=True)
  built.write_bytes(b"")
  monkeypatch.delenv(_loader.LIBRARY_ENV)
  monkeypatch.setattr(availability.build, "find_nvcc", lambda: None)
  assert availability.library_reason() is None  # built already
  assert _loader.library_path() == built



@pytest.mark.parametrize("kernel", ["bogus", "WGMMA", None, 1])
def test_unknown_kernel_raises_value_error_naming_it(kernel):
  q, k, v = _args()
  with pytest.raises(ValueError, match=r"\bkernel\b"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, kernel=kernel)


@pytest.mark.parametrize(
    "change,name",
    [
        (lambda q, k, v: (q.astype(jnp.float32), k, v), "q"),
        (lambda q, k, v: (q, k, v[..., :48]), "v"),
        (lambda q, k, v: (q, k[:, :4], v), "k"),
    ],
)
def test_wgmma_kernel_validates_like_the_default(change, name, monkeypatch):
  def fail():
    raise AssertionError("library loaded for invalid arguments")

  monkeypatch.setattr(_loader, "ensure_registered", fail)
  q, k, v = change(*_args())
  with pytest.raises(ValueError, match=rf"\b{name}\b"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, kernel="wgmma")


def test_kernel_selection_and_targets():
  from ffi import _compile
  from ffi import based_attention as ba

  assert ba.KERNELS == ("wgmma", "wgmma_smem", "mma_sync") and ba.DEFAULT_KERNEL == "wgmma"
  assert ba._targets("mma_sync") == (ba.TARGET, ba.TARGET_INIT, ba.TARGET_INTO, 273)
  for wgmma in ("wgmma", "wgmma_smem"):
    assert ba._targets(wgmma) == (ba.WGMMA_TARGET, ba.WGMMA_TARGET_INIT, ba.WGMMA_TARGET_INTO, 192)
  # the two wgmma kernels differ in one attribute of the same handlers
  assert ba._kernel_attrs("wgmma", True, 1e-6)["register_operands"] is True
  assert ba._kernel_attrs("wgmma_smem", True, 1e-6)["register_operands"] is False
  assert "register_operands" not in ba._kernel_attrs("mma_sync", True, 1e-6)
  for target in ba._targets("wgmma")[:3] + ba._targets("mma_sync")[:3]:
    assert _loader.TARGETS[target] in _compile.HANDLER_SYMBOLS
  out, kv, ks = ba._result_types(*_args()[::2], rows=192)
  assert kv.shape == (2, 3, 192, 64) and ks.shape == (2, 3, 192) and out.shape == (2, 5, 3, 64)


def test_wgmma_kernel_needs_a_gpu_here():
  q, k, v = _args()
  if jax.default_backend() != "gpu":
    with pytest.raises(RuntimeError, match="GPU"):
      ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, kernel="wgmma")


def test_wgmma_forward_traces_with_state_conversions(monkeypatch):
  """The wgmma path's jaxpr (no GPU needed to trace): psi-shaped FFI results, converted to 273 rows."""
  from ffi import based_attention as ba

  monkeypatch.setattr(_loader, "ensure_registered", lambda: None)
  q, k, v = _args(dv=112)
  kv0 = jnp.zeros((2, 3, 273, 112), jnp.float32)
  ks0 = jnp.zeros((2, 3, 273), jnp.float32)
  shapes = jax.eval_shape(lambda q, k, v, a, b: ba._ffi_forward(q, k, v, (a, b), True, 1e-6, "wgmma"),
                          q, k, v, kv0, ks0)
  out, (kv, ks) = shapes
  assert out.shape == v.shape and kv.shape == (2, 3, 273, 112) and ks.shape == (2, 3, 273)
  text = str(jax.make_jaxpr(lambda q, k, v: ba._ffi_forward(q, k, v, None, False, 0.0, "wgmma"))(q, k, v))
  assert ba.WGMMA_TARGET in text and "192" in text
