"""Test-wide setup: gpu-marked tests run only where JAX sees a CUDA GPU."""

import functools

import pytest


@functools.cache
def _has_gpu() -> bool:
  import jax

  try:
    return any(d.platform == "gpu" for d in jax.devices())
  except RuntimeError:
    return False


def pytest_collection_modifyitems(config, items):
  if _has_gpu():
    return
  skip = pytest.mark.skip(reason="needs a CUDA GPU (gpu marker); none is visible to JAX here")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)
