"""An independent, compact PyTorch Based model used only as the test oracle.

Written for based-jax from the architecture notes (docs/design.md and the project's
based_model.md, sections 2-4); no upstream code is copied. Its `state_dict()` keys are exactly
the upstream HazyResearch/based names, so the hub-format fixtures written from it exercise the
real converter path.
"""
