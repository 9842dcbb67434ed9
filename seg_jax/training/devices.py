"""The devices of a run: the ``'data'`` mesh, host copies of global arrays, and how many XLA
CPU devices a CPU-only run creates (the ``--cpu_devices`` flag of ``launch.py`` and
``seg_jax.compare``).

All devices of all processes form a 1-D mesh with axis ``AXIS = 'data'`` (:func:`make_mesh`, Auto
axis type); the state is replicated over it and batches are split along their first axis.

On a machine without an accelerator, JAX gives one CPU device by default, and the data-parallel
step then uses one core for the convolutions' batch dimension. Creating one CPU device per core
lets the ``'data'`` mesh use them all; the count must divide the global batch, so the default
picks the largest count that does and is at most the number of cores this process may run on.
The setting only affects the CPU backend: on GPU or TPU hosts it changes nothing. JAX is imported
inside the functions, so that importing this module before :func:`setup_cpu_devices` is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

AXIS = "data"


def make_mesh(devices=None):
  """A 1-D ``'data'`` mesh over ``devices`` (default: every device of every process)."""
  import jax
  from jax.sharding import Mesh

  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices), (AXIS,))


def to_host(x) -> np.ndarray:
  """A global array as one NumPy array on every process."""
  import jax
  from jax.experimental import multihost_utils

  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def available_cores() -> int:
  """Cores this process may run on (its CPU affinity where the OS tells, else ``cpu_count``)."""
  if hasattr(os, "sched_getaffinity"):
    return max(len(os.sched_getaffinity(0)), 1)
  return os.cpu_count() or 1


def cpu_device_count(requested: int, batch_sizes: Iterable[int] = (), cores: int | None = None):
  """The number of CPU devices to create, or ``None`` to leave JAX's default.

  Args:
    requested: ``> 0``: that many; ``0``: JAX's default (``None``); ``-1``: the largest count
      ``<= cores`` that divides every (positive) batch size.
    batch_sizes: global batch sizes the mesh must split evenly.
    cores: the core count (default :func:`available_cores`).
  """
  if requested == 0:
    return None
  if requested > 0:
    return requested
  cores = available_cores() if cores is None else cores
  sizes = [int(b) for b in batch_sizes if b and b > 0]
  return next(n for n in range(max(cores, 1), 0, -1) if all(b % n == 0 for b in sizes))


def setup_cpu_devices(requested: int, batch_sizes: Iterable[int] = ()) -> int | None:
  """Sets ``jax_num_cpu_devices`` (call before JAX initialises a backend); returns the count set.

  Leaves the setting alone (returns ``None``) when the user already chose one through
  ``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS=--xla_force_host_platform_device_count``.
  """
  if "JAX_NUM_CPU_DEVICES" in os.environ:
    return None
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  n = cpu_device_count(requested, batch_sizes)
  if n is not None:
    import jax

    jax.config.update("jax_num_cpu_devices", n)
  return n
