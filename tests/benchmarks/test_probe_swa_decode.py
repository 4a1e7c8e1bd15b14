"""benchmarks/probes/probe_swa_decode.py: its formulations agree with a float32 reference."""

import numpy as np
import pytest

from benchmarks.probes import probe_swa_decode


@pytest.mark.parametrize("shape", [(3, 2, 9, 16), (2, 4, 65, 64)])
def test_formulations_match_the_float32_reference(shape):
  results = probe_swa_decode.run(*shape, iterations=1, with_cudnn=False)
  assert set(results) == {"floor_ms", "ring", "head_major"}
  for name in ("ring", "head_major"):
    assert "error" not in results[name], results[name]
    assert 0 < results[name]["max_diff"] < 2e-2, (name, results[name])   # bf16 output rounding


def test_head_major_is_the_ring_math_on_the_transposed_cache():
  seed = int(np.random.default_rng().integers(1 << 30))
  q, k, v, valid = probe_swa_decode.make_inputs(2, 3, 7, 8, seed=seed)
  k_t, v_t = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)   # [B, H, S, D]
  fns = probe_swa_decode.formulations(scale=0.3, with_cudnn=False)
  ring = np.asarray(fns["ring"][0](q, k, v, valid), np.float32)
  head_major = np.asarray(fns["head_major"][0](q, k_t, v_t, valid), np.float32)
  np.testing.assert_allclose(head_major, ring, atol=2e-2, rtol=2e-2)
  only_first = valid.at[:, 1:].set(False)   # one valid slot: the output is its value row
  out = np.asarray(fns["head_major"][0](q, k_t, v_t, only_first), np.float32)
  np.testing.assert_allclose(out, np.asarray(v[:, 0], np.float32), atol=1e-2)
