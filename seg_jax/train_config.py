"""Moved to :mod:`seg_jax.training.config`; an alias kept for ``seg_jax.compare`` until it
imports from there (``seg_jax.train_config`` is the module ``seg_jax.training.config`` itself)."""

import sys

from seg_jax.training import config

sys.modules[__name__] = config
