r"""Inspect a segmentation data set and get the losses worth comparing on it (command line).

Run::

  python -m seg_jax.inspect --config=configs/default.py [--split=train] [--max_examples=500]
  python -m seg_jax.inspect --config=configs/default.py --config.data.name=image_folder \
      --config.data.folder.path=my_data --config.data.folder.mask_values='(0,255)'

It prints the statistics of the split's labels, the losses to try with the reason for each and
the ``python -m seg_jax.compare`` command that tests them (``--json``: the same as one JSON
object). The statistics are those of :mod:`seg_jax.choosing.inspect`, the rules those of
:mod:`seg_jax.choosing.recommend` (``docs/choosing.md``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from seg_jax import data
from seg_jax.choosing.inspect import (  # noqa: F401  (the public API of inspect)
  data_overrides,
  inspect_dataset,
  label_statistics,
  report,
)


def run(
  config,
  *,
  config_path: str,
  split: str = "train",
  max_examples: int | None = None,
  overrides: Sequence[str] = (),
  as_json: bool = False,
) -> str:
  """Loads ``config.data``, inspects ``split`` and returns the text (or JSON) to print."""
  if "data" not in config:
    raise ValueError(
      f"inspect: the config {config_path!r} has no 'data' section (config.data = "
      "seg_jax.data.default_config())."
    )
  # Building a data set makes tfds print progress to stdout: keep stdout for the report (JSON).
  with contextlib.redirect_stdout(sys.stderr):
    ds = data.load(config.data)
    stats = inspect_dataset(ds, split, max_examples)
  result = report(stats, config_path=config_path, overrides=overrides)
  if as_json:
    return json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2)
  return result["text"]


def define_flags(
  flag_values: flags.FlagValues = flags.FLAGS, sys_argv: Sequence[str] | None = None
) -> None:
  """Defines the command-line flags.

  Args:
    flag_values: where (absl's global ``FLAGS`` by default; a fresh ``flags.FlagValues()`` to
      run the command in-process, e.g. in tests).
    sys_argv: the command line the ``--config.*`` overrides are read from (``sys.argv`` when
      ``None``; ml_collections defines the override flags from it).
  """
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (configs/default.py).",
    flag_values=flag_values,
    sys_argv=None if sys_argv is None else list(sys_argv),
  )
  flags.mark_flag_as_required("config", flag_values=flag_values)
  flags.DEFINE_string("split", "train", "Split to inspect.", flag_values=flag_values)
  flags.DEFINE_integer(
    "max_examples",
    None,
    "Inspect only the first N examples.",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_bool(
    "json", False, "Print the statistics and recommendation as JSON.", flag_values=flag_values
  )


def output(flag_values: flags.FlagValues, argv: Sequence[str]) -> str:
  """What the command prints, from parsed ``flag_values`` and the full command line ``argv``."""
  return run(
    flag_values.config,
    config_path=flag_values["config"].config_filename,
    split=flag_values.split,
    max_examples=flag_values.max_examples,
    overrides=data_overrides(argv[1:]),
    as_json=flag_values.json,
  )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"inspect: unexpected arguments {argv[1:]}.")
  print(output(flags.FLAGS, sys.argv))


if __name__ == "__main__":
  define_flags()
  app.run(main)
