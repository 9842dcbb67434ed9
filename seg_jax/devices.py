"""Moved to :mod:`seg_jax.training.devices`; an alias kept for ``seg_jax.compare`` until it
imports from there (``seg_jax.devices`` is the module ``seg_jax.training.devices`` itself)."""

import sys

from seg_jax.training import devices

sys.modules[__name__] = devices
