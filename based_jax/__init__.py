"""based-jax: the Based linear-attention language models in JAX/Flax."""

from based_jax.config import BasedConfig
from based_jax.model import BasedCache, BasedLM, Block

__all__ = ["BasedCache", "BasedConfig", "BasedLM", "Block"]
