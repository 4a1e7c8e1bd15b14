"""Errors raised by the converter. All are ValueErrors (bad input), so one `except` covers them."""


class CheckpointError(ValueError):
  """A checkpoint cannot be converted: missing, unused or mis-shaped tensors, bad layout."""


class UnsafeCheckpointError(CheckpointError):
  """A pickle (.bin) wants to import or call something other than tensors: refused unexecuted."""


class CorruptCheckpointError(CheckpointError):
  """A weight file is truncated or not in the format its name says."""


class ConfigMismatchError(CheckpointError):
  """config.json and the tensors disagree (width, depth, vocab, ...)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """The source directory or hub repo has no usable config.json / weight file."""


class MissingDependencyError(CheckpointError, ImportError):
  """An optional package (torch for .bin, huggingface_hub for hub ids) is not installed."""
