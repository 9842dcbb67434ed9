r"""Compare losses on your data: one U-Net per loss, everything else identical, one report.

Run it with::

  python -m seg_jax.compare --config=configs/default.py --losses=cross_entropy,dice,focal,dice_ce
  python -m seg_jax.compare --losses=all --steps=100 --config.data.config=imbalanced \
      --outdir=runs/compare/imbalanced

Flags: ``--config`` (default ``configs/default.py``; ``--config.a.b=v`` overrides apply to every
run), ``--losses`` (required), ``--steps``, ``--outdir`` (default ``runs/compare/<config file
stem>_<data set>``, e.g. ``runs/compare/default_synthetic_shapes-thin``), ``--num_examples``
(validation images in the figure, default 4), ``--cpu_devices`` (as ``launch.py``: on a CPU-only
machine up to one XLA device per core, so the data-parallel step uses them all). The exit
status is 1 if a run failed with an error, 143 if SIGTERM stopped it.

For every name in ``--losses`` (``all``: every name of :func:`seg_jax.losses.names`) the config
is copied, ``config.loss`` is set to that loss, and :func:`seg_jax.train.train_and_evaluate`
trains it in ``<outdir>/<loss>``. Model, data, seed, schedule and steps are those of the config
(``--config.*`` overrides apply to every run), so the runs differ in the loss only. Then
``<outdir>`` receives:

* ``report.md``: validation metrics per loss (``dice_mean``, the Dice of each foreground class,
  ``iou_mean``, ``precision_mean``, ``recall_mean``, ``hd95`` on binary data), training time and
  steps/s; the per-class metrics; the test split if the trainer evaluated it; the options of each
  loss; the figures.
* ``learning_curves.png``: training loss and validation ``dice_mean`` against the step, one line
  per loss.
* ``predictions.png``: the same first validation images for every loss: image | truth | the
  prediction of each loss (with its foreground Dice on that image, all foreground
  classes together; volumes by their middle slice).
* ``summary.json``: the same numbers, machine-readable.

**Loss options.** ``config.loss.options`` are the options of ``config.loss.name`` (that is how the
per-loss configs are written, e.g. ``configs/focal.py`` sets ``gamma``). In the comparison that
loss gets all of them; every other loss gets only the data-level options of
:data:`SHARED_OPTIONS` (``mode``: one sigmoid channel or softmax for binary data; ``ignore_index``:
the label of unlabelled pixels), which must be the same for every run to be comparable, and its
own defaults for the rest. So ``--config=configs/focal.py --config.loss.options.gamma=3
--losses=focal,dice`` trains focal with ``gamma=3`` and Dice with its defaults.

**Steps.** ``--steps=N`` shortens (or lengthens) the whole schedule: ``train.steps = N`` and
``warmup_steps``, ``log_every``, ``eval_every``, ``checkpoint_every`` scaled by ``N /
train.steps`` (at least 1; 0 stays 0), so a quick comparison keeps the shape of the full one.
For exact control set ``--config.train.*`` fields instead.

**Resuming.** A loss whose run finished (its final validation record in ``metrics.jsonl`` and
its final checkpoint, or the cached predictions, present) is not trained again; an interrupted
run is resumed from its latest checkpoint by the trainer. A run that stopped on a non-finite
loss (:class:`FloatingPointError`) is a result, reported as diverged and not retried (same seed,
same outcome; delete its directory to retry); a run that failed with any other error is reported
and retried on the next invocation. A run directory written with a different configuration is an
error (comparing runs of different settings would be wrong): use another ``--outdir``.

**Times.** ``train time`` is the trainer's own measure (``metrics.jsonl``: the sum over logging
windows of their steps divided by their steps/s), i.e. optimisation steps only, without
compilation, evaluation or data building; ``steps/s`` is steps / train time. ``wall time`` is the
time spent in :func:`~seg_jax.train.train_and_evaluate`, everything included, summed over the
invocations that trained the run.

References: Ma et al., "Loss odyssey in medical image segmentation", Medical Image Analysis 71
(2021): no loss wins everywhere, which is why the choice is measured on the user's data.

Example (in Python)::

  from seg_jax import compare, train_config
  config = train_config.default_config()
  summary = compare.run_comparison(config, ['dice', 'dice_ce'], 'runs/compare/demo', steps=60)
  summary['runs']['dice']['final']['dice_mean']
"""

from __future__ import annotations

import copy
import json
import math
import os
import pathlib
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from seg_jax import data as seg_data
from seg_jax import devices, logging_utils, losses, train, train_config
from seg_jax.checkpoint import Checkpointer
from seg_jax.logging_utils import CONFIG_FILE, read_metrics

# Options of config.loss.options passed to every loss that accepts them (module docstring).
SHARED_OPTIONS = ("mode", "ignore_index")
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "learning_curves.png"
GRID_FILE = "predictions.png"
# Written by compare in each run directory: wall time and outcome; cached grid predictions.
RUN_FILE = "compare_run.json"
EXAMPLES_FILE = "compare_examples.npz"
# Config fields that do not change what a run computes (ignored when checking a run directory).
_IRRELEVANT_FIELDS = (
  "train.progress_bar",
  "data.num_threads",
  "data.prefetch",
  "data.num_workers",
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


def loss_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of ``config`` training loss ``name`` (options as in the module docstring)."""
  opts = train_config.loss_options(config)
  if name != config.loss.name:
    accepted = set(losses.options(name))
    opts = {k: v for k, v in opts.items() if k in SHARED_OPTIONS and k in accepted}
  config = copy.deepcopy(config)
  with config.unlocked():
    config.loss.name = name
    config.loss.options = ml_collections.ConfigDict(opts)
  return config


def config_differences(stored: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields (dotted names) where the ``config.json`` of a run differs from ``config``, leaving
  out those that do not change what a run computes (progress bar, data loading threads)."""
  return logging_utils.config_differences(stored, config, ignore=_IRRELEVANT_FIELDS)


# --------------------------------------------------------------------------- run state


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
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


def _cached_examples(workdir: str, steps: int, num_examples: int) -> dict | None:
  path = os.path.join(workdir, EXAMPLES_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    cached = {k: z[k] for k in z.files}
  if int(cached["step"]) != steps or len(cached["pred"]) < num_examples:
    return None
  return {k: v[:num_examples] if k != "step" else int(v) for k, v in cached.items()}


def run_state(
  config: ml_collections.ConfigDict,
  workdir: str,
  num_examples: int = 0,
  *,
  expect_test: bool = False,
) -> str:
  """Where the run of ``config`` in ``workdir`` stands.

  Returns:
    ``'finished'`` (final validation metrics, and the final test metrics if ``expect_test``
    (the trainer evaluates the test split at the end), and final checkpoint or cached
    predictions),
    ``'diverged'`` (stopped on a non-finite loss, recorded by compare), ``'partial'`` (a
    checkpoint to resume from) or ``'new'``.

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
  if has_final and (latest == steps or _cached_examples(workdir, steps, num_examples) is not None):
    return "finished"
  return "partial" if latest is not None else "new"


# --------------------------------------------------------------------------- predictions


def _host(x) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def predict_examples(
  config: ml_collections.ConfigDict,
  workdir: str,
  ds,
  num_examples: int,
  *,
  mesh: Mesh | None = None,
) -> dict:
  """The first ``num_examples`` examples of the evaluation split and the predictions of the
  run's final checkpoint (the trainer keeps no predictions, so the checkpoint is restored).

  Cached in ``<workdir>/compare_examples.npz``.

  Returns:
    ``{'image': (N, *S, C), 'label': (N, *S), 'pred': (N, *S), 'step': int}``.
  """
  steps = config.train.steps
  cached = _cached_examples(workdir, steps, num_examples)
  if cached is not None:
    return cached
  mesh = train.make_mesh() if mesh is None else mesh
  t = config.train
  model = train.build_model(config, ds.num_classes)
  tx, _ = train.make_optimizer(t)
  state = train.init_state(model, tx, (*ds.spatial_shape, ds.in_channels), mesh, t.seed)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, best_metric=None)
  try:
    step = ckpt.latest_step()
    if step != steps:
      raise FileNotFoundError(
        f"{workdir}: the final checkpoint (step {steps}) is missing (latest: {step})."
      )
    state = ckpt.restore(state, step)
  finally:
    ckpt.close()
  eval_step = train.make_eval_step(model, mesh)
  kept: dict[str, list] = {"image": [], "label": [], "pred": []}
  have = 0
  batches = seg_data.eval_batches(
    ds,
    t.eval_split,
    batch_size=t.eval_batch_size or t.batch_size,
    sharding=NamedSharding(mesh, P(train.AXIS)),
  )
  try:
    for batch in batches:
      if have >= num_examples:
        break
      idx = np.flatnonzero(_host(batch["valid"]))[: num_examples - have]
      kept["pred"].append(_host(eval_step(state, batch["image"]))[idx])
      kept["image"].append(_host(batch["image"])[idx])
      kept["label"].append(_host(batch["label"])[idx])
      have += len(idx)
  finally:
    batches.close()
  out = {k: np.concatenate(v) for k, v in kept.items()}
  if _main_process():
    np.savez_compressed(os.path.join(workdir, EXAMPLES_FILE), step=steps, **out)
  out["step"] = steps
  return out


# --------------------------------------------------------------------------- metrics


def train_timing(records: Sequence[dict]) -> tuple[float | None, float | None]:
  """``(train time in s, steps/s)`` from the trainer's ``train`` records (module docstring)."""
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


# --------------------------------------------------------------------------- comparison


def run_comparison(
  config: ml_collections.ConfigDict,
  loss_names: str | Sequence[str],
  outdir: str,
  steps: int | None = None,
  *,
  num_examples: int = 4,
  command: str | None = None,
  mesh: Mesh | None = None,
  echo: Callable[[str], Any] = print,
) -> dict:
  """Trains one model per loss (resuming / skipping finished runs) and writes the report.

  Args:
    config: the base training config (:func:`seg_jax.train_config.default_config`); its loss
      section is replaced per run (module docstring, "Loss options").
    loss_names: names or ``'a,b'`` / ``'all'`` (:func:`parse_losses`).
    outdir: the comparison's directory; run ``<loss>`` trains in ``<outdir>/<loss>``.
    steps: if given, the schedule is scaled to this many steps (:func:`with_steps`).
    num_examples: validation images in ``predictions.png``.
    command: the command line, quoted in the report.
    mesh: device mesh for the trainer (default: all devices).
    echo: where the progress lines go.

  Returns:
    The summary written to ``summary.json``: ``config`` (the base config as a dict),
    ``losses``, ``runs`` (per loss: ``status``, ``workdir``, ``options``, ``final`` and ``test``
    metrics, ``train_time_s``, ``steps_per_sec``, ``wall_s``, ``error``), ``best``, and the
    ``report`` and ``figures`` paths. If the run was preempted (SIGTERM), returns early with
    ``preempted: True`` and writes no report.

  Raises:
    ValueError: unknown loss names, an invalid config, or a run directory of a different config.
  """
  names = parse_losses(loss_names)
  if not isinstance(num_examples, int) or num_examples < 0:
    raise ValueError(f"num_examples must be an int >= 0, got {num_examples!r}.")
  base = copy.deepcopy(config)
  if steps is not None:
    base = with_steps(base, steps)
  configs = {name: loss_config(base, name) for name in names}
  for name, c in configs.items():  # Fail on a bad config before training anything.
    try:
      train_config.validate(c)
    except (ValueError, TypeError) as err:
      raise type(err)(f"compare, loss {name!r}: {err}") from None
  outdir = os.path.abspath(outdir)
  is_main = _main_process()
  if is_main:
    os.makedirs(outdir, exist_ok=True)
  n = len(names)
  total_steps = base.train.steps
  ds = seg_data.load(base.data)
  runs: dict[str, dict] = {}
  for i, name in enumerate(names, 1):
    c, workdir = configs[name], os.path.join(outdir, name)
    tag = f"[{i}/{n}] {name}"
    expect_test = c.train.test_at_end and "test" in ds.splits and c.train.eval_split != "test"
    state = run_state(c, workdir, num_examples, expect_test=expect_test)
    info = _read_json(os.path.join(workdir, RUN_FILE)) or {}
    run = {
      "workdir": workdir,
      "options": train_config.loss_options(c),
      "wall_s": info.get("wall_s"),
      "error": info.get("error"),
    }
    runs[name] = run
    if state in ("finished", "diverged"):
      run["status"] = "cached" if state == "finished" else "diverged"
      if state == "finished":
        run["error"] = None  # An error of an earlier invocation, since resolved.
      echo(f"{tag}: already {state} in {workdir}{_dice_text(workdir, c)}.")
    else:
      if state == "partial":
        echo(f"{tag}: resuming in {workdir} from step {_latest_checkpoint(workdir)}.")
      else:
        echo(f"{tag}: training {total_steps} steps in {workdir}.")
      if is_main:
        os.makedirs(workdir, exist_ok=True)
        stale = os.path.join(workdir, EXAMPLES_FILE)  # Predictions of an earlier model.
        if os.path.exists(stale):
          os.remove(stale)
      tic = time.perf_counter()
      status, error, result = "trained" if state == "new" else "resumed", None, None
      try:
        result = train.train_and_evaluate(c, workdir, mesh=mesh)
      except FloatingPointError as err:
        status, error = "diverged", str(err)
      except Exception as err:  # Reported per loss; the other losses still run.
        traceback.print_exc()
        status, error = "error", f"{type(err).__name__}: {err}"
      wall = time.perf_counter() - tic
      run["wall_s"] = (info.get("wall_s") or 0.0) + wall
      run["status"], run["error"] = status, error
      if is_main:
        _write_json(
          os.path.join(workdir, RUN_FILE),
          {"status": status, "error": error, "wall_s": run["wall_s"], "steps": total_steps},
        )
      if result is not None and result.get("preempted"):
        echo(f"{tag}: preempted at step {result['step']}; rerun the same command to resume.")
        return {"preempted": True, "losses": names, "runs": runs, "outdir": outdir}
      outcome = {"diverged": "diverged", "error": "failed"}.get(status, status)
      echo(f"{tag}: {outcome} in {wall:.1f} s{_dice_text(workdir, c)}.")
    records = read_metrics(workdir)
    split = c.train.eval_split
    run["final"] = final_record(records, split, total_steps)
    run["test"] = final_record(records, "test", total_steps) if split != "test" else None
    run["train_time_s"], run["steps_per_sec"] = train_timing(records)
    run["curves"] = curves(records, split)
    run["examples"] = None
    if run["final"] is not None and num_examples > 0:
      try:
        run["examples"] = predict_examples(c, workdir, ds, num_examples, mesh=mesh)
      except FileNotFoundError as err:
        echo(f"{tag}: no predictions for the figure ({err}).")

  summary = {
    "outdir": outdir,
    "command": command,
    "config": json.loads(base.to_json_best_effort()),
    "losses": names,
    "class_names": list(ds.class_names),
    "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
    "runs": runs,
  }
  done = {k: r for k, r in runs.items() if r["final"] and r["final"].get("dice_mean") is not None}
  summary["best"] = max(done, key=lambda k: done[k]["final"]["dice_mean"]) if done else None
  summary["figures"] = {}
  if is_main:
    summary["figures"]["learning_curves"] = plot_learning_curves(
      runs, os.path.join(outdir, CURVES_FILE), title=_title(base)
    )
    grid = plot_prediction_grid(
      runs, os.path.join(outdir, GRID_FILE), class_names=ds.class_names, title=_title(base)
    )
    if grid:
      summary["figures"]["predictions"] = grid
    summary["report"] = write_report(summary, os.path.join(outdir, REPORT_FILE), base)
    _write_json(
      os.path.join(outdir, SUMMARY_FILE),
      {
        **summary,
        "runs": {k: {kk: vv for kk, vv in r.items() if kk != "examples"} for k, r in runs.items()},
      },
    )
    echo(f"Report: {summary['report']}")
  return summary


def _dice_text(workdir: str, config: ml_collections.ConfigDict) -> str:
  rec = final_record(read_metrics(workdir), config.train.eval_split, config.train.steps)
  if rec is None or rec.get("dice_mean") is None:
    return ""
  return f", {config.train.eval_split} dice_mean {rec['dice_mean']:.4f}"


def _title(config: ml_collections.ConfigDict) -> str:
  d = config.data
  data = d.name + (f"/{d.config}" if d.name == "synthetic_shapes" else "")
  return f"{data}, {config.train.steps} steps"


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def plot_learning_curves(runs: dict[str, dict], path: str, *, title: str = "") -> str:
  """Training loss and validation ``dice_mean`` against the step, one line per loss."""
  fig = _figure(12, 4.5)
  ax_loss, ax_dice = fig.subplots(1, 2)
  values = []
  for name, run in runs.items():
    c = run.get("curves") or {}
    if c.get("train_step"):
      ax_loss.plot(c["train_step"], c["train_loss"], marker=".", label=name)
      values += [v for v in c["train_loss"] if np.isfinite(v)]
    if c.get("val_step"):
      ax_dice.plot(c["val_step"], c["val_dice"], marker="o", label=name)
  # Log scale, so losses of different sizes all show; symmetric log where some loss goes to 0
  # or below (the boundary loss is negative near its optimum), which a log axis would drop.
  if values and min(values) > 0:
    ax_loss.set_yscale("log")
    scale = "log"
  elif values:
    small = [abs(v) for v in values if v != 0]
    ax_loss.set_yscale("symlog", linthresh=min(small) if small else 1e-3)
    scale = "symmetric log"
  else:
    scale = "linear"
  ax_loss.set_xlabel("training step")
  ax_loss.set_ylabel(f"training loss (each loss on its own scale, {scale})")
  ax_loss.set_title("Training loss")
  ax_dice.set_xlabel("training step")
  ax_dice.set_ylabel("validation dice_mean (foreground)")
  ax_dice.set_ylim(0.0, 1.0)
  ax_dice.set_title("Validation Dice")
  for ax in (ax_loss, ax_dice):
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(title="loss", fontsize="small")
  if title:
    fig.suptitle(f"Learning curves: {title}")
  fig.savefig(path, dpi=90)
  return path


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
  image = np.asarray(image, np.float32)
  if image.shape[-1] == 3:
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)), None
  return image[..., 0], "gray"


def _foreground_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
  valid = (truth >= 0) & (truth < num_classes)
  p, t = (pred > 0) & valid, (truth > 0) & valid
  den = int(p.sum() + t.sum())
  return 1.0 if den == 0 else float(2 * (p & t).sum() / den)


def _class_colours(num_classes: int) -> dict:
  """``cmap`` and ``norm`` giving each class one distinct colour (black/white when binary)."""
  from matplotlib import colormaps
  from matplotlib.colors import BoundaryNorm, ListedColormap

  if num_classes == 2:
    colours = ["black", "white"]
  else:
    base = colormaps["tab10" if num_classes <= 10 else "tab20"]
    colours = [base(i % base.N) for i in range(num_classes)]
  bounds = np.arange(num_classes + 1) - 0.5
  return {"cmap": ListedColormap(colours), "norm": BoundaryNorm(bounds, num_classes)}


def _middle(examples: dict, index: int) -> dict:
  """Slice ``index`` of the first spatial axis of every array of ``examples``."""
  return {
    k: v[:, index] if isinstance(v, np.ndarray) and v.ndim >= 4 else v for k, v in examples.items()
  }


def plot_prediction_grid(
  runs: dict[str, dict], path: str, *, class_names: Sequence[str], title: str = ""
) -> str | None:
  """The same validation images segmented by each loss: image | truth | one column per loss.

  Volumes (3-D data) are shown by their middle slice along the first spatial axis; 1-D data is
  not drawn.

  Returns ``path``, or ``None`` if no run has predictions (nothing is drawn).
  """
  with_examples = {k: r["examples"] for k, r in runs.items() if r.get("examples") is not None}
  if not with_examples:
    return None
  ref = next(iter(with_examples.values()))
  if ref["image"].ndim not in (4, 5):  # (N, H, W, C) or (N, D, H, W, C).
    return None
  if ref["image"].ndim == 5:
    middle = ref["image"].shape[1] // 2
    runs = {
      k: dict(r, examples=None if r.get("examples") is None else _middle(r["examples"], middle))
      for k, r in runs.items()
    }
    ref = _middle(ref, middle)
  num, num_classes = len(ref["image"]), len(class_names)
  cols = 2 + len(runs)
  fig = _figure(2.3 * cols + 1.0, 2.4 * num + 0.8)
  axes = fig.subplots(num, cols, squeeze=False)
  kw = {**_class_colours(num_classes), "interpolation": "nearest"}
  mappable = None
  for i in range(num):
    shown, img_cmap = _display_image(ref["image"][i])
    axes[i, 0].imshow(shown, cmap=img_cmap)
    axes[i, 0].set_title(f"validation #{i}", fontsize="small")
    truth = ref["label"][i]
    mappable = axes[i, 1].imshow(np.ma.masked_outside(truth, 0, num_classes - 1), **kw)
    axes[i, 1].set_title("truth", fontsize="small")
    for j, (name, run) in enumerate(runs.items(), 2):
      ax = axes[i, j]
      ex = run.get("examples")
      if ex is None:
        ax.text(0.5, 0.5, run.get("status", "n/a"), ha="center", va="center")
        ax.set_title(name, fontsize="small")
        continue
      ax.imshow(ex["pred"][i], **kw)
      dice = _foreground_dice(ex["pred"][i], truth, num_classes)
      ax.set_title(f"{name}\nDice {dice:.3f}", fontsize="small")
    for ax in axes[i]:
      ax.set_xticks([])
      ax.set_yticks([])
    axes[i, 0].set_ylabel("y (pixels)")
  for ax in axes[-1]:
    ax.set_xlabel("x (pixels)")
  if mappable is not None:
    bar = fig.colorbar(mappable, ax=axes[:, 1:], ticks=range(num_classes), shrink=0.6)
    bar.ax.set_yticklabels(list(class_names))
    bar.set_label("class")
  fig.suptitle(
    "Validation images: image | truth | prediction of each loss (foreground Dice per image)"
    + (f"\n{title}" if title else "")
  )
  fig.savefig(path, dpi=80)
  return path


# --------------------------------------------------------------------------- report


def _fmt(value, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "n/a"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines


def summary_columns(class_names: Sequence[str]) -> list[str]:
  """The metric columns of the report's main table (after ``loss``)."""
  return [
    "dice_mean",
    *(f"dice/{c}" for c in class_names[1:]),
    "iou_mean",
    "precision_mean",
    "recall_mean",
    "hd95",
    "train time (s)",
    "steps/s",
    "wall time (s)",
    "status",
  ]


def write_report(summary: dict, path: str, config: ml_collections.ConfigDict) -> str:
  """Writes ``report.md`` from a :func:`run_comparison` summary; returns ``path``."""
  runs, class_names = summary["runs"], summary["class_names"]
  t, m, d = config.train, config.model, config.data
  split = t.eval_split
  data = d.name + (f"/{d.config}" if d.name == "synthetic_shapes" else "")
  lines = [f"# Loss comparison: {data}", ""]
  if summary.get("command"):
    lines += ["Command:", "", "```", summary["command"], "```", ""]
  lines += [
    "Everything but the loss is identical across runs: data `"
    f"{data}` ({d.image_size}x{d.image_size}); U-Net features={m.features} depth={m.depth} "
    f"norm={m.norm} dtype={m.dtype}; {t.steps} steps of global batch {t.batch_size}, "
    f"{t.optimizer} learning rate {t.learning_rate:g} ({t.schedule}, warm-up "
    f"{t.warmup_steps}), weight decay {t.weight_decay:g}, gradient clip {t.grad_clip_norm:g}; "
    f"seed {t.seed}. Devices: {summary['devices']}.",
    "",
    f"## Validation metrics (split `{split}`, step {t.steps})",
    "",
  ]
  header = ["loss", *summary_columns(class_names)]
  rows, notes = [], []
  for name, r in runs.items():
    f = r.get("final") or {}
    hd95 = _fmt(f.get("hd95"), 2)
    if f.get("hd95_one_empty"):
      hd95 += f" ({f['hd95_one_empty']} one-empty)"
    row = [
      name,
      _fmt(f.get("dice_mean")),
      *(_fmt(f.get(f"dice/{c}")) for c in class_names[1:]),
      _fmt(f.get("iou_mean")),
      _fmt(f.get("precision_mean")),
      _fmt(f.get("recall_mean")),
      hd95,
      _fmt(r.get("train_time_s"), 1),
      _fmt(r.get("steps_per_sec"), 2),
      _fmt(r.get("wall_s"), 1),
      r.get("status", "n/a"),
    ]
    rows.append(row)
    if r.get("error"):
      notes.append(f"- **{name}** ({r['status']}): {r['error'].splitlines()[0]}")
  lines += _table(header, rows)
  lines.append("")
  if summary.get("best"):
    best = summary["best"]
    lines += [
      f"Highest validation dice_mean: **{best}** "
      f"({runs[best]['final']['dice_mean']:.4f}). One seed per loss: differences of the order "
      "of a run-to-run spread are not evidence; rerun with other `--config.train.seed` values "
      "to measure it.",
      "",
    ]
  lines += [
    "Columns: foreground means (class 0, the background, excluded) over the whole split; "
    "`hd95` (binary data) is the mean 95th-percentile Hausdorff distance in pixels over the "
    "images where prediction and truth both have foreground (`k one-empty`: images where "
    "exactly one is empty, excluded from the mean); `train time` is optimisation steps only "
    "(the trainer's steps/s, without compilation or evaluation), `wall time` everything in the "
    "trainer; status `cached` = finished in an earlier invocation.",
    "",
  ]
  if notes:
    lines += ["Runs that did not finish:", "", *notes, ""]

  lines += ["## Per-class metrics (validation)", ""]
  rows = []
  for name, r in runs.items():
    f = r.get("final") or {}
    for c in class_names:
      rows.append(
        [name, c, *(_fmt(f.get(f"{k}/{c}")) for k in ("dice", "iou", "precision", "recall"))]
      )
  lines += _table(["loss", "class", "dice", "iou", "precision", "recall"], rows)
  lines.append("")

  if any(r.get("test") for r in runs.values()):
    lines += [f"## Test split (step {t.steps}; for reference, not for choosing)", ""]
    rows = []
    for name, r in runs.items():
      f = r.get("test") or {}
      rows.append([name, *(_fmt(f.get(k)) for k in ("dice_mean", "iou_mean"))])
      rows[-1].append(_fmt(f.get("hd95"), 2))
    lines += _table(["loss", "dice_mean", "iou_mean", "hd95"], rows)
    lines.append("")

  figures = summary.get("figures", {})
  lines += ["## Figures", ""]
  if "learning_curves" in figures:
    lines += [f"![Learning curves]({os.path.basename(figures['learning_curves'])})", ""]
  if "predictions" in figures:
    lines += [f"![Validation predictions]({os.path.basename(figures['predictions'])})", ""]

  lines += ["## Loss options", ""]
  for name, r in runs.items():
    opts = ", ".join(f"{k}={v!r}" for k, v in sorted(r["options"].items()))
    lines.append(f"- `{name}`: {opts or 'the loss defaults'}")
  lines += [
    "",
    "Options not listed are the loss's defaults (`seg_jax.losses.get(name)`).",
    "",
    "## Runs",
    "",
    "Each run's directory (`<loss>/` next to this file) holds `metrics.jsonl`, `tensorboard/`, "
    "`config.json`, `predictions.png` and `checkpoints/`.",
    "",
  ]
  with open(path, "w") as fh:
    fh.write("\n".join(lines))
  return path


# --------------------------------------------------------------------------- command line


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
