"""PyTorch Based checkpoints -> based-jax (config.json + params.safetensors).

CLI: `based-jax-convert SRC DST` (or `python -m convert`). Library:
`convert_checkpoint(src, dst, dtype=...)` writes a converted directory; `load_params(src)` converts
in memory. Every failure is a `CheckpointError` (a ValueError) that names the problem.
"""

from convert.errors import (CheckpointError, CheckpointNotFoundError, ConfigMismatchError,
                            CorruptCheckpointError, MissingDependencyError, UnsafeCheckpointError)
from convert.torch_to_flax import convert_checkpoint, load_params, plan_conversion

__all__ = [
    "CheckpointError", "CheckpointNotFoundError", "ConfigMismatchError", "CorruptCheckpointError",
    "MissingDependencyError", "UnsafeCheckpointError", "convert_checkpoint", "load_params",
    "plan_conversion",
]
