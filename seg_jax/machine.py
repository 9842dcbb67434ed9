"""A description of the machine a measurement ran on (benchmarks record it with their numbers)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info() -> dict:
  """CPU model, cores, JAX backend and devices, versions, date and the load at the start."""
  import jax

  dev = jax.devices()[0]
  return {
    "cpu": _cpu_model(),
    "cores": os.cpu_count(),
    "jax": jax.__version__,
    "optax": _version("optax"),
    "backend": jax.default_backend(),
    "device": getattr(dev, "device_kind", str(dev)),
    "num_devices": jax.device_count(),
    "python": platform.python_version(),
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "loadavg_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
  }
