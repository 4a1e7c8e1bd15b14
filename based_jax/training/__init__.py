"""Training Based LMs in JAX: optimizer, data, train loop, checkpoints, and `based-jax train`."""

from based_jax.training.checkpoint import restore, save, save_model
from based_jax.training.data import ByteTextData, MQARData, pydoc_corpus
from based_jax.training.loop import TrainState, init_state, make_train_step, train
from based_jax.training.optim import OptimConfig, make_optimizer

__all__ = ["ByteTextData", "MQARData", "OptimConfig", "TrainState", "init_state",
           "make_optimizer", "make_train_step", "pydoc_corpus", "restore", "save", "save_model",
           "train"]
