"""Mamba baseline (hazyresearch/mamba-360m) in Flax, served by the same generation engine.

    from based_jax.mamba import MambaConfig, MambaLM
    model = MambaLM(MambaConfig.mamba_360m(), dtype=jnp.bfloat16)
"""

from based_jax.mamba.config import MambaConfig, SsmConfig, is_mamba_config, mamba_360m
from based_jax.mamba.model import MambaCache, MambaLayerCache, MambaLM, MambaMixer

__all__ = ["MambaCache", "MambaConfig", "MambaLM", "MambaLayerCache", "MambaMixer", "SsmConfig",
           "is_mamba_config", "mamba_360m"]
