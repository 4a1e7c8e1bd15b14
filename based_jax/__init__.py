"""based-jax: the Based linear-attention language models in JAX/Flax."""

from based_jax.config import BasedConfig
from based_jax.generation import GenerationOutput, generate
from based_jax.mamba import MambaConfig, MambaLM
from based_jax.model import BasedCache, BasedLM, Block
from based_jax.pretrained import from_pretrained
from based_jax.sampling import SamplingConfig

__all__ = [
    "BasedCache",
    "BasedConfig",
    "BasedLM",
    "Block",
    "GenerationOutput",
    "MambaConfig",
    "MambaLM",
    "SamplingConfig",
    "from_pretrained",
    "generate",
]
