"""Python side of the FFI package on any machine: import hygiene, argument errors, availability."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
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

  assert ba.KERNELS == ("wgmma", "wgmma_smem", "mma_sync", "wgmma_gram") and ba.DEFAULT_KERNEL == "wgmma"
  assert ba._targets("mma_sync") == (ba.TARGET, ba.TARGET_INIT, ba.TARGET_INTO, 273)
  for wgmma in ("wgmma", "wgmma_smem", "wgmma_gram"):
    assert ba._targets(wgmma) == (ba.WGMMA_TARGET, ba.WGMMA_TARGET_INIT, ba.WGMMA_TARGET_INTO, 192)
  # the wgmma kernels differ in attributes of the same handlers
  assert ba._kernel_attrs("wgmma", True, 1e-6)["register_operands"] is True
  assert ba._kernel_attrs("wgmma_smem", True, 1e-6)["register_operands"] is False
  assert "register_operands" not in ba._kernel_attrs("mma_sync", True, 1e-6)
  assert "segments" not in ba._kernel_attrs("mma_sync", True, 1e-6)
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


def test_default_kernel_attributes_are_the_automatic_plain_launch():
  """The default kernel sends segments=0 (automatic) and gram_sums=False, whatever normalize is."""
  from ffi import based_attention as ba

  for normalize in (True, False):
    attrs = ba._kernel_attrs(ba.DEFAULT_KERNEL, normalize, 1e-6)
    assert attrs["segments"] == 0 and attrs["segments"].dtype == np.int32
    assert attrs["gram_sums"] is False and attrs["register_operands"] is True
  # wgmma_gram: the register kernel, plus Gram rows only without normalization
  assert ba._kernel_attrs("wgmma_gram", True, 1e-6) == ba._kernel_attrs("wgmma", True, 1e-6)
  gram = ba._kernel_attrs("wgmma_gram", False, 1e-6, 8)
  assert gram["gram_sums"] is True and gram["register_operands"] is True and gram["segments"] == 8


@pytest.mark.parametrize("segments", [-1, 1025, 2.0, True, "8", None])
def test_bad_segments_raise_value_error_naming_them(segments, monkeypatch):
  def fail():
    raise AssertionError("library loaded for invalid arguments")

  monkeypatch.setattr(_loader, "ensure_registered", fail)
  q, k, v = _args()
  with pytest.raises(ValueError, match=r"\bsegments\b"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, segments=segments)


def test_segments_are_for_the_wgmma_kernels_only():
  q, k, v = _args()
  with pytest.raises(ValueError, match=r"\bsegments\b.*mma_sync"):
    ffi.linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, kernel="mma_sync", segments=4)
  from ffi import based_attention as ba

  for kernel in ("wgmma", "wgmma_smem", "wgmma_gram"):
    for segments in (0, 1, np.int64(8), ba.MAX_SEGMENTS):
      ba.check_segments(segments, kernel)  # accepted
  ba.check_segments(0, "mma_sync")


@pytest.mark.parametrize("with_state", [False, True])
def test_gram_forward_traces_to_gram_rows_and_a_273_key_state(with_state, monkeypatch):
  """wgmma_gram with normalize=False: the FFI call returns Gram rows [B, H, 17, 16], converted to
  k_state [B, H, 273]; with normalize=True it is the plain kernel's call."""
  from ffi import based_attention as ba

  monkeypatch.setattr(_loader, "ensure_registered", lambda: None)
  q, k, v = _args(dv=112)
  init = (jnp.zeros((2, 3, 273, 112), jnp.float32), jnp.zeros((2, 3, 273), jnp.float32)) if with_state else None
  fwd = lambda normalize, segments: (
      lambda q, k, v: ba._ffi_forward(q, k, v, init, normalize, 1e-6, "wgmma_gram", segments))
  out, (kv, ks) = jax.eval_shape(fwd(False, 4), q, k, v)
  assert out.shape == v.shape and kv.shape == (2, 3, 273, 112) and ks.shape == (2, 3, 273)
  text = str(jax.make_jaxpr(fwd(False, 4))(q, k, v))
  assert "f32[2,3,17,16] = ffi_call" in text and "('gram_sums', True)" in text
  assert "('segments', np.int32(4))" in text
  plain = str(jax.make_jaxpr(fwd(True, 0))(q, k, v))
  assert "('gram_sums', False)" in plain and "17,16" not in plain


@pytest.mark.parametrize("kernel,normalize", [("wgmma", False), ("wgmma_gram", False), ("wgmma_gram", True),
                                              ("mma_sync", True)])
def test_forward_into_traces_with_buffers_of_the_right_shapes(kernel, normalize, monkeypatch):
  """The NaN-poison test hook: the aliased buffers have the shapes the FFI call declares (the Gram
  variant: the first 17 x 16 elements of the 273-row k_state buffer)."""
  from ffi import based_attention as ba

  monkeypatch.setattr(_loader, "ensure_registered", lambda: None)
  q, k, v = _args(dv=64)
  kv0, ks0 = jnp.zeros((2, 3, 273, 64), jnp.float32), jnp.zeros((2, 3, 273), jnp.float32)
  bufs = (jnp.zeros(v.shape, jnp.bfloat16), jnp.zeros((2, 3, 273, 64), jnp.float32),
          jnp.zeros((2, 3, 273), jnp.float32))
  for internal in (False, True):
    out, kv, ks = jax.eval_shape(
        lambda *a: ba._ffi_forward_into(*a, normalize=normalize, eps=1e-6, kernel=kernel, internal=internal,
                                        segments=0 if kernel == "mma_sync" else 4), q, k, v, kv0, ks0, *bufs)
    assert out.shape == v.shape
    if not internal or kernel == "mma_sync":
      assert kv.shape == (2, 3, 273, 64) and ks.shape == (2, 3, 273)
    elif kernel == "wgmma_gram" and not normalize:
      assert kv.shape == (2, 3, 192, 64) and ks.shape == (2, 3, 17, 16)
    else:
      assert kv.shape == (2, 3, 192, 64) and ks.shape == (2, 3, 192)


@pytest.mark.parametrize("kernel,normalize", [("wgmma", True), ("wgmma_gram", False)])
def test_custom_vjp_traces_with_segments(kernel, normalize, monkeypatch):
  """jax.grad through _attention with the new nondiff arguments (kernel, segments): shapes only."""
  from ffi import based_attention as ba

  monkeypatch.setattr(_loader, "ensure_registered", lambda: None)
  q, k, v = _args(dv=64)
  init = (jnp.zeros((2, 3, 273, 64), jnp.float32), jnp.zeros((2, 3, 273), jnp.float32))

  def loss(q, k, v, init):
    out, (kv, ks) = ba._attention(q, k, v, init, normalize, 1e-6, kernel, 8)
    return jnp.sum(out.astype(jnp.float32)) + jnp.sum(kv) + jnp.sum(ks)

  grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2, 3)), q, k, v, init)
  assert grads[0].shape == q.shape and grads[2].shape == v.shape
  assert grads[3][0].shape == (2, 3, 273, 64) and grads[3][1].shape == (2, 3, 273)
