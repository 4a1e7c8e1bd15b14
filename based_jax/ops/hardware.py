"""Which accelerator is here: the check the Hopper-only kernels share."""

import jax


def hopper_unavailable_reason(kernel: str) -> str | None:
  """None when JAX sees an NVIDIA Hopper GPU (compute capability 9.x); else why `kernel` can't run."""
  try:
    gpus = jax.devices("gpu")
  except RuntimeError:
    gpus = []
  if not gpus:
    return f"no GPU visible to JAX ({kernel} needs an NVIDIA Hopper GPU, sm_90)"
  capability = str(getattr(gpus[0], "compute_capability", ""))
  if not capability.startswith("9."):
    return (f"{kernel} needs a Hopper GPU (sm_90); found {gpus[0].device_kind} "
            f"(compute capability {capability or 'unknown'})")
  return None
