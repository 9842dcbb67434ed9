r"""Compare losses on your data: every loss x several seeds, paired statistics, a verdict.

Run it with::

  python -m seg_jax.compare --config=configs/default.py --losses=cross_entropy,dice,focal,dice_ce
  python -m seg_jax.compare --losses=all --steps=100 --seeds=5 --config.data.config=imbalanced \
      --outdir=runs/compare/imbalanced

Flags: ``--config`` (default ``configs/default.py``; ``--config.a.b=v`` overrides apply to every
run), ``--losses`` (required; ``all``: every name of :func:`seg_jax.losses.names`), ``--seeds``
(default 3: seeds ``0 .. N-1`` for every loss), ``--seeds_mode`` (``sequential``, the default: the
runs in turn; ``vmap``: the seeds of a loss as one ``jax.vmap``-ed program, the same results to
float rounding and faster on a GPU: BENCHMARKS.md "Seeds"), ``--baseline`` (default
``cross_entropy`` if compared, else the first loss), ``--topology`` (``auto``: report the Betti-0
error when ``seg_jax.inspect``'s ``thin`` rule fires; ``on``/``off``), ``--steps`` (scale the
schedule), ``--outdir`` (default ``runs/compare/<config file stem>_<data set>``), ``--num_examples``
(validation images in the prediction grid, default 4), ``--cpu_devices`` (as ``launch.py``). The
exit status is 1 if a run failed with an error, 143 if SIGTERM stopped it.

What is trained, cached and resumed: :mod:`seg_jax.choosing.run`. How the runs become numbers
and words (per-image Dice, bootstrap intervals over seeds and images, paired Wilcoxon tests with
Holm's correction, ties with the best, the flags ``collapsed``, ``diverged``, ``not_converged``,
``miscalibrated``): :mod:`seg_jax.choosing.stats` and :mod:`seg_jax.choosing.verdict`.
``<outdir>`` receives ``report.md`` (the verdict first), ``summary.json``,
``learning_curves.png`` (mean and range over seeds), ``per_image_dice.png`` and
``predictions.png``.

References: Ma et al., "Loss odyssey in medical image segmentation", Medical Image Analysis 71
(2021): no loss wins everywhere, which is why the choice is measured on the user's data.

Example (in Python)::

  from seg_jax import compare
  from seg_jax.training import config as train_config
  config = train_config.default_config()
  summary = compare.run_comparison(config, ['dice', 'dice_ce'], 'runs/compare/demo', steps=60)
  summary['results']['dice']['dice_mean']['ci95']
"""

from __future__ import annotations

import os
import pathlib
import shlex
import sys
from collections.abc import Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from seg_jax.choosing.run import (  # noqa: F401  (the public API of compare)
  DEFAULT_SEEDS,
  REPORT_FILE,
  SEEDS_MODES,
  SHARED_OPTIONS,
  SUMMARY_FILE,
  evaluate_run,
  loss_config,
  parse_losses,
  run_comparison,
  run_dir,
  run_state,
  with_steps,
)
from seg_jax.training import devices

_TOPOLOGY = {"auto": None, "on": True, "off": False}


def define_flags(
  flag_values: flags.FlagValues = flags.FLAGS, sys_argv: Sequence[str] | None = None
) -> None:
  """Defines the command-line flags (``flag_values``: absl's global ``FLAGS`` by default, a
  fresh ``flags.FlagValues()`` to run in-process; ``sys_argv``: the command line the
  ``--config.*`` overrides are read from, ``sys.argv`` when ``None``)."""
  config_flags.DEFINE_config_file(
    "config",
    "configs/default.py",
    "Base training config; --config.* overrides apply to every run.",
    flag_values=flag_values,
    sys_argv=None if sys_argv is None else list(sys_argv),
  )
  flags.DEFINE_string(
    "losses", None, "Comma-separated loss names, or 'all'.", flag_values=flag_values
  )
  flags.mark_flag_as_required("losses", flag_values=flag_values)
  flags.DEFINE_integer(
    "steps",
    None,
    "Train this many steps (the schedule is scaled to it).",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "outdir",
    None,
    "Comparison directory (default runs/compare/<config stem>_<data set>).",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "seeds",
    DEFAULT_SEEDS,
    "Seeds per loss: every loss is trained with seeds 0 .. seeds-1.",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_enum(
    "seeds_mode",
    "sequential",
    list(SEEDS_MODES),
    "How the seeds of a loss train: sequential (in turn; faster on CPU) or vmap (as one "
    "vmapped program; faster on a GPU, see BENCHMARKS.md 'Seeds').",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "baseline",
    None,
    "The loss the others are tested against (default cross_entropy if compared, else the first).",
    flag_values=flag_values,
  )
  flags.DEFINE_enum(
    "topology",
    "auto",
    list(_TOPOLOGY),
    "Report the Betti-0 error: auto (when inspect's thin rule fires), on or off.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "num_examples",
    4,
    "Validation images in predictions.png.",
    lower_bound=0,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "cpu_devices",
    -1,
    "CPU-only machines: XLA CPU devices to create (-1: the most, up to one per core, that divide "
    "the batch size; 0: JAX's default).",
    flag_values=flag_values,
  )


def default_outdir(config_file: str, config: ml_collections.ConfigDict | None = None) -> str:
  """``runs/compare/<config file stem>_<data set>``.

  The data set (``synthetic_shapes-imbalanced``, ``image_folder-<folder name>``, a catalogue
  name) is part of the name, so comparisons of one config on several data sets (``inspect``
  prints one command per data set) do not collide in one directory.
  """
  stem = pathlib.Path(config_file).stem
  if config is None:
    return os.path.join("runs", "compare", stem)
  d = config.data
  if d.name == "synthetic_shapes":
    tag = f"{d.name}-{d.config}"
  elif d.name == "image_folder":
    tag = f"{d.name}-{pathlib.Path(str(d.folder.path)).name or 'folder'}"
  else:
    tag = d.name
  return os.path.join("runs", "compare", f"{stem}_{tag}")


def run_from_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> dict:
  """Runs the comparison that the parsed ``flag_values`` describe (``argv``: the command line)."""
  config_file = config_flags.get_config_filename(flag_values["config"])
  outdir = flag_values.outdir or default_outdir(config_file, flag_values.config)
  names = parse_losses(flag_values.losses)
  return run_comparison(
    flag_values.config,
    names,
    outdir,
    steps=flag_values.steps,
    seeds=flag_values.seeds,
    seeds_mode=flag_values.seeds_mode,
    baseline=flag_values.baseline,
    topology=_TOPOLOGY[flag_values.topology],
    num_examples=flag_values.num_examples,
    command=shlex.join(["python", "-m", "seg_jax.compare", *argv[1:]]),
  )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"compare: unexpected arguments {argv[1:]}.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO.
  t = flags.FLAGS.config.train
  devices.setup_cpu_devices(flags.FLAGS.cpu_devices, (t.batch_size, t.eval_batch_size))
  try:
    parse_losses(flags.FLAGS.losses)
  except ValueError as err:
    raise app.UsageError(str(err)) from None
  summary = run_from_flags(flags.FLAGS, sys.argv)
  if summary.get("preempted"):
    sys.exit(143)  # 128 + SIGTERM, as launch.py.
  if any(r.get("status") == "error" for r in summary["runs"].values()):
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
