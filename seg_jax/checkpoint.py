"""Moved to :mod:`seg_jax.training.checkpoint`; an alias kept for ``seg_jax.compare`` until it
imports from there (``seg_jax.checkpoint`` is the module ``seg_jax.training.checkpoint`` itself)."""

import sys

from seg_jax.training import checkpoint

sys.modules[__name__] = checkpoint
