r"""The sweep behind ``python -m seg_jax.compare``: every loss x every seed, trained and scored.

For every name in the loss list and every seed ``0 .. seeds-1`` the base config is copied,
``config.loss`` is set to that loss (options: "Loss options" below), ``config.train.seed`` to
the seed (initialisation, data order and augmentation), and
:func:`seg_jax.train.train_and_evaluate` trains it in ``<outdir>/<loss>/seed<k>``. Model, data,
schedule and steps are those of the config, so the runs differ in the loss and the seed only;
seed ``k`` of two losses starts from the same initial weights (same output channels) and sees
the same batches, so runs are paired by seed as well as by image.

After training, the run's final checkpoint predicts the whole evaluation split
(``config.train.eval_split``) and :mod:`seg_jax.choosing.evaluation` scores every image; the
result is cached in ``<run>/compare_eval.npz``. :mod:`seg_jax.choosing.verdict` turns the
per-image values of all runs into statistics, flags and the verdict, and
:mod:`seg_jax.choosing.report` / :mod:`seg_jax.choosing.plots` write them.

**Loss options.** ``config.loss.options`` are the options of ``config.loss.name`` (that is how the
per-loss configs are written, e.g. ``configs/focal.py`` sets ``gamma``). In the comparison that
loss gets all of them; every other loss gets only the data-level options of
:data:`SHARED_OPTIONS` (``mode``, ``ignore_index``), which must be the same for every run to be
comparable, and its own defaults for the rest.

**Steps.** ``steps=N`` shortens (or lengthens) the whole schedule: ``train.steps = N`` and
``warmup_steps``, ``log_every``, ``eval_every``, ``checkpoint_every`` scaled by ``N /
train.steps`` (at least 1; 0 stays 0), so a quick comparison keeps the shape of the full one.

**Resuming.** A run whose final validation record, final checkpoint or cached evaluation are
present is not trained again; an interrupted run resumes from its latest checkpoint. A run that
stopped on a non-finite loss (:class:`FloatingPointError`) is a result (flag ``diverged``, not
retried: same seed, same outcome); a run that failed with another error is reported and retried
on the next invocation. A run directory written with a different configuration is an error.

**Seeds as one program** (``seeds_mode='vmap'``, ``--seeds_mode=vmap``). By default
(``'sequential'``) the runs are trained in turn. With ``'vmap'`` the seeds of one loss that are
left to train are trained together by :func:`seg_jax.train.train_seeds_and_evaluate`: one
``jax.vmap``-ed program over their parameters stacked on a leading axis, each seed with its own
initialisation, data order and augmentation, writing to its own run directory what its run in
turn writes (so the evaluation, caching, statistics and report below are the same, and the
per-seed results agree with the sequential ones to float rounding). ``benchmarks/seeds.py``
measured one training step of 3 seeds of the default U-Net (BENCHMARKS.md, "Seeds"): the
vmapped program takes 2.55x the time of the steps in turn on the 2-core CPU, 0.48x on an H200;
use ``vmap`` on an accelerator. Resuming: the seeds left to train are grouped by the step of
their latest checkpoint, and each group resumes as one program (a group interrupted together
resumes together); a seed alone in its group trains as in ``'sequential'``. A seed that diverges
is recorded ``diverged`` while the others train on; an error stops the group and every seed of
it is retried at the next invocation. A run's ``wall_s`` is the group's wall time divided by its
seeds, and its training-speed records are the group's.
"""

from __future__ import annotations

import copy
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax import data as seg_data
from seg_jax import losses, train
from seg_jax.choosing import evaluation, plots, recommend, report, verdict
from seg_jax.choosing import inspect as seg_inspect
from seg_jax.training import config as train_config
from seg_jax.training.checkpoint import Checkpointer
from seg_jax.training.outputs import CONFIG_FILE, read_metrics
from seg_jax.training.outputs import config_differences as _config_differences

# Options of config.loss.options passed to every loss that accepts them (module docstring).
SHARED_OPTIONS = ("mode", "ignore_index")
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "learning_curves.png"
GRID_FILE = "predictions.png"
BOX_FILE = "per_image_dice.png"
# Written by compare in each run directory: wall time and outcome; the per-image evaluation.
RUN_FILE = "compare_run.json"
EVAL_FILE = "compare_eval.npz"
DEFAULT_SEEDS = 3
SEEDS_MODES = ("sequential", "vmap")
DEFAULT_BASELINE = "cross_entropy"
# Config fields that do not change what a run computes (ignored when checking a run directory).
_IRRELEVANT_FIELDS = (
  "train.progress_bar",
  "data.num_threads",
  "data.prefetch",
  "data.num_workers",
  "train.check_inputs_steps",
)
_SCALED_FIELDS = ("warmup_steps", "log_every", "eval_every", "checkpoint_every")


# --------------------------------------------------------------------------- configuration


def parse_losses(spec: str | Sequence[str]) -> list[str]:
  """The loss names of ``--losses``: comma-separated registry names, or ``'all'``.

  Args:
    spec: ``'a,b,c'``, ``'all'``, or a sequence of names.

  Returns:
    The names in the order given (``'all'``: :func:`seg_jax.losses.names`).

  Raises:
    ValueError: empty, duplicated or unknown names (the message lists the valid ones).
  """
  valid = losses.names()
  parts = spec.split(",") if isinstance(spec, str) else list(spec)
  names = [str(p).strip() for p in parts if str(p).strip()]
  if names == ["all"]:
    return valid
  if not names:
    raise ValueError(
      f"--losses is empty; give comma-separated loss names or 'all'. Valid names: "
      f"{', '.join(valid)}."
    )
  unknown = [n for n in names if n not in valid]
  if unknown:
    hints = []
    for n in unknown:
      try:
        losses.lookup(n)
      except KeyError as err:
        message = err.args[0]
        if "Did you mean" in message:
          hints.append(message.split(" Registered losses")[0])
    raise ValueError(
      f"--losses: unknown loss name(s) {', '.join(map(repr, unknown))}"
      + (f" ({' '.join(hints)})" if hints else "")
      + f". Valid names: {', '.join(valid)} (or 'all')."
    )
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise ValueError(f"--losses names {', '.join(map(repr, duplicated))} more than once.")
  return names


def with_steps(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose schedule is scaled to ``steps`` steps (module docstring)."""
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}.")
  config = copy.deepcopy(config)
  t = config.train
  factor = steps / t.steps
  with config.unlocked():
    t.steps = steps
    for name in _SCALED_FIELDS:
      if t[name] > 0:
        t[name] = max(1, round(t[name] * factor))
    t.warmup_steps = min(t.warmup_steps, steps - 1)
  return config


def loss_config(
  config: ml_collections.ConfigDict, name: str, seed: int | None = None
) -> ml_collections.ConfigDict:
  """A copy of ``config`` training loss ``name`` (options as in the module docstring), with
  ``train.seed = seed`` if a seed is given."""
  opts = train_config.loss_options(config)
  if name != config.loss.name:
    accepted = set(losses.options(name))
    opts = {k: v for k, v in opts.items() if k in SHARED_OPTIONS and k in accepted}
  config = copy.deepcopy(config)
  with config.unlocked():
    config.loss.name = name
    config.loss.options = ml_collections.ConfigDict(opts)
    if seed is not None:
      config.train.seed = int(seed)
  return config


def parse_seeds(seeds: int) -> list[int]:
  """Seeds ``0 .. seeds-1``; ``seeds`` must be a positive int."""
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f"seeds must be a positive int (the number of seeds), got {seeds!r}.")
  return list(range(seeds))


def parse_seeds_mode(mode: str) -> str:
  """``mode`` if it is one of :data:`SEEDS_MODES` (how the seeds of a loss are trained)."""
  if mode not in SEEDS_MODES:
    raise ValueError(
      f"seeds_mode must be one of {', '.join(map(repr, SEEDS_MODES))} (the seeds of a loss "
      f"trained in turn, or as one vmapped program), got {mode!r}."
    )
  return mode


def run_dir(outdir: str, name: str, seed: int) -> str:
  """The directory of the run of loss ``name`` with ``seed``."""
  return os.path.join(outdir, name, f"seed{seed}")


def config_differences(stored: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields (dotted names) where the ``config.json`` of a run differs from ``config``, leaving
  out those that do not change what a run computes (progress bar, data loading threads)."""
  return _config_differences(stored, config, ignore=_IRRELEVANT_FIELDS)


# --------------------------------------------------------------------------- run state


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def _main_process() -> bool:
  return jax.process_index() == 0


def final_record(records: Sequence[dict], split: str, steps: int) -> dict | None:
  """The ``split`` record at step ``steps`` (the last one if several), or ``None``."""
  hits = [r for r in records if r.get("split") == split and r.get("step") == steps]
  return hits[-1] if hits else None


def _latest_checkpoint(workdir: str) -> int | None:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  ckpt = Checkpointer(directory, keep=1, best_metric=None, async_save=False)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def _cached_eval(workdir: str, steps: int, num_examples: int) -> dict | None:
  path = os.path.join(workdir, EVAL_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    cached = {k: z[k] for k in z.files}
  if int(cached["step"]) != steps or len(cached["example_pred"]) < num_examples:
    return None
  return cached


def run_state(
  config: ml_collections.ConfigDict,
  workdir: str,
  num_examples: int = 0,
  *,
  expect_test: bool = False,
) -> str:
  """Where the run of ``config`` in ``workdir`` stands.

  Returns:
    ``'finished'`` (final validation metrics, and the final test metrics if ``expect_test``,
    and the final checkpoint or the cached evaluation), ``'diverged'`` (stopped on a non-finite
    loss, recorded by compare), ``'partial'`` (a checkpoint to resume from) or ``'new'``.

  Raises:
    ValueError: ``workdir`` holds a run of another configuration.
  """
  stored = _read_json(os.path.join(workdir, CONFIG_FILE))
  if stored is not None:
    diffs = config_differences(stored, config)
    if diffs:
      shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
      raise ValueError(
        f"{workdir} holds a run with a different configuration ({shown}). A comparison needs "
        "identical settings: give another --outdir, or delete that directory to retrain it."
      )
  info = _read_json(os.path.join(workdir, RUN_FILE)) or {}
  if info.get("status") == "diverged" and info.get("steps") == config.train.steps:
    return "diverged"
  steps = config.train.steps
  latest = _latest_checkpoint(workdir)
  records = read_metrics(workdir)
  has_final = final_record(records, config.train.eval_split, steps) is not None
  if expect_test:  # A run stopped during its final test evaluation is resumed to finish it.
    has_final = has_final and final_record(records, "test", steps) is not None
  if has_final and (latest == steps or _cached_eval(workdir, steps, num_examples) is not None):
    return "finished"
  return "partial" if latest is not None else "new"


# --------------------------------------------------------------------------- evaluation


def _host(x) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _restore_final(config, workdir: str, ds, mesh: Mesh):
  t = config.train
  model = train.build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, _ = train.make_optimizer(t)
  state = train.init_state(model, tx, mesh, t.seed)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, best_metric=None)
  try:
    step = ckpt.latest_step()
    if step != t.steps:
      raise FileNotFoundError(
        f"{workdir}: the final checkpoint (step {t.steps}) is missing (latest: {step})."
      )
    state = ckpt.restore(state, step)
  finally:
    ckpt.close()
  return model, state


def evaluate_run(
  config: ml_collections.ConfigDict,
  workdir: str,
  ds,
  num_examples: int,
  *,
  mesh: Mesh | None = None,
) -> dict:
  """Per-image metrics of the run's final model on the whole evaluation split.

  The final checkpoint predicts every image of ``config.train.eval_split``;
  :func:`seg_jax.choosing.evaluation.per_image_metrics` scores them, and for binary data
  :func:`~seg_jax.choosing.evaluation.threshold_free` scores the foreground probabilities.
  Cached in ``<workdir>/compare_eval.npz`` with the first ``num_examples`` images, truths and
  predictions (for the prediction grid).

  Returns:
    The arrays of :func:`~seg_jax.choosing.evaluation.per_image_metrics`, ``threshold_free``
    (a dict, or ``None`` for multiclass data), ``examples`` (``{'image', 'label', 'pred'}``)
    and ``step``.
  """
  t = config.train
  cached = _cached_eval(workdir, t.steps, num_examples)
  if cached is None:
    mesh = train.make_mesh() if mesh is None else mesh
    model, state = _restore_final(config, workdir, ds, mesh)
    step_fn = train.make_eval_step(model, mesh, probabilities=True)
    images, labels, preds, probs = [], [], [], []
    batches = seg_data.eval_batches(
      ds,
      t.eval_split,
      batch_size=t.eval_batch_size or t.batch_size,
      sharding=NamedSharding(mesh, P(train.AXIS)),
    )
    try:
      for batch in batches:
        pred, prob = step_fn(state, batch["image"])
        idx = np.flatnonzero(_host(batch["valid"]))
        preds.append(_host(pred)[idx])
        labels.append(_host(batch["label"])[idx])
        prob = _host(prob)[idx]
        probs.append(prob[..., -1] if ds.num_classes == 2 else np.zeros(prob.shape[:-1], bool))
        if sum(len(x) for x in images) < num_examples:
          images.append(_host(batch["image"])[idx])
    finally:
      batches.close()
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    scores = evaluation.per_image_metrics(preds, labels, ds.num_classes)
    free = {}
    if ds.num_classes == 2:
      free = evaluation.threshold_free(np.concatenate(probs), labels)
    cached = {
      "step": np.asarray(t.steps),
      **{k: np.asarray(v) for k, v in scores.items()},
      **{f"tf_{k}": np.asarray(v) for k, v in free.items()},
      "example_image": np.concatenate(images)[:num_examples] if images else np.zeros((0,)),
      "example_label": labels[:num_examples],
      "example_pred": preds[:num_examples],
    }
    if _main_process():
      np.savez_compressed(os.path.join(workdir, EVAL_FILE), **cached)
  out = {k: v for k, v in cached.items() if not k.startswith(("tf_", "example_"))}
  out["step"] = int(out["step"])
  out["fp_images"] = int(out["fp_images"])
  free = {k[3:]: float(v) for k, v in cached.items() if k.startswith("tf_")}
  out["threshold_free"] = free or None
  out["examples"] = {
    "image": cached["example_image"][:num_examples],
    "label": cached["example_label"][:num_examples],
    "pred": cached["example_pred"][:num_examples],
  }
  return out


# --------------------------------------------------------------------------- records


def train_timing(records: Sequence[dict]) -> tuple[float | None, float | None]:
  """``(train time in s, steps/s)`` from the trainer's ``train`` records: the sum over logging
  windows of their steps divided by their steps/s (optimisation steps only)."""
  total_steps, total_time, previous = 0, 0.0, 0
  for r in sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"]):
    window = r["step"] - previous
    previous = r["step"]
    rate = r.get("steps_per_sec")
    if window > 0 and rate:
      total_steps += window
      total_time += window / rate
  if total_time <= 0:
    return None, None
  return total_time, total_steps / total_time


def curves(records: Sequence[dict], eval_split: str) -> dict[str, list]:
  """Learning curves: ``train_step``, ``train_loss``, ``val_step``, ``val_dice``."""
  tr = sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"])
  va = sorted((r for r in records if r.get("split") == eval_split), key=lambda r: r["step"])
  return {
    "train_step": [r["step"] for r in tr if r.get("loss") is not None],
    "train_loss": [r["loss"] for r in tr if r.get("loss") is not None],
    "val_step": [r["step"] for r in va if r.get("dice_mean") is not None],
    "val_dice": [r["dice_mean"] for r in va if r.get("dice_mean") is not None],
  }


# --------------------------------------------------------------------------- the sweep


def _dice_text(run: dict, split: str) -> str:
  f = run.get("final") or {}
  if f.get("dice_mean") is None:
    return ""
  return f", {split} dice_mean {f['dice_mean']:.4f}"


def _eta(walls: Sequence[float], remaining: int) -> str:
  if not remaining:
    return "comparison trained"
  if not walls:
    return f"{remaining} run(s) to go"
  secs = float(np.mean(walls)) * remaining
  return f"{remaining} run(s) to go, ETA {secs / 60:.1f} min"


def _prepare_workdir(workdir: str) -> None:
  """Creates a run directory to train in and drops its evaluation of an earlier model."""
  if _main_process():
    os.makedirs(workdir, exist_ok=True)
    stale = os.path.join(workdir, EVAL_FILE)
    if os.path.exists(stale):
      os.remove(stale)


def _outcome(c, workdir: str, state: str, info: dict, result, wall: float, mode: str) -> dict:
  """The outcome record of one run's training (written to its ``compare_run.json``).

  ``result``: what the trainer returned for it, or the exception it raised.
  """
  status, error = "trained" if state == "new" else "resumed", None
  if isinstance(result, FloatingPointError):
    status, error = "diverged", str(result)
  elif isinstance(result, Exception):  # Reported per run; the other runs still train.
    status, error = "error", f"{type(result).__name__}: {result}"
  out = {"status": status, "error": error, "wall_s": (info.get("wall_s") or 0.0) + wall}
  if _main_process():
    record = {**out, "steps": c.train.steps, "seed": c.train.seed, "seeds_mode": mode}
    _write_json(os.path.join(workdir, RUN_FILE), record)
  out["this_wall_s"] = wall
  return out


def _preempted(result) -> bool:
  return isinstance(result, dict) and bool(result.get("preempted"))


def _train_one(c, workdir: str, state: str, info: dict, mesh) -> tuple[dict, bool]:
  """Trains (or resumes) one run; returns its outcome record and whether it was preempted."""
  _prepare_workdir(workdir)
  tic = time.perf_counter()
  try:
    result = train.train_and_evaluate(c, workdir, mesh=mesh)
  except Exception as err:
    if not isinstance(err, FloatingPointError):
      traceback.print_exc()
    result = err
  wall = time.perf_counter() - tic
  return _outcome(c, workdir, state, info, result, wall, "sequential"), _preempted(result)


def _validate_all(configs: dict) -> None:
  for (name, seed), c in configs.items():  # Fail on a bad config before training anything.
    try:
      train_config.validate(c)
    except (ValueError, TypeError) as err:
      raise type(err)(f"compare, loss {name!r} (seed {seed}): {err}") from None


def _thin_data(ds, split: str) -> bool:
  """Whether :mod:`seg_jax.choosing.inspect`'s ``thin`` rule fires on ``split``'s labels."""
  stats = seg_inspect.inspect_dataset(ds, split)
  return any(a.rule == "thin" for a in recommend.recommend(stats))


def run_comparison(
  config: ml_collections.ConfigDict,
  loss_names: str | Sequence[str],
  outdir: str,
  steps: int | None = None,
  *,
  seeds: int = DEFAULT_SEEDS,
  seeds_mode: str = "sequential",
  baseline: str | None = None,
  topology: bool | None = None,
  num_examples: int = 4,
  command: str | None = None,
  mesh: Mesh | None = None,
  echo: Callable[[str], Any] = print,
) -> dict:
  """Trains every loss with every seed (resuming / skipping finished runs) and writes the report.

  Args:
    config: the base training config; its loss section and seed are replaced per run (module
      docstring).
    loss_names: names or ``'a,b'`` / ``'all'`` (:func:`parse_losses`).
    outdir: the comparison's directory; run (loss, seed) trains in ``<outdir>/<loss>/seed<k>``.
    steps: if given, the schedule is scaled to this many steps (:func:`with_steps`).
    seeds: the number of seeds; seeds ``0 .. seeds-1`` are trained.
    seeds_mode: ``'sequential'`` (the runs in turn) or ``'vmap'`` (the seeds of a loss as one
      vmapped program; module docstring). The results are the same up to float rounding.
    baseline: the loss the others are tested against (default ``cross_entropy`` if it is in the
      list, else the first loss).
    topology: report the Betti-0 error of each run (``None``: when :mod:`seg_jax.inspect`'s
      ``thin`` rule fires on the evaluation split).
    num_examples: validation images in ``predictions.png``.
    command: the command line, quoted in the report.
    mesh: device mesh for the trainer (default: all devices).
    echo: where the progress lines go.

  Returns:
    The summary written to ``summary.json`` (:func:`seg_jax.choosing.verdict.analyse` describes
    ``results``), plus ``runs``' examples in memory. If a run was preempted (SIGTERM), returns
    early with ``preempted: True`` and writes no report.

  Raises:
    ValueError: unknown loss names, bad seeds, seeds_mode or baseline, an invalid config, or a run
      directory of a different config.
  """
  names = parse_losses(loss_names)
  seed_list = parse_seeds(seeds)
  seeds_mode = parse_seeds_mode(seeds_mode)
  if baseline is None:
    baseline = DEFAULT_BASELINE if DEFAULT_BASELINE in names else names[0]
  if baseline not in names:
    raise ValueError(f"baseline {baseline!r} is not one of the compared losses {names}.")
  if not isinstance(num_examples, int) or num_examples < 0:
    raise ValueError(f"num_examples must be an int >= 0, got {num_examples!r}.")
  base = copy.deepcopy(config)
  if steps is not None:
    base = with_steps(base, steps)
  configs = {(n, s): loss_config(base, n, s) for n in names for s in seed_list}
  _validate_all(configs)
  outdir = os.path.abspath(outdir)
  is_main = _main_process()
  if is_main:
    os.makedirs(outdir, exist_ok=True)
  ds = seg_data.load(base.data)
  split = base.train.eval_split
  expect_test = base.train.test_at_end and "test" in ds.splits and split != "test"
  states = {
    key: run_state(c, run_dir(outdir, *key), num_examples, expect_test=expect_test)
    for key, c in configs.items()
  }
  to_train = sum(s not in ("finished", "diverged") for s in states.values())
  walls: list[float] = []
  runs: dict[str, dict[int, dict]] = {n: {} for n in names}
  tags = {key: f"[{i}/{len(configs)}] {key[0]} seed {key[1]}" for i, key in enumerate(configs, 1)}
  preempted = {"preempted": True, "losses": names, "outdir": outdir}
  for name in names:
    keys = [(name, s) for s in seed_list]
    grouped = {}
    if seeds_mode == "vmap":
      grouped = _train_seed_groups(keys, configs, outdir, states, walls, mesh, echo)
      if grouped is None:
        return preempted
    for key in keys:
      tag, c = tags[key], configs[key]
      run = grouped.get(key) or _one_run(
        c, run_dir(outdir, *key), key[1], states[key], tag, walls, mesh, echo
      )
      if run is None:
        return preempted
      to_train -= states[key] not in ("finished", "diverged")
      _add_results(run, c, ds, num_examples, tag, mesh, echo)
      runs[name][key[1]] = run
      shown = {"cached": "already finished", "error": "failed"}.get(run["status"], run["status"])
      echo(f"{tag}: {shown}{_dice_text(run, split)}; {_eta(walls, to_train)}.")

  if topology is None:
    topology = _thin_data(ds, split)
  analysis = verdict.analyse(
    runs,
    baseline=baseline,
    class_names=list(ds.class_names),
    total_steps=base.train.steps,
    topology=topology,
  )
  summary = {
    "outdir": outdir,
    "command": command,
    "config": json.loads(base.to_json_best_effort()),
    "losses": names,
    "seeds": seed_list,
    "seeds_mode": seeds_mode,
    "baseline": baseline,
    "topology": bool(topology),
    "class_names": list(ds.class_names),
    "eval_split": split,
    "options": {n: train_config.loss_options(configs[n, seed_list[0]]) for n in names},
    "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
    **analysis,
    "figures": {},
  }
  if is_main:
    _write_outputs(summary, runs, base, ds, outdir, echo)
  summary["runs"] = runs
  return summary


def _one_run(config, workdir, seed, state, tag, walls, mesh, echo) -> dict | None:
  """The record of run ``workdir`` in state ``state``, training it first unless it is done.

  Appends the wall time of a training to ``walls``; ``None`` if the training was preempted.
  """
  run, info = _new_run(config, workdir, seed)
  if state in ("finished", "diverged"):
    run["status"] = "cached" if state == "finished" else "diverged"
    if state == "finished":
      run["error"] = None  # An error of an earlier invocation, since resolved.
    return run
  verb = f"resuming from step {_latest_checkpoint(workdir)}" if state == "partial" else "training"
  echo(f"{tag}: {verb} ({config.train.steps} steps) in {workdir}.")
  outcome, preempted = _train_one(config, workdir, state, info, mesh)
  walls.append(outcome.pop("this_wall_s"))
  run.update(outcome)
  if preempted:
    echo(f"{tag}: preempted; rerun the same command to resume.")
    return None
  return run


def _new_run(config, workdir: str, seed: int) -> tuple[dict, dict]:
  """``(run record, compare_run.json of an earlier invocation)`` of a run directory."""
  info = _read_json(os.path.join(workdir, RUN_FILE)) or {}
  run = {"workdir": workdir, "seed": seed, "options": train_config.loss_options(config)}
  run.update(wall_s=info.get("wall_s"), error=info.get("error"))
  return run, info


def _train_seed_groups(keys, configs, outdir, states, walls, mesh, echo) -> dict | None:
  """Trains the runs ``keys`` (the seeds of one loss) that are left to train as vmapped groups
  (module docstring): their records by key, ``None`` if preempted. Seeds alone in their group
  are not in the result (they train in turn)."""
  groups: dict[int, list] = {}
  for key in keys:
    if states[key] not in ("finished", "diverged"):
      start = _latest_checkpoint(run_dir(outdir, *key)) if states[key] == "partial" else None
      groups.setdefault(start or 0, []).append(key)
  done = {}
  for start, group in groups.items():
    if len(group) < 2:
      continue
    workdirs = [run_dir(outdir, *key) for key in group]
    index = [list(configs).index(key) + 1 for key in group]
    tag = f"[{','.join(map(str, index))}/{len(configs)}]"
    verb = f"resuming from step {start}" if start else "training"
    echo(
      f"{tag} {group[0][0]} seeds {', '.join(str(k[1]) for k in group)}: {verb} as one vmapped "
      f"program ({configs[group[0]].train.steps} steps) in {os.path.dirname(workdirs[0])}."
    )
    for w in workdirs:
      _prepare_workdir(w)
    tic = time.perf_counter()
    try:
      results = train.train_seeds_and_evaluate([configs[k] for k in group], workdirs, mesh=mesh)
    except Exception as err:  # The whole group failed (bad data, a bad config): every seed.
      traceback.print_exc()
      results = [err] * len(group)
    wall = (time.perf_counter() - tic) / len(group)
    for key, w, result in zip(group, workdirs, results, strict=True):
      run, info = _new_run(configs[key], w, key[1])
      outcome = _outcome(configs[key], w, states[key], info, result, wall, "vmap")
      walls.append(outcome.pop("this_wall_s"))
      run.update(outcome)
      done[key] = run
    if any(_preempted(r) for r in results):
      echo(f"{tag}: preempted; rerun the same command to resume.")
      return None
  return done


def _add_results(run: dict, config, ds, num_examples: int, tag: str, mesh, echo) -> None:
  """Adds the logged metrics, timing, curves and per-image evaluation of a trained run."""
  split, steps = config.train.eval_split, config.train.steps
  records = read_metrics(run["workdir"])
  run["final"] = final_record(records, split, steps)
  run["test"] = final_record(records, "test", steps) if split != "test" else None
  run["train_time_s"], run["steps_per_sec"] = train_timing(records)
  run["curves"] = curves(records, split)
  run["eval"] = None
  if run["final"] is not None and run["status"] not in ("diverged", "error"):
    try:
      run["eval"] = evaluate_run(config, run["workdir"], ds, num_examples, mesh=mesh)
    except FileNotFoundError as err:
      echo(f"{tag}: no per-image evaluation ({err}).")


def _write_outputs(summary: dict, runs: dict, base, ds, outdir: str, echo) -> None:
  """The figures, ``report.md`` and ``summary.json`` of a comparison (main process only)."""
  title = plots.title(base, len(summary["seeds"]))
  figs = summary["figures"]
  figs["learning_curves"] = plots.learning_curves(runs, os.path.join(outdir, CURVES_FILE), title)
  figs["per_image_dice"] = plots.per_image_box(
    runs, summary["ranking"], os.path.join(outdir, BOX_FILE), title
  )
  grid = plots.prediction_grid(
    runs, os.path.join(outdir, GRID_FILE), class_names=ds.class_names, title=title
  )
  if grid:
    figs["predictions"] = grid
  summary["report"] = report.write_report(summary, os.path.join(outdir, REPORT_FILE), base)
  _write_json(os.path.join(outdir, SUMMARY_FILE), verdict.jsonable(summary))
  echo(f"Report: {summary['report']}")
