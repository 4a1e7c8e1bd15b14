"""`python -m based_jax.evaluation ...` = `based-jax evaluate ...`."""

import sys

from based_jax.evaluation.cli import main

sys.exit(main())
