"""Test setup: 8 CPU devices (set before JAX initialises a backend) and shared fixtures."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
  """A seeded NumPy generator, fresh per test."""
  return np.random.default_rng(0)
