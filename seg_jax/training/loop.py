r"""``train_and_evaluate``: the training loop, read top-down as setup, step, loop, evaluation.

**Setup** (:func:`_setup`): the config is validated, the data loaded, the model, optimizer and
loss built (:mod:`seg_jax.training.state`, :mod:`seg_jax.training.steps`), the state restored
from the workdir's latest checkpoint or initialised, and the steps compiled lazily.

**Step** (:meth:`_Run.step`): the first ``train.check_inputs_steps`` steps of a run use the
checked step (:func:`seg_jax.losses.checked`: labels outside the classes, non-finite outputs or
bad mask weights stop the run with an error naming the value and the valid range, before any
checkpoint of the run is written); later steps use the plain one (both compiled once). A step
whose loss, gradient or update is not finite leaves the state unchanged; the host sees its flag
one step later (so the device is never idle waiting for it) and stops with
:class:`FloatingPointError`, leaving the checkpoints as they were.

**Loop** (:meth:`_Run.train`): steps, training-loss records every ``log_every`` steps,
evaluations, checkpoints at every ``checkpoint_every`` steps, every evaluation and the end (the
``keep_checkpoints`` latest and the best by validation ``dice_mean`` are kept; saves are
asynchronous). A rerun with the same workdir restores the latest checkpoint and continues; the
data order is a function of ``(seed, step)``, so the resumed run sees the same batches and ends
with the same parameters and metrics as an uninterrupted one. SIGTERM (a preempted VM; with
several processes, JAX's preemption sync point) saves a checkpoint at the current step and
returns early with ``{'preempted': True}``.

**Evaluation** (:func:`evaluate`; every ``eval_every`` steps and at the end) predicts every
example of the split once (the padded rows of the last batch are excluded through their
``valid`` flag) and accumulates confusion counts and per-image HD95 exactly with
:class:`seg_jax.metrics.SegMetrics`: the metrics are those of the whole split, not averages of
per-batch values. Every evaluation batch is checked like the first training steps.

**Outputs** in the workdir: see :mod:`seg_jax.training.outputs` (``metrics.jsonl``,
``tensorboard/``, ``config.json``, ``predictions.png``) and ``checkpoints/``
(:mod:`seg_jax.training.checkpoint`).

Usage: ``seg_jax.train.train_and_evaluate(config, workdir)`` (see :mod:`seg_jax.train`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax import data as seg_data
from seg_jax import losses, metrics
from seg_jax.training import config as train_config
from seg_jax.training import outputs
from seg_jax.training.checkpoint import Checkpointer, Preemption
from seg_jax.training.devices import AXIS, make_mesh, to_host
from seg_jax.training.state import (
  TrainState,
  abstract_state,
  build_model,
  init_state,
  make_optimizer,
)
from seg_jax.training.steps import (
  build_loss,
  input_error,
  make_checked_eval_step,
  make_train_step,
)


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None
) -> dict:
  """Trains ``config``'s U-Net with ``config``'s loss; resumes from ``workdir`` if it has a
  checkpoint. See the module docstring for what happens and what is written.

  Args:
    config: a training config (:func:`seg_jax.training.config.default_config`); validated first.
    workdir: output directory (created).
    mesh: the device mesh (default :func:`seg_jax.training.devices.make_mesh` over all
      devices); its single axis must be named ``'data'``.

  Returns:
    The final validation metrics (``dice_mean``, ``iou_mean``, ``dice/<class>``, ...) with
    ``step``; or ``{'preempted': True, 'step': s}`` if SIGTERM stopped the run (a checkpoint
    at ``s`` was saved first).

  Raises:
    ValueError / TypeError: a bad config (see :func:`seg_jax.training.config.validate`), a batch
      size that does not split over the devices, or (from a checked step) labels outside the
      classes or bad mask weights.
    FloatingPointError: the loss, gradient or model outputs became non-finite (checkpoints are
      left as they were).
  """
  train_config.validate(config)
  # Before anything slow, so that a SIGTERM during start-up or compilation is not fatal.
  preemption = Preemption()
  try:
    run = _setup(config, os.path.abspath(workdir), mesh)
    try:
      return _train(run, preemption)
    finally:
      run.close()
  finally:
    preemption.close()


# --------------------------------------------------------------------------------------------
# Setup.


def jitted_steps(config, model, tx, schedule, mesh, *, seeds: bool = False) -> dict:
  """The train step, its checked form and the checked eval step of ``config`` (jitted, each
  compiled at its first call); ``seeds=True``: over a leading seed axis."""
  loss_fn = build_loss(config)
  eval_loss = build_loss(config, deep_supervision=False)
  args = (model, loss_fn, tx, schedule, mesh)
  return {
    "train": make_train_step(*args, seeds=seeds),
    "checked_train": make_train_step(*args, checked=True, seeds=seeds),
    "checked_eval": make_checked_eval_step(model, eval_loss, mesh, seeds=seeds),
  }


@dataclasses.dataclass
class _Run:
  """One run: what the setup built, and the loop's state between steps."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  ds: Any
  model: Any
  tx: Any
  schedule: Any
  ckpt: Checkpointer
  state: TrainState
  start: int
  eval_batch_size: int
  hint: str
  writer: outputs.MetricWriter | None = None
  pbar: Any = None
  window: list = dataclasses.field(default_factory=list)
  last: dict = dataclasses.field(default_factory=dict)
  train_time: float = 0.0
  tick: float = 0.0

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(AXIS))

  @functools.cached_property
  def steps(self) -> dict:
    """The jitted steps (each compiled at its first call)."""
    return jitted_steps(self.config, self.model, self.tx, self.schedule, self.mesh)

  def close(self) -> None:
    if self.pbar is not None:
      self.pbar.close()
    if self.writer is not None:
      self.writer.close()
    self.ckpt.close()


def _setup(config, workdir: str, mesh: Mesh | None) -> _Run:
  """Data, model, optimizer, checkpointer and state of a run (config already validated)."""
  t = config.train
  mesh = make_mesh() if mesh is None else mesh
  if mesh.axis_names != (AXIS,):
    raise ValueError(f"mesh must have the single axis {AXIS!r}, got {mesh.axis_names}.")
  eval_batch_size = t.eval_batch_size or t.batch_size
  _check_batch("batch_size", t.batch_size, mesh.devices.size)
  _check_batch("eval_batch_size", eval_batch_size, mesh.devices.size)
  ds = _load_data(config)
  model = build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, schedule = make_optimizer(t)
  state = abstract_state(model, tx, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  outputs.echo(
    f"Model: U-Net features={config.model.features} depth={config.model.depth} "
    f"norm={config.model.norm}, {model.num_classes} output channel(s), {n_params:,} parameters; "
    f"loss {config.loss.name} {train_config.loss_options(config)}; {mesh.devices.size} "
    f"device(s) ({jax.process_count()} process(es)), global batch {t.batch_size}."
  )
  ckpt = Checkpointer(
    os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints, async_save=t.async_checkpoints
  )
  start = ckpt.latest_step()
  if start is None:
    state = init_state(model, tx, mesh, t.seed)
  else:
    state = _restore(config, workdir, ckpt, state, start)
  run = _Run(
    config, workdir, mesh, ds, model, tx, schedule, ckpt, state, start or 0, eval_batch_size,
    _input_hint(config, ds),
  )  # fmt: skip
  run.writer = outputs.MetricWriter(workdir, enabled=run.is_main, resume_step=start)
  if run.is_main:
    outputs.write_config(workdir, config)
  return run


def _loss_targets(config, num_classes: int) -> dict:
  """``train_batches`` arguments for the per-example targets of the loss (none if the config
  turns them off; distance maps only for unit spacing, which the host maps assume)."""
  if not config.train.precompute_targets:
    return {}
  targets = losses.targets(config.loss.name)
  if train_config.loss_options(config).get("sampling") is not None:
    targets = {k: v for k, v in targets.items() if v == "tubed_skeleton"}
  if not targets:
    return {}
  return {"targets": targets, "channels": train_config.output_channels(config, num_classes)}


def _load_data(config):
  """The data set of ``config.data``, checked against the eval split and the loss options."""
  tic = time.perf_counter()
  ds = seg_data.load(config.data)  # With several processes, it builds on process 0 first.
  outputs.echo(
    f"Data {ds.name}: {ds.num_classes} classes {ds.class_names}, images "
    f"{ds.spatial_shape}x{ds.in_channels}, splits "
    f"{ {s: ds.num_examples(s) for s in ds.splits} } ({time.perf_counter() - tic:.1f} s)."
  )
  eval_split = config.train.eval_split
  if eval_split not in ds.splits:
    raise ValueError(f"config.train.eval_split={eval_split!r} is not a split of {ds.splits}.")
  train_config.check_loss_options(config, ds.num_classes)
  return ds


def _restore(config, workdir: str, ckpt: Checkpointer, target, start: int) -> TrainState:
  """The state of the checkpoint at ``start``, after checking that this run may resume it."""
  _check_resume(config, workdir, start, ckpt)
  try:
    state = ckpt.restore(target, start)
  except ValueError as err:
    ckpt.close()
    raise ValueError(
      f"{err} Was {workdir} used with another config (model, optimizer)? Use a new "
      "--workdir, or the config the run was started with (its config.json)."
    ) from None
  outputs.echo(f"Resumed from the checkpoint at step {start} in {ckpt.directory}.")
  return state


def _check_batch(name: str, size: int, n_dev: int) -> None:
  if size % n_dev:
    raise ValueError(
      f"config.train.{name}={size} must be a multiple of the number of devices ({n_dev}) so the "
      f"global batch splits evenly over the '{AXIS}' mesh axis."
    )


def _check_resume(config, workdir: str, start: int, ckpt: Checkpointer) -> None:
  """Refuses to resume a run of another config, or one already past ``config.train.steps``."""
  stored = outputs.read_config(workdir)
  diffs = (
    []
    if stored is None
    else outputs.config_differences(stored, config, ignore=train_config.RESUME_SAFE_FIELDS)
  )
  problem = None
  if diffs:
    shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
    problem = (
      f"{workdir} holds a run (checkpoint at step {start}) made with a different config "
      f"({shown}); resuming it would not give the run that this config describes."
    )
  elif start > config.train.steps:
    problem = (
      f"{workdir} holds a checkpoint at step {start}, past config.train.steps={config.train.steps}."
    )
  if jax.process_count() > 1:  # config.json is process 0's: every process must stop with it.
    if not bool(multihost_utils.broadcast_one_to_all(np.int32(problem is not None))):
      problem = None
    elif problem is None:
      problem = f"Process 0 refused to resume {workdir} (its error names the reason)."
  if problem:
    ckpt.close()
    raise ValueError(
      f"{problem} Use a new --workdir, or the config the run was started with (its config.json)."
    )


def _input_hint(config, ds) -> str:
  """What to look at when a checked step fails (appended to its message)."""
  ignore = train_config.loss_options(config).get("ignore_index")
  if ds.ignore_index is not None and ignore != ds.ignore_index:
    return (
      f" The data set {ds.name} marks ignored pixels with {ds.ignore_index}: set "
      f"config.loss.options.ignore_index={ds.ignore_index}."
    )
  return " Check the data (mask values, num_classes) and config.loss.options."


# --------------------------------------------------------------------------------------------
# Step.


def _step(run: _Run, batch, step: int):
  """One training step (the checked one for the first ``check_inputs_steps`` of the run)."""
  if step >= run.start + run.config.train.check_inputs_steps:
    run.state, out = run.steps["train"](run.state, batch)
    return out
  err, (run.state, out) = run.steps["checked_train"](run.state, batch)
  _raise_failed_check(run, err, step + 1, f"at training step {step + 1}")
  return out


def _raise_failed_check(run: _Run, err, step: int, where: str) -> None:
  error = input_error(err, where, run.hint)
  if isinstance(error, FloatingPointError):
    raise _diverged(run, step, f"the model's outputs are not finite ({error})")
  if error is not None:
    raise error


def _diverged(run: _Run, step: int, detail: str) -> FloatingPointError:
  """The error of a run whose loss, gradient, parameters or outputs became non-finite."""
  t = run.config.train
  return FloatingPointError(
    f"Training diverged at step {step}: {detail} with loss {run.config.loss.name!r}; training "
    f"stopped and this step's update was not applied. The last good checkpoint (step "
    f"{run.ckpt.latest_step()}) in {run.ckpt.directory} is untouched. Try a lower "
    f"config.train.learning_rate (now {t.learning_rate}), gradient clipping "
    f"(config.train.grad_clip_norm), or check the loss options and the data."
  )


def _consume(run: _Run, step: int, out) -> None:
  """Reads a step's outputs on the host (one step late): divergence, loss window, progress."""
  out = jax.device_get(out)
  if not bool(out["finite"]):
    raise _diverged(
      run,
      step,
      f"non-finite loss, gradient or updated parameters (loss={float(out['loss'])}, "
      f"gradient norm={float(out['grad_norm'])})",
    )
  run.window.append(float(out["loss"]))
  run.last = {"grad_norm": float(out["grad_norm"]), "learning_rate": float(out["learning_rate"])}
  run.pbar.update(1)
  run.pbar.set_postfix(loss=f"{run.window[-1]:.4f}", refresh=False)


# --------------------------------------------------------------------------------------------
# Loop.


def _train(run: _Run, preemption: Preemption) -> dict:
  """Steps from ``run.start`` to ``train.steps``, then the final evaluations."""
  t = run.config.train
  from tqdm.auto import tqdm

  run.pbar = tqdm(
    total=t.steps,
    initial=run.start,
    desc=f"{run.config.loss.name}",
    unit="step",
    disable=not (run.is_main and t.progress_bar),
    mininterval=1.0,
    dynamic_ncols=True,
  )
  batches = seg_data.train_batches(
    run.ds,
    batch_size=t.batch_size,
    seed=t.seed,
    start_step=run.start,
    sharding=run.batch_sharding,
    **_loss_targets(run.config, run.ds.num_classes),
  )
  final = None
  try:
    pending = None
    for step in range(run.start, t.steps):
      batch = next(batches)
      tic = time.perf_counter()
      out = _step(run, batch, step)
      if step == run.start:
        jax.block_until_ready(out)
        first = f"First step (with compilation): {time.perf_counter() - tic:.1f} s."
        outputs.echo(first, pbar=run.pbar)
        run.tick = time.perf_counter()
      if pending is not None:
        _consume(run, *pending)
      pending = (step + 1, out)
      s = step + 1
      done = s == t.steps
      do_eval = done or (t.eval_every > 0 and s % t.eval_every == 0)
      do_ckpt = do_eval or (t.checkpoint_every > 0 and s % t.checkpoint_every == 0)
      preempted = preemption.reached(s)
      do_log = done or s % t.log_every == 0 or preempted  # Nothing logged is lost on SIGTERM.
      if not (do_eval or do_ckpt or do_log or preempted):
        continue
      _consume(run, *pending)
      pending = None
      if do_log and run.window:
        _log_train(run, s)
      val = _evaluate_during_training(run, s, done) if do_eval else None
      if done:
        final = dict(val, step=s)
      if do_ckpt or preempted:
        run.ckpt.save(s, run.state, metrics=val if val and "dice_mean" in val else None)
      if preempted and not done:
        run.ckpt.wait()
        outputs.echo(
          f"SIGTERM: saved a checkpoint at step {s} in {run.ckpt.directory}; rerun the same "
          "command to resume.",
          pbar=run.pbar,
        )
        return {"preempted": True, "step": s}
  finally:
    batches.close()  # Stops the reading threads.
  return _finish(run, final)


def _log_train(run: _Run, s: int) -> None:
  """The training record of the steps since the last one (mean loss, speed)."""
  run.train_time += time.perf_counter() - run.tick
  n, seconds = len(run.window), max(run.train_time, 1e-9)
  record = {"loss": float(np.mean(run.window)), **run.last}
  record["steps_per_sec"] = n / seconds
  record["images_per_sec"] = n * run.config.train.batch_size / seconds
  run.writer.write(s, "train", record)
  run.window.clear()
  run.train_time = 0.0
  run.tick = time.perf_counter()


# --------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(
  eval_step, state: TrainState, ds, split: str, *, batch_size: int, sharding, num_examples=0
) -> tuple[dict, dict | None]:
  """Metrics of ``split`` accumulated exactly over all its examples.

  ``eval_step(state, batch)`` returns the predicted class maps of a batch.

  Returns:
    ``(metrics, examples)``: the :meth:`seg_jax.metrics.SegMetrics.compute` dict, and the first
    ``num_examples`` examples as ``{'image', 'label', 'pred'}`` NumPy arrays (``None`` if 0).
  """
  acc = metrics.SegMetrics(ds.num_classes, ds.class_names)
  kept: dict[str, list] = {"image": [], "label": [], "pred": []}
  have = 0
  for batch in seg_data.eval_batches(ds, split, batch_size=batch_size, sharding=sharding):
    preds = to_host(eval_step(state, batch))
    labels, valid = to_host(batch["label"]), to_host(batch["valid"])
    acc.update(preds, labels, valid)
    if have < num_examples:
      take = min(num_examples - have, int(valid.sum()))
      idx = np.flatnonzero(valid)[:take]
      kept["image"].append(to_host(batch["image"])[idx])
      kept["label"].append(labels[idx])
      kept["pred"].append(preds[idx])
      have += take
  examples = {k: np.concatenate(v) for k, v in kept.items()} if have else None
  return acc.compute(), examples


def _run_eval(run: _Run, split: str, num_examples: int = 0) -> tuple[dict, dict | None]:
  """:func:`evaluate` of the current state with the checked evaluation step."""

  def eval_step(state, batch):
    err, preds = run.steps["checked_eval"](state, batch["image"], batch["label"], batch["valid"])
    _raise_failed_check(run, err, int(state.step), f"on a {split} batch")
    return preds

  return evaluate(
    eval_step,
    run.state,
    run.ds,
    split,
    batch_size=run.eval_batch_size,
    sharding=run.batch_sharding,
    num_examples=num_examples,
  )


def _evaluate_during_training(run: _Run, s: int, done: bool) -> dict:
  """The evaluation at step ``s`` (with the predictions figure at the end); its metrics."""
  t = run.config.train
  run.train_time += time.perf_counter() - run.tick
  val, examples = _run_eval(run, t.eval_split, num_examples=t.num_plot_examples if done else 0)
  run.writer.write(s, t.eval_split, val)
  outputs.echo(outputs.summary(t.eval_split, s, val), pbar=run.pbar)
  if done and examples is not None and run.is_main:
    outputs.save_predictions_png(
      os.path.join(run.workdir, outputs.PREDICTIONS_FILE),
      examples["image"],
      examples["label"],
      examples["pred"],
      class_names=run.ds.class_names,
      title=f"{run.config.loss.name}, step {s}: {t.eval_split} dice_mean "
      f"{val.get('dice_mean', float('nan')):.3f}",
    )
  run.tick = time.perf_counter()
  return val


def _finish(run: _Run, final: dict | None) -> dict:
  """The final metrics; the test split at the end. A run that had already finished (nothing left
  to train) is evaluated again, and its records are completed if they miss the final ones."""
  t = run.config.train
  has_test = False
  if final is None:
    # Every process takes part in the evaluation; the record is written only if missing.
    val, _ = _run_eval(run, t.eval_split)
    final = dict(val, step=t.steps)
    records = outputs.read_metrics(run.workdir) if run.is_main else []
    if not any(r["step"] == t.steps and r["split"] == t.eval_split for r in records):
      run.writer.write(t.steps, t.eval_split, val)
    outputs.echo(f"Training had already reached step {t.steps} in {run.workdir}.", pbar=run.pbar)
    # A run stopped during its final test evaluation gets it now.
    has_test = any(r["step"] == t.steps and r["split"] == "test" for r in records)
    if jax.process_count() > 1:  # Only process 0 reads the records; all must agree.
      has_test = bool(multihost_utils.broadcast_one_to_all(np.int32(has_test)))
  if t.test_at_end and "test" in run.ds.splits and t.eval_split != "test" and not has_test:
    test, _ = _run_eval(run, "test")
    run.writer.write(t.steps, "test", test)
    outputs.echo(outputs.summary("test", t.steps, test), pbar=run.pbar)
  return final
