"""Moved to :mod:`seg_jax.training.outputs`; an alias kept for ``seg_jax.compare`` until it
imports from there (``seg_jax.logging_utils`` is the module ``seg_jax.training.outputs`` itself)."""

import sys

from seg_jax.training import outputs

sys.modules[__name__] = outputs
