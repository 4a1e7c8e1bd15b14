"""BasedLM vs the independent PyTorch reference, through the real hub-format -> convert path.

Each tiny case (tests/torch_ref/checkpoints.py: every mixer, both linear-attention variants,
attention-only, Dh 16 / 24 / 64, odd windows) is written as a hub directory, converted with
`based-jax-convert`'s library entry point, loaded with `from_pretrained`, and compared with the
PyTorch model run in float64:
- float32: max|jax - torch| / max|torch| <= 1e-5;
- bfloat16 policy: the same ratio <= 2e-2 and >= 99% argmax agreement;
- greedy recurrent generation: identical tokens.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from based_jax import generation  # pylint: disable=g-import-not-at-top
from based_jax.pretrained import from_pretrained  # pylint: disable=g-import-not-at-top
from convert import convert_checkpoint  # pylint: disable=g-import-not-at-top
from tests.torch_ref import checkpoints as ck  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.torch

# Lengths: 1 (a single token), 7 (< window), 63 / 65 (around a 64 tile), 200 (> every window).
ALL_LENGTHS = (1, 7, 63, 65, 200)
# Every case runs two lengths; the first case runs all of them (each length is one compile).
CASES = [(ck.TINY_CASES[0].name, n) for n in ALL_LENGTHS] + [
    (c.name, n) for c in ck.TINY_CASES[1:] for n in (7, 65)]
# The weight file each case is converted from (every format is exercised here; the converter
# tests check that all formats give identical params).
FORMATS = {c.name: f for c, f in zip(
    ck.TINY_CASES, ("bin_lightning", "safetensors", "bin", "bin_lightning", "safetensors"))}
BATCH = 2


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
  """max|got - want| / max|want| (float64)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


class _Converted:
  """One case: the float64 torch model and the converted JAX model + params."""

  def __init__(self, case: ck.TinyCase, root):
    seed = sum(map(ord, case.name))
    self.torch_model = case.build(seed=seed).double()
    hub_dir, jax_dir = root / "hub", root / "jax"
    ck.write_hub_dir(hub_dir, case.config, case.build(seed=seed), FORMATS[case.name])
    convert_checkpoint(hub_dir, jax_dir, progress=False)
    self.dir = jax_dir
    self.model, self.params = from_pretrained(jax_dir, dtype=jnp.float32, la_impl="reference")
    self.apply = jax.jit(self.model.apply)
    self.vocab = case.config["vocab_size"]

  def ids(self, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, self.vocab, (BATCH, length))

  def torch_logits(self, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
      return self.torch_model(torch.from_numpy(ids)).numpy()


_CACHE: dict[str, _Converted] = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  def get(name: str) -> _Converted:
    if name not in _CACHE:
      _CACHE[name] = _Converted(ck.CASES_BY_NAME[name], tmp_path_factory.mktemp(name))
    return _CACHE[name]

  yield get
  _CACHE.clear()


@pytest.mark.parametrize("name,length", CASES, ids=[f"{n}-L{l}" for n, l in CASES])
def test_fp32_logits_match_torch(converted, name, length):
  c = converted(name)
  ids = c.ids(length, seed=length)
  want = c.torch_logits(ids)  # [B, L, Vp]
  got = np.asarray(c.apply({"params": c.params}, jnp.asarray(ids, jnp.int32)))
  assert got.shape == want.shape == (BATCH, length, c.model.config.vocab_size_padded)
  assert got.dtype == np.float32
  err = rel_err(got, want)
  assert err <= 1e-5, f"{name} L={length}: max|diff|/max|ref| = {err:.3e}"


@pytest.mark.parametrize("name", [c.name for c in ck.TINY_CASES])
def test_bf16_policy_close_to_torch(converted, name):
  c = converted(name)
  model = c.model.clone(dtype=jnp.bfloat16)
  ids = c.ids(65, seed=7)
  want = c.torch_logits(ids)
  got = np.asarray(jax.jit(model.apply)({"params": c.params}, jnp.asarray(ids, jnp.int32)))
  assert got.dtype == np.float32  # logits stay float32 under the bf16 policy
  err = rel_err(got, want)
  agree = float((got.argmax(-1) == want.argmax(-1)).mean())
  assert err <= 2e-2, f"{name} bf16: max|diff|/max|ref| = {err:.3e}"
  assert agree >= 0.99, f"{name} bf16: argmax agreement {agree:.3%}"
  # The bf16 run must really differ from fp32 (the policy is applied, not ignored).
  fp32 = np.asarray(c.apply({"params": c.params}, jnp.asarray(ids, jnp.int32)))
  assert rel_err(got, fp32) > 1e-5


def test_chunked_linear_attention_matches_torch(converted):
  """The O(L) chunked path inside the model, at a length that is not a chunk multiple."""
  c = converted(ck.TINY_CASES[0].name)
  model = c.model.clone(la_impl="chunked")
  ids = c.ids(200, seed=3)
  got = np.asarray(jax.jit(model.apply)({"params": c.params}, jnp.asarray(ids, jnp.int32)))
  err = rel_err(got, c.torch_logits(ids))
  assert err <= 1e-5, f"chunked: max|diff|/max|ref| = {err:.3e}"


@pytest.mark.parametrize("name", [c.name for c in ck.TINY_CASES])
def test_greedy_generation_matches_torch_recurrence(converted, name):
  """JAX prefill + decode loop vs the torch prefill + one-token recurrent steps."""
  c = converted(name)
  ids = c.ids(19, seed=11)  # 19 > every window in the cases: the SWA ring wraps
  num_new = 12
  want = c.torch_model.generate_greedy(torch.from_numpy(ids), num_new).numpy()  # [B, T]
  out = generation.generate(c.model, c.params, jnp.asarray(ids, jnp.int32),
                            max_new_tokens=num_new, prompt_buckets=None)
  np.testing.assert_array_equal(out.tokens, want, err_msg=f"{name}: greedy tokens differ")
  # Sanity: the reference recurrence agrees with its own parallel forward on the first token.
  first = c.torch_logits(ids)[:, -1].argmax(-1)
  np.testing.assert_array_equal(want[:, 0], first)


def test_from_pretrained_converts_torch_dir_on_the_fly(converted, tmp_path):
  """A PyTorch directory loads directly (in-memory conversion) to the same params."""
  case = ck.TINY_CASES[2]
  c = converted(case.name)
  ck.write_hub_dir(tmp_path, case.config, case.build(seed=sum(map(ord, case.name))), "bin")
  model, params = from_pretrained(tmp_path, dtype=jnp.float32, la_impl="reference")
  assert model.config == c.model.config
  leaves = jax.tree_util.tree_leaves_with_path(params)
  want = dict(jax.tree_util.tree_leaves_with_path(c.params))
  assert len(leaves) == len(want)
  for path, leaf in leaves:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want[path]), err_msg=str(path))
