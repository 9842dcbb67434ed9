r"""``train_seeds_and_evaluate``: several seeds of one config trained as one vmapped program.

``seg_jax.compare --seeds_mode=vmap`` trains the seeds of a loss this way; on an accelerator that
one small model leaves mostly idle it is faster than training them in turn (BENCHMARKS.md,
"Seeds": 0.48x the time on an H200, 2.55x on a 2-core CPU, where in turn stays the default).

**What is the same as** :func:`seg_jax.training.loop.train_and_evaluate` **run once per seed.**
The configs may differ in ``train.seed`` only. The state of every seed is stacked on a leading
axis (:func:`seg_jax.training.state.init_seed_states`: slice ``s`` is bit for bit the state
``init_state`` gives seed ``s``), every seed reads its own batches
(:func:`seg_jax.data.train_batches` with its seed: the same data order and augmentation as its
run in turn), and the step is the trainer's per-device step ``jax.vmap``-ed over the seed axis
inside the same ``jit(shard_map)`` (:func:`seg_jax.training.steps.seed_step`), so each seed
computes what its own run computes, up to float rounding. Each seed's workdir receives what its
own run writes: ``config.json``, ``metrics.jsonl`` and TensorBoard events (training records
every ``log_every`` steps, an evaluation of the whole split every ``eval_every`` steps and at
the end, the test split at the end), ``predictions.png``, and its checkpoints at the same steps
(its own :class:`seg_jax.training.checkpoint.Checkpointer`: latest and best kept). The first
``check_inputs_steps`` steps and every evaluation use the checked steps.

**What differs.**

* Speed records: a seed's ``steps_per_sec`` is that of the group (all seeds advance one step
  per program step), so its training time is the group's, not a share of it.
* Divergence: a seed whose loss, gradient, update or evaluation outputs become non-finite stops
  being recorded and checkpointed at that step (its last good checkpoint is left as it was) and
  its entry of the result is the :class:`FloatingPointError` its own run would raise; the other
  seeds train on (the diverged seed's slice is still computed, wasted). A failed *input* check
  (labels outside the classes, bad mask weights: the data, common to all seeds) stops the whole
  group with the error, as it stops a run.
* Resuming: the seeds resume together from their latest checkpoint, which must be at the same
  step for all (a group interrupted or preempted together is); runs that stand at different
  steps are refused (``seg_jax.compare`` trains each such set of seeds as its own group).

SIGTERM saves every seed's checkpoint at the current step and returns early, as the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax import data as seg_data
from seg_jax import metrics
from seg_jax.training import config as train_config
from seg_jax.training import loop, outputs
from seg_jax.training.checkpoint import Checkpointer, Preemption
from seg_jax.training.devices import AXIS, make_mesh, to_host
from seg_jax.training.state import (
  TrainState,
  abstract_state,
  build_model,
  init_seed_states,
  make_optimizer,
)
from seg_jax.training.steps import (
  input_error,
)


def train_seeds_and_evaluate(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  *,
  mesh: Mesh | None = None,
) -> list:
  """Trains the seeds of ``configs`` as one program, seed ``k`` in ``workdirs[k]`` (module
  docstring); resumes them if their workdirs have checkpoints.

  Args:
    configs: training configs that differ in ``train.seed`` only (distinct seeds).
    workdirs: one output directory per config (distinct).
    mesh: the device mesh, as for :func:`seg_jax.training.loop.train_and_evaluate`.

  Returns:
    One entry per config: the final validation metrics with ``step`` (what
    ``train_and_evaluate`` returns), or the :class:`FloatingPointError` of a seed that diverged;
    every entry ``{'preempted': True, 'step': s}`` if SIGTERM stopped the group.

  Raises:
    ValueError / TypeError: configs that differ in more than the seed, repeated seeds or
      workdirs, a bad config, workdirs whose checkpoints stand at different steps, or a failed
      input check (as ``train_and_evaluate``).
  """
  configs = list(configs)
  workdirs = [os.path.abspath(w) for w in workdirs]
  _check_group(configs, workdirs)
  for c in configs:
    train_config.validate(c)
  preemption = Preemption()
  try:
    group = _setup(configs, workdirs, mesh)
    try:
      return _train(group, preemption)
    finally:
      group.close()
  finally:
    preemption.close()


def _check_group(configs, workdirs) -> None:
  if not configs or len(configs) != len(workdirs):
    raise ValueError(
      f"train_seeds_and_evaluate: give one workdir per config, got {len(configs)} config(s) and "
      f"{len(workdirs)} workdir(s)."
    )
  seeds = [c.train.seed for c in configs]
  if len(set(seeds)) != len(seeds) or len(set(workdirs)) != len(workdirs):
    raise ValueError(
      f"train_seeds_and_evaluate: the seeds {seeds} and the workdirs {workdirs} must be distinct."
    )
  first = json.loads(configs[0].to_json_best_effort())
  for c in configs[1:]:
    diffs = outputs.config_differences(first, c, ignore=("train.seed",))
    if diffs:
      raise ValueError(
        "train_seeds_and_evaluate: the configs of one group may differ in train.seed only; "
        f"seed {c.train.seed} differs from seed {seeds[0]} in {'; '.join(diffs[:6])}."
      )


# --------------------------------------------------------------------------------------------
# Setup.


@dataclasses.dataclass
class _Seed:
  """One seed of the group: its config, outputs and the loop's records (``config`` and
  ``ckpt`` are what :func:`seg_jax.training.loop._diverged` reads)."""

  config: ml_collections.ConfigDict
  workdir: str
  ckpt: Checkpointer
  writer: outputs.MetricWriter | None = None
  window: list = dataclasses.field(default_factory=list)
  last: dict = dataclasses.field(default_factory=dict)
  error: FloatingPointError | None = None

  @property
  def active(self) -> bool:
    return self.error is None

  @property
  def name(self) -> str:
    return f"seed {self.config.train.seed}"


@dataclasses.dataclass
class _Group:
  """The group: what the setup built, and the loop's state between steps."""

  config: ml_collections.ConfigDict  # The first seed's; the others differ in train.seed only.
  mesh: Mesh
  ds: Any
  model: Any
  tx: Any
  schedule: Any
  state: TrainState  # Every leaf with a leading seed axis.
  start: int
  eval_batch_size: int
  hint: str
  seeds: list[_Seed]
  pbar: Any = None
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
    """The jitted steps over the seed axis (each compiled at its first call)."""
    return loop.jitted_steps(self.config, self.model, self.tx, self.schedule, self.mesh, seeds=True)

  def close(self) -> None:
    if self.pbar is not None:
      self.pbar.close()
    for seed in self.seeds:
      if seed.writer is not None:
        seed.writer.close()
      seed.ckpt.close()


def _setup(configs, workdirs, mesh: Mesh | None) -> _Group:
  config = configs[0]
  t = config.train
  mesh = make_mesh() if mesh is None else mesh
  if mesh.axis_names != (AXIS,):
    raise ValueError(f"mesh must have the single axis {AXIS!r}, got {mesh.axis_names}.")
  eval_batch_size = t.eval_batch_size or t.batch_size
  loop._check_batch("batch_size", t.batch_size, mesh.devices.size)
  loop._check_batch("eval_batch_size", eval_batch_size, mesh.devices.size)
  ds = loop._load_data(config)
  model = build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, schedule = make_optimizer(t)
  target = abstract_state(model, tx, mesh)
  seed_list = [c.train.seed for c in configs]
  outputs.echo(
    f"Seeds {seed_list} as one vmapped program: U-Net features={config.model.features} depth="
    f"{config.model.depth} norm={config.model.norm}; loss {config.loss.name} "
    f"{train_config.loss_options(config)}; {mesh.devices.size} device(s), global batch "
    f"{t.batch_size} per seed."
  )
  seeds = []
  try:
    for c, w in zip(configs, workdirs, strict=True):
      ckpt = Checkpointer(
        os.path.join(w, "checkpoints"), keep=t.keep_checkpoints, async_save=t.async_checkpoints
      )
      seeds.append(_Seed(c, w, ckpt))
    starts = [s.ckpt.latest_step() for s in seeds]
    if len(set(starts)) > 1:
      raise ValueError(
        "train_seeds_and_evaluate: the runs' latest checkpoints stand at different steps "
        f"({', '.join(f'{s.workdir}: {n}' for s, n in zip(seeds, starts, strict=True))}); a "
        "group resumes from one step. Train these runs one at a time (train_and_evaluate), or "
        "in groups of runs at the same step."
      )
    start = starts[0]
    if start is None:
      state = init_seed_states(model, tx, mesh, seed_list)
    else:
      # _restore closes a checkpointer it refuses; closing it again below is harmless.
      restored = [loop._restore(s.config, s.workdir, s.ckpt, target, start) for s in seeds]
      state = _stack(restored, mesh)
  except BaseException:
    for s in seeds:
      s.ckpt.close()
    raise
  group = _Group(
    config, mesh, ds, model, tx, schedule, state, start or 0, eval_batch_size,
    loop._input_hint(config, ds), seeds,
  )  # fmt: skip
  for s in seeds:
    s.writer = outputs.MetricWriter(s.workdir, enabled=group.is_main, resume_step=start)
    if group.is_main:
      outputs.write_config(s.workdir, s.config)
  return group


def _stack(states: list[TrainState], mesh: Mesh) -> TrainState:
  """The states stacked on a leading seed axis, replicated over ``mesh``."""
  stack = jax.jit(
    lambda *xs: jax.tree.map(lambda *a: jnp.stack(a), *xs),
    out_shardings=NamedSharding(mesh, P()),
  )
  return stack(*states)


def _seed_state(state: TrainState, i: int) -> TrainState:
  """Seed ``i``'s slice of the stacked state (a state as ``train_and_evaluate`` has)."""
  return jax.tree.map(lambda x: x[i], state)


# --------------------------------------------------------------------------------------------
# Step.


def _raise_input_error(group: _Group, err, where: str) -> None:
  """Raises a failed input check; non-finite outputs are left to the per-seed ``finite`` flags,
  which say which seed they belong to (the checkify error does not)."""
  error = input_error(err, where, group.hint)
  if error is not None and not isinstance(error, FloatingPointError):
    raise error


def _step(group: _Group, batch, step: int):
  if step >= group.start + group.config.train.check_inputs_steps:
    group.state, out = group.steps["train"](group.state, batch)
    return out
  err, (group.state, out) = group.steps["checked_train"](group.state, batch)
  _raise_input_error(group, err, f"at training step {step + 1}")
  return out


def _stop(group: _Group, seed: _Seed, step: int, detail: str) -> None:
  """Records that ``seed`` diverged at ``step``: its error, as its own run would raise it."""
  seed.error = loop._diverged(seed, step, detail)
  outputs.echo(f"{seed.name}: {seed.error}", pbar=group.pbar)


def _consume(group: _Group, step: int, out) -> None:
  """Reads a step's outputs on the host (one step late): divergence, loss windows, progress."""
  out = jax.device_get(out)
  for i, seed in enumerate(group.seeds):
    if not seed.active:
      continue
    if not bool(out["finite"][i]):
      _stop(
        group,
        seed,
        step,
        f"non-finite loss, gradient or updated parameters (loss={float(out['loss'][i])}, "
        f"gradient norm={float(out['grad_norm'][i])})",
      )
      continue
    seed.window.append(float(out["loss"][i]))
    seed.last = {
      "grad_norm": float(out["grad_norm"][i]),
      "learning_rate": float(out["learning_rate"][i]),
    }
  group.pbar.update(1)
  shown = " ".join(f"{s.window[-1]:.4f}" for s in group.seeds if s.active and s.window)
  group.pbar.set_postfix(loss=shown, refresh=False)


# --------------------------------------------------------------------------------------------
# Loop.


def _train(group: _Group, preemption: Preemption) -> list:
  t = group.config.train
  from tqdm.auto import tqdm

  group.pbar = tqdm(
    total=t.steps,
    initial=group.start,
    desc=f"{group.config.loss.name} x{len(group.seeds)} seeds",
    unit="step",
    disable=not (group.is_main and t.progress_bar),
    mininterval=1.0,
    dynamic_ncols=True,
  )
  targets = loop._loss_targets(group.config, group.ds.num_classes)
  batches = [
    seg_data.train_batches(
      group.ds,
      batch_size=t.batch_size,
      seed=s.config.train.seed,
      start_step=group.start,
      sharding=group.batch_sharding,
      **targets,
    )
    for s in group.seeds
  ]
  final = None
  try:
    pending = None
    for step in range(group.start, t.steps):
      batch = tuple(next(b) for b in batches)
      tic = time.perf_counter()
      out = _step(group, batch, step)
      if step == group.start:
        jax.block_until_ready(out)
        first = f"First step (with compilation): {time.perf_counter() - tic:.1f} s."
        outputs.echo(first, pbar=group.pbar)
        group.tick = time.perf_counter()
      if pending is not None:
        _consume(group, *pending)
      pending = (step + 1, out)
      s = step + 1
      done = s == t.steps
      do_eval = done or (t.eval_every > 0 and s % t.eval_every == 0)
      do_ckpt = do_eval or (t.checkpoint_every > 0 and s % t.checkpoint_every == 0)
      preempted = preemption.reached(s)
      do_log = done or s % t.log_every == 0 or preempted
      if not (do_eval or do_ckpt or do_log or preempted):
        continue
      _consume(group, *pending)
      pending = None
      if not any(seed.active for seed in group.seeds):
        break  # Every seed diverged: nothing left to train.
      if do_log:
        _log_train(group, s)
      vals = _evaluate_during_training(group, s, done) if do_eval else None
      if done:
        final = vals
      if do_ckpt or preempted:
        for i, seed in enumerate(group.seeds):
          if seed.active:
            val = vals[i] if vals else None
            seed.ckpt.save(
              s, _seed_state(group.state, i), metrics=val if val and "dice_mean" in val else None
            )
      if preempted and not done:
        for seed in group.seeds:
          seed.ckpt.wait()
        outputs.echo(
          f"SIGTERM: saved the seeds' checkpoints at step {s}; rerun the same command to resume.",
          pbar=group.pbar,
        )
        return [{"preempted": True, "step": s} for _ in group.seeds]
  finally:
    for b in batches:
      b.close()
  return _finish(group, final)


def _log_train(group: _Group, s: int) -> None:
  """Every seed's training record of the steps since the last one (mean loss, speed)."""
  group.train_time += time.perf_counter() - group.tick
  seconds = max(group.train_time, 1e-9)
  for seed in group.seeds:
    if not (seed.active and seed.window):
      continue
    n = len(seed.window)
    record = {"loss": float(np.mean(seed.window)), **seed.last}
    record["steps_per_sec"] = n / seconds
    record["images_per_sec"] = n * group.config.train.batch_size / seconds
    seed.writer.write(s, "train", record)
    seed.window.clear()
  group.train_time = 0.0
  group.tick = time.perf_counter()


# --------------------------------------------------------------------------------------------
# Evaluation.


def _evaluate(group: _Group, split: str, step: int, num_examples: int = 0):
  """Every active seed's metrics of ``split`` (as :func:`seg_jax.training.loop.evaluate`, one
  pass for all seeds) and its first ``num_examples`` examples; ``None`` for the seeds that are
  not active, or whose outputs were not finite (they are stopped)."""
  ds, n = group.ds, len(group.seeds)
  accs = [metrics.SegMetrics(ds.num_classes, ds.class_names) for _ in range(n)]
  finite = [True] * n
  kept: dict[str, list] = {"image": [], "label": [], "pred": []}
  have = 0
  for batch in seg_data.eval_batches(
    ds, split, batch_size=group.eval_batch_size, sharding=group.batch_sharding
  ):
    err, (preds, rows_finite) = group.steps["checked_eval"](
      group.state, batch["image"], batch["label"], batch["valid"]
    )
    _raise_input_error(group, err, f"on a {split} batch")
    preds, rows_finite = to_host(preds), to_host(rows_finite)
    labels, valid = to_host(batch["label"]), to_host(batch["valid"])
    for i, seed in enumerate(group.seeds):
      if seed.active:
        finite[i] &= bool(np.all(rows_finite[i][valid]))
        accs[i].update(preds[i], labels, valid)
    if have < num_examples:
      idx = np.flatnonzero(valid)[: num_examples - have]
      kept["image"].append(to_host(batch["image"])[idx])
      kept["label"].append(labels[idx])
      kept["pred"].append(preds[:, idx])
      have += len(idx)
  results = []
  for i, seed in enumerate(group.seeds):
    if seed.active and not finite[i]:
      _stop(group, seed, step, f"the model's outputs are not finite on a {split} batch")
    results.append(accs[i].compute() if seed.active else None)
  examples = None
  if have:
    examples = {k: np.concatenate(v, axis=1 if k == "pred" else 0) for k, v in kept.items()}
  return results, examples


def _evaluate_during_training(group: _Group, s: int, done: bool) -> list:
  """The evaluation at step ``s`` of every seed (the predictions figures at the end)."""
  t = group.config.train
  group.train_time += time.perf_counter() - group.tick
  vals, examples = _evaluate(group, t.eval_split, s, t.num_plot_examples if done else 0)
  for i, (seed, val) in enumerate(zip(group.seeds, vals, strict=True)):
    if val is None:
      continue
    seed.writer.write(s, t.eval_split, val)
    outputs.echo(f"{seed.name}: {outputs.summary(t.eval_split, s, val)}", pbar=group.pbar)
    if done and examples is not None and group.is_main:
      outputs.save_predictions_png(
        os.path.join(seed.workdir, outputs.PREDICTIONS_FILE),
        examples["image"],
        examples["label"],
        examples["pred"][i],
        class_names=group.ds.class_names,
        title=f"{group.config.loss.name} {seed.name}, step {s}: {t.eval_split} dice_mean "
        f"{val.get('dice_mean', float('nan')):.3f}",
      )
  group.tick = time.perf_counter()
  return vals


def _finish(group: _Group, final: list | None) -> list:
  """Every seed's result; the test split at the end. A group that had already finished is
  evaluated again and its records completed, as :func:`seg_jax.training.loop._finish` does."""
  t = group.config.train
  n = len(group.seeds)
  has_test = [False] * n
  if final is None and all(s.active for s in group.seeds):  # Nothing was left to train.
    final, _ = _evaluate(group, t.eval_split, t.steps)
    for i, seed in enumerate(group.seeds):
      records = outputs.read_metrics(seed.workdir) if group.is_main else []
      if final[i] is not None and not any(
        r["step"] == t.steps and r["split"] == t.eval_split for r in records
      ):
        seed.writer.write(t.steps, t.eval_split, final[i])
      has_test[i] = any(r["step"] == t.steps and r["split"] == "test" for r in records)
    if jax.process_count() > 1:
      has_test = [
        bool(x) for x in multihost_utils.broadcast_one_to_all(np.asarray(has_test, np.int32))
      ]
    outputs.echo(f"Training had already reached step {t.steps}.", pbar=group.pbar)
  want_test = t.test_at_end and "test" in group.ds.splits and t.eval_split != "test"
  if want_test and not all(has_test[i] or not s.active for i, s in enumerate(group.seeds)):
    tests, _ = _evaluate(group, "test", t.steps)
    for i, seed in enumerate(group.seeds):
      if tests[i] is not None and not has_test[i]:
        seed.writer.write(t.steps, "test", tests[i])
        outputs.echo(f"{seed.name}: {outputs.summary('test', t.steps, tests[i])}", pbar=group.pbar)
  return [
    seed.error if seed.error is not None else dict(final[i], step=t.steps)
    for i, seed in enumerate(group.seeds)
  ]
