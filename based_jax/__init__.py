"""based-jax: the Based linear-attention language models in JAX/Flax."""

from based_jax.config import BasedConfig

__all__ = ["BasedConfig"]
