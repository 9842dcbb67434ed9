"""What the benchmarks share: the machine a measurement ran on, and their BENCHMARKS.md writer.

Each benchmark script records :func:`machine_info` with its numbers and writes its own ``## ``
section of BENCHMARKS.md with :func:`write_section`, leaving the other sections as they are;
:func:`save_results` writes both outputs of a run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
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
    "flax": _version("flax"),
    "backend": jax.default_backend(),
    "device": getattr(dev, "device_kind", str(dev)),
    "num_devices": jax.device_count(),
    "python": platform.python_version(),
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "loadavg_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
  }


def write_section(path: pathlib.Path, section: list[str]) -> None:
  """Replaces the markdown section whose heading is ``section[0]``, or appends it.

  The section runs from its heading to the next ``## `` heading (or the end of the file); the
  other sections, hand-written ones included, are kept as they are.
  """
  heading = section[0].strip()
  path = pathlib.Path(path)
  lines = path.read_text().splitlines() if path.exists() else ["# Benchmarks"]
  section = list(section)
  while section and not section[-1].strip():
    section.pop()
  start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
  if start is None:
    new = lines + ([""] if lines and lines[-1].strip() else []) + section
  else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    new = lines[:start] + section + ([""] if end < len(lines) else []) + lines[end:]
  path.write_text("\n".join(new).rstrip("\n") + "\n")


def save_results(result: dict, json_path, md_path, write_markdown) -> None:
  """Writes ``result`` as JSON to ``json_path`` and calls ``write_markdown(md_path, result)``.

  Either path may be None (not written); each written file is reported on stdout.
  """
  if json_path is not None:
    json_path = pathlib.Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {json_path}")
  if md_path is not None:
    write_markdown(pathlib.Path(md_path), result)
    print(f"updated {md_path}")
