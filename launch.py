r"""Trains a U-Net with the loss a config names: ``python launch.py --config=configs/focal.py``.

Flags:
  --config: an ml_collections config file (default ``configs/default.py``); any field can be
    overridden, e.g. ``--config.train.steps=200 --config.loss.options.gamma=3``.
  --workdir: output directory (default ``runs/<config file name>``); a rerun with the same
    workdir resumes from its latest checkpoint.
  --distributed: call ``jax.distributed.initialize()`` first (several hosts: TPU pods, GPU
    clusters). Also turned on by the environment variable ``SEG_JAX_DISTRIBUTED=1``. On managed
    clusters (Cloud TPU, SLURM, ...) JAX finds the coordinator itself; elsewhere give
    ``--coordinator_address`` (or ``JAX_COORDINATOR_ADDRESS``), ``--num_processes`` and
    ``--process_id``.
  --cpu_devices: on a CPU-only machine, how many XLA CPU devices to make (default: the most, up
    to one per core, that divide the batch size, so the data-parallel step uses every core; 0
    leaves JAX's default of one device). See :mod:`seg_jax.training.devices`.

Example (two processes on one machine, for testing)::

  python launch.py --config=configs/runlocal.py --distributed \
      --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0 &
  python launch.py --config=configs/runlocal.py --distributed \
      --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=1
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
  "Training configuration file.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config name>).")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  os.environ.get("SEG_JAX_DISTRIBUTED", "").lower() in ("1", "true", "yes"),
  "Call jax.distributed.initialize() (multi-host). Default from $SEG_JAX_DISTRIBUTED.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (default: auto-detect / env)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer(
  "cpu_devices",
  -1,
  "CPU-only machines: XLA CPU devices to create (-1: the most, up to one per core, that divide "
  "the batch size; 0: JAX's default).",
)


def _setup_jax(config):
  import jax

  from seg_jax.training import devices

  t = config.train
  devices.setup_cpu_devices(_CPU_DEVICES.value, (t.batch_size, t.eval_batch_size))
  if _DISTRIBUTED.value:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  return jax


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO.
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or os.path.join("runs", pathlib.Path(config_file).stem)
  jax = _setup_jax(_CONFIG.value)
  from seg_jax import train  # After the JAX setup.

  main_process = jax.process_index() == 0
  if main_process:
    print(f"Config {config_file} -> workdir {os.path.abspath(workdir)}", flush=True)
  result = train.train_and_evaluate(_CONFIG.value, workdir)
  if main_process:
    where = os.path.abspath(workdir)
    print(
      "\nOutputs in " + where + ":\n"
      f"  metrics     {os.path.join(where, 'metrics.jsonl')}\n"
      f"  tensorboard tensorboard --logdir {os.path.join(where, 'tensorboard')}\n"
      f"  config      {os.path.join(where, 'config.json')}\n"
      f"  predictions {os.path.join(where, 'predictions.png')}\n"
      f"  checkpoints {os.path.join(where, 'checkpoints')}",
      flush=True,
    )
    print("Final: " + json.dumps(result, sort_keys=True), flush=True)
  if result.get("preempted"):
    sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process.


if __name__ == "__main__":
  app.run(main)
