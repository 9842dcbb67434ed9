r"""Training and evaluation of a U-Net on any registry loss: ``train_and_evaluate``.

**Data parallelism.** All devices of all processes form a 1-D mesh with axis ``'data'``
(:func:`make_mesh`, Auto axis type). The training step is written per device, as with ``pmap``,
and run with ``jax.shard_map`` inside ``jax.jit``: the state (parameters, optimizer state, batch
statistics) is replicated (``P()``), the batch is split along its first axis (``P('data')``).
The loss is called with ``axis_name='data'``, so its batch-level sums are ``psum``-ed and every
device computes the loss of the *global* batch :math:`L(\theta)`.

The gradient convention (the trap): under ``shard_map``'s default ``check_vma=True`` a replicated
parameter is implicitly broadcast to the devices, and the transpose of that broadcast sums the
per-device cotangents. The gradient with respect to a replicated parameter therefore comes back
already summed over devices and replicated. Taking it of the global loss gives exactly
:math:`\nabla_\theta L`, the single-device gradient on the whole batch, and nothing more is
done to it (a ``pmean`` of that replicated value would be a no-op). The ``pmap`` habit, taking
the gradient of each device's *local* mean loss and then ``pmean``-ing it, gives here the device
count times the right gradient: the sum has already happened and the ``pmean`` of a replicated
value changes nothing. ``tests/test_train_parallel.py`` checks that 8-device and 1-device
training agree step by step with plain SGD (with Adam, a gradient scaled by a constant would be
almost invisible).

**Step.** ``AdamW`` (or ``Adam``, or SGD with momentum) with a linear warm-up and cosine decay
(optax), after clipping the gradient's global norm. A step whose loss, gradient, or updated
parameters, optimizer state or batch statistics are not finite leaves the state unchanged; the
host sees the flag one step later (so the device is never idle waiting for it) and stops with
:class:`FloatingPointError`, leaving the checkpoints as they were.

**Evaluation** (every ``eval_every`` steps and at the end) predicts every example of the
validation split once (the padded rows of the last batch are excluded through their ``valid``
flag) and accumulates confusion counts and per-image HD95 exactly with
:class:`seg_jax.metrics.SegMetrics`: the metrics are those of the whole split, not averages of
per-batch values.

**Checkpoints** (:class:`seg_jax.checkpoint.Checkpointer`): at every ``checkpoint_every`` steps,
every evaluation and the end; the ``keep_checkpoints`` latest and the best by validation
``dice_mean`` are kept; saves are asynchronous. A rerun with the same workdir restores the latest
and continues; the data order is a function of ``(seed, step)``, so the resumed run sees the
same batches and ends with the same parameters and metrics as an uninterrupted one. SIGTERM (a
preempted VM; with several processes, JAX's preemption sync point) saves a checkpoint at the
current step and returns early with ``{'preempted': True}``.

**Outputs** in the workdir: see :mod:`seg_jax.logging_utils` (``metrics.jsonl``,
``tensorboard/``, ``config.json``, ``predictions.png``) and ``checkpoints/``.

Example::

  from seg_jax import train, train_config
  config = train_config.default_config()
  config.loss.name = 'focal'
  metrics = train.train_and_evaluate(config, '/tmp/focal_run')
  metrics['dice_mean']
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import checkify, multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax import data as seg_data
from seg_jax import losses, metrics, train_config
from seg_jax.checkpoint import Checkpointer
from seg_jax.logging_utils import (
  PREDICTIONS_FILE,
  MetricWriter,
  config_differences,
  read_config,
  read_metrics,
  save_predictions_png,
  write_config,
)
from seg_jax.models import UNet

AXIS = "data"
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a step changes (all replicated over the mesh).

  Attributes:
    step: number of optimisation steps taken (int32 scalar).
    params: model parameters.
    batch_stats: batch-norm running statistics (empty unless ``model.norm == 'batch'``).
    opt_state: optax optimizer state.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree


def make_mesh(devices=None) -> Mesh:
  """A 1-D ``'data'`` mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices), (AXIS,))


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> UNet:
  """The U-Net of ``config.model`` for data with ``num_classes`` classes."""
  m = config.model
  norm = None if m.norm == "none" else m.norm
  return UNet(
    num_classes=train_config.output_channels(config, num_classes),
    features=m.features,
    depth=m.depth,
    norm=norm,
    num_groups=m.num_groups,
    axis_name=AXIS if norm == "batch" else None,
    dtype=jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32,
    deep_supervision=m.deep_supervision,
  )


def build_loss(config: ml_collections.ConfigDict, *, deep_supervision: bool = True):
  """``fn(outputs, labels)``: the configured loss (with deep supervision if the model has it and
  ``deep_supervision``), reduced over the global batch (``axis_name='data'``, to be called
  inside the mesh)."""
  fn = losses.get(config.loss.name, **train_config.loss_options(config))
  if config.model.deep_supervision and deep_supervision:
    weights = tuple(config.model.deep_supervision_weights) or None
    fn = losses.deep_supervision(fn, weights)
  return functools.partial(fn, axis_name=AXIS)


def make_optimizer(t: ml_collections.ConfigDict):
  """``(optax transformation, learning-rate schedule)`` from ``config.train``."""
  if t.schedule == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=t.learning_rate,
      warmup_steps=t.warmup_steps,
      decay_steps=t.steps,
      end_value=t.learning_rate * t.final_lr_fraction,
    )
  else:
    schedule = optax.join_schedules(
      [
        optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1)),
        optax.constant_schedule(t.learning_rate),
      ],
      [t.warmup_steps],
    )
  if t.optimizer == "adamw":
    opt = optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)
  elif t.optimizer == "adam":
    opt = optax.adam(schedule, b1=t.b1, b2=t.b2, eps=t.eps)
  else:
    opt = optax.sgd(schedule, momentum=t.momentum or None)
    if t.weight_decay > 0:
      opt = optax.chain(optax.add_decayed_weights(t.weight_decay), opt)
  parts = [optax.clip_by_global_norm(t.grad_clip_norm)] if t.grad_clip_norm > 0 else []
  return optax.chain(*parts, opt), schedule


def _init_fn(model: UNet, tx, input_shape, seed: int):
  def init():
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init(jax.random.key(seed), x, train=False)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
    )

  return init


def init_state(model: UNet, tx, input_shape, mesh: Mesh, seed: int) -> TrainState:
  """A fresh state, replicated over ``mesh`` (the initialisation runs once, jitted)."""
  # Runs once: compiling it without LLVM optimisations is several times faster on CPU (the
  # random initialisers' threefry code is otherwise slow to compile) and costs nothing at run.
  return jax.jit(
    _init_fn(model, tx, input_shape, seed),
    out_shardings=NamedSharding(mesh, P()),
    compiler_options={"xla_backend_optimization_level": 0},
  )()


def abstract_state(model: UNet, tx, input_shape, mesh: Mesh) -> TrainState:
  r"""The state's structure as ``jax.ShapeDtypeStruct``\ s replicated over ``mesh``: the
  restore target of a checkpoint, obtained without running (or compiling) the initialisation."""
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape, 0))
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


def _apply(model: UNet, state: TrainState, params, images, *, train: bool):
  """Model outputs and the new batch statistics."""
  variables = {"params": params}
  if jax.tree.leaves(state.batch_stats):
    variables["batch_stats"] = state.batch_stats
    if train:
      out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
      return out, updates["batch_stats"]
  return model.apply(variables, images, train=train), state.batch_stats


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(model: UNet, loss_fn, tx, schedule, mesh: Mesh, *, checked: bool = False):
  """The jitted data-parallel step ``(state, batch) -> (state, metrics)``.

  ``state`` is donated. ``metrics``: ``loss`` (global batch), ``grad_norm`` (before clipping),
  ``learning_rate`` (of this step), ``finite`` (False: the loss, the gradient, or the updated
  parameters, optimizer state or batch statistics were not finite, and the update was skipped).

  With ``checked``, the loss is :func:`seg_jax.losses.checked` and the step is checkified: it
  returns ``(err, (state, metrics))``, ``err`` a ``checkify.Error`` to throw on the host
  (:func:`input_error`).
  """
  if checked:
    loss_fn = losses.checked(loss_fn)

  def per_device(state: TrainState, batch):
    def compute_loss(params):
      out, batch_stats = _apply(model, state, params, batch["image"], train=True)
      return loss_fn(out, batch["label"]), batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    # `grads` is already the gradient of the global-batch loss, summed over the devices by
    # shard_map's transpose and replicated; nothing to average (module docstring).
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(state.step + 1, params, batch_stats, opt_state)
    finite = (
      jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite((params, opt_state, batch_stats))
    )
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    out = {
      "loss": loss,
      "grad_norm": grad_norm,
      "learning_rate": schedule(state.step),
      "finite": finite,
    }
    return new, out

  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(losses.checkified(mapped) if checked else mapped, donate_argnums=0)


def make_eval_step(model: UNet, mesh: Mesh):
  """The jitted step ``(state, images) -> predicted class maps`` (sharded like the batch)."""

  def per_device(state: TrainState, images):
    out, _ = _apply(model, state, state.params, images, train=False)
    if isinstance(out, tuple | list):  # Deep supervision: the first output is the main one.
      out = out[0]
    return metrics.predict_labels(out)

  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))
  return jax.jit(mapped)


def make_checked_eval_step(model: UNet, loss_fn, mesh: Mesh):
  """The jitted checkified step ``(state, images, labels, valid) -> (err, predicted class maps)``.

  Like :func:`make_eval_step`, and the main output and the labels of the rows marked ``valid``
  go through :func:`seg_jax.losses.checked` ``(loss_fn)`` (labels in range, finite outputs);
  ``err`` is to be thrown on the host (:func:`input_error`). ``loss_fn`` is the loss
  without deep supervision.
  """
  checked_loss = losses.checked(loss_fn)

  def per_device(state: TrainState, images, labels, valid):
    out, _ = _apply(model, state, state.params, images, train=False)
    if isinstance(out, tuple | list):
      out = out[0]
    mask = jnp.broadcast_to(valid.reshape(-1, *(1,) * (labels.ndim - 1)), labels.shape)
    checked_loss(out, labels, mask=mask.astype(jnp.float32))
    return metrics.predict_labels(out)

  spec = P(AXIS)
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), spec, spec, spec), out_specs=spec)
  return jax.jit(losses.checkified(mapped))


def input_error(err, where: str, hint: str = "") -> ValueError | None:
  """The error to raise for a failed check of a checked step (``None`` if all passed).

  ``ValueError`` naming ``where``, then the check's message (value and valid range) and
  ``hint``. A failed check of the *logits* is the model diverging, not bad data: the caller
  turns ``FloatingPointError`` instead (see :func:`diverged`), recognised by the message of
  :mod:`seg_jax.losses`' value checks (``'<loss>: logits hold ...'``).
  """
  try:
    err.throw()  # Its message names the first failure (err.get() lists every device's).
  except checkify.JaxRuntimeError as e:
    message = str(e)
  else:
    return None
  if ": logits hold " in message:
    return FloatingPointError(message)
  return ValueError(f"Input check failed {where}: {message}{hint}")


def diverged(config, ckpt: Checkpointer, step: int, detail: str) -> FloatingPointError:
  """The error of a run whose loss, gradient, parameters or outputs became non-finite."""
  t = config.train
  return FloatingPointError(
    f"Training diverged at step {step}: {detail} with loss {config.loss.name!r}; training "
    f"stopped and this step's update was not applied. The last good checkpoint (step "
    f"{ckpt.latest_step()}) in {ckpt.directory} is untouched. Try a lower "
    f"config.train.learning_rate (now {t.learning_rate}), gradient clipping "
    f"(config.train.grad_clip_norm), or check the loss options and the data."
  )


def _to_host(x) -> np.ndarray:
  """A global array as one NumPy array on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
    preds = _to_host(eval_step(state, batch))
    labels, valid = _to_host(batch["label"]), _to_host(batch["valid"])
    acc.update(preds, labels, valid)
    if have < num_examples:
      take = min(num_examples - have, int(valid.sum()))
      idx = np.flatnonzero(valid)[:take]
      kept["image"].append(_to_host(batch["image"])[idx])
      kept["label"].append(labels[idx])
      kept["pred"].append(preds[idx])
      have += take
  examples = {k: np.concatenate(v) for k, v in kept.items()} if have else None
  return acc.compute(), examples


class _Preemption:
  """Notices SIGTERM: a local signal handler (one process) or JAX's preemption sync point
  (several processes, where the JAX runtime catches the signal and agrees on a step)."""

  def __init__(self):
    self.flag = False
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    self.flag = True

  def reached(self, step: int) -> bool:
    if self.flag:
      return True
    if jax.process_count() > 1:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # The preemption service is disabled.
        return False
    return False

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _echo(message: str, *, pbar=None) -> None:
  if jax.process_index() != 0:
    return
  if pbar is not None and not pbar.disable:
    pbar.write(message)
  else:
    print(message, flush=True)


def _summary(split: str, step: int, m: dict) -> str:
  keys = [k for k in ("dice_mean", "iou_mean", "precision_mean", "recall_mean", "hd95") if k in m]
  return f"step {step} {split}: " + ", ".join(f"{k}={m[k]:.4f}" for k in keys)


def _input_hint(config, ds) -> str:
  """What to look at when a checked step fails (appended to its message)."""
  ignore = train_config.loss_options(config).get("ignore_index")
  if ds.ignore_index is not None and ignore != ds.ignore_index:
    return (
      f" The data set {ds.name} marks ignored pixels with {ds.ignore_index}: set "
      f"config.loss.options.ignore_index={ds.ignore_index}."
    )
  return " Check the data (mask values, num_classes) and config.loss.options."


def _check_batch(name: str, size: int, n_dev: int) -> None:
  if size % n_dev:
    raise ValueError(
      f"config.train.{name}={size} must be a multiple of the number of devices ({n_dev}) so the "
      f"global batch splits evenly over the '{AXIS}' mesh axis."
    )


def _check_resume(config, workdir: str, start: int, ckpt: Checkpointer) -> None:
  """Refuses to resume a run of another config, or one already past ``config.train.steps``."""
  stored = read_config(workdir)
  diffs = (
    []
    if stored is None
    else config_differences(stored, config, ignore=train_config.RESUME_SAFE_FIELDS)
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


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None
) -> dict:
  """Trains ``config``'s U-Net with ``config``'s loss; resumes from ``workdir`` if it has a
  checkpoint. See the module docstring for what happens and what is written.

  Args:
    config: a training config (:func:`seg_jax.train_config.default_config`); validated first.
    workdir: output directory (created).
    mesh: the device mesh (default :func:`make_mesh` over all devices); its single axis must be
      named ``'data'``.

  Returns:
    The final validation metrics (``dice_mean``, ``iou_mean``, ``dice/<class>``, ...) with
    ``step``; or ``{'preempted': True, 'step': s}`` if SIGTERM stopped the run (a checkpoint
    at ``s`` was saved first).

  Raises:
    ValueError / TypeError: a bad config (see :func:`seg_jax.train_config.validate`) or a batch
      size that does not split over the devices.
    FloatingPointError: the loss or gradient became non-finite (checkpoints are left as they
      were).
  """
  train_config.validate(config)
  # Before anything slow, so that a SIGTERM during start-up or compilation is not fatal.
  preemption = _Preemption()
  try:
    return _train(config, workdir, mesh, preemption)
  finally:
    preemption.close()


def _train(config, workdir: str, mesh: Mesh | None, preemption: _Preemption) -> dict:
  """The body of :func:`train_and_evaluate` (config already validated)."""
  t = config.train
  workdir = os.path.abspath(workdir)
  mesh = make_mesh() if mesh is None else mesh
  if mesh.axis_names != (AXIS,):
    raise ValueError(f"mesh must have the single axis {AXIS!r}, got {mesh.axis_names}.")
  n_dev = mesh.devices.size
  eval_batch_size = t.eval_batch_size or t.batch_size
  _check_batch("batch_size", t.batch_size, n_dev)
  _check_batch("eval_batch_size", eval_batch_size, n_dev)
  is_main = jax.process_index() == 0
  batch_sharding = NamedSharding(mesh, P(AXIS))

  tic = time.perf_counter()
  ds = seg_data.load(config.data)  # With several processes, it builds on process 0 first.
  _echo(
    f"Data {ds.name}: {ds.num_classes} classes {ds.class_names}, images "
    f"{ds.spatial_shape}x{ds.in_channels}, splits "
    f"{ {s: ds.num_examples(s) for s in ds.splits} } ({time.perf_counter() - tic:.1f} s)."
  )
  eval_split = t.eval_split
  if eval_split not in ds.splits:
    raise ValueError(f"config.train.eval_split={eval_split!r} is not a split of {ds.splits}.")
  train_config.check_loss_options(config, ds.num_classes)
  model = build_model(config, ds.num_classes)
  loss_fn = build_loss(config)
  tx, schedule = make_optimizer(t)
  input_shape = (*ds.spatial_shape, ds.in_channels)
  state = abstract_state(model, tx, input_shape, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  _echo(
    f"Model: U-Net features={config.model.features} depth={config.model.depth} "
    f"norm={config.model.norm}, {model.num_classes} output channel(s), {n_params:,} parameters; "
    f"loss {config.loss.name} {train_config.loss_options(config)}; {n_dev} device(s) "
    f"({jax.process_count()} process(es)), global batch {t.batch_size}."
  )

  ckpt = Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=t.keep_checkpoints,
    async_save=t.async_checkpoints,
  )
  start = ckpt.latest_step()
  if start is not None:
    _check_resume(config, workdir, start, ckpt)
    try:
      state = ckpt.restore(state, start)
    except ValueError as err:
      ckpt.close()
      raise ValueError(
        f"{err} Was {workdir} used with another config (model, optimizer)? Use a new "
        "--workdir, or the config the run was started with (its config.json)."
      ) from None
    _echo(f"Resumed from the checkpoint at step {start} in {ckpt.directory}.")
  else:
    state = init_state(model, tx, input_shape, mesh, t.seed)
  writer = MetricWriter(workdir, enabled=is_main, resume_step=start)
  start = start or 0
  if is_main:
    write_config(workdir, config)

  train_step = make_train_step(model, loss_fn, tx, schedule, mesh)
  checked_train_step = make_train_step(model, loss_fn, tx, schedule, mesh, checked=True)
  checked_eval_step = make_checked_eval_step(
    model, build_loss(config, deep_supervision=False), mesh
  )
  hint = _input_hint(config, ds)

  def raise_failed_check(err, step: int, where: str) -> None:
    error = input_error(err, where, hint)
    if isinstance(error, FloatingPointError):
      raise diverged(config, ckpt, step, f"the model's outputs are not finite ({error})")
    if error is not None:
      raise error

  def eval_step(state, batch):
    err, preds = checked_eval_step(state, batch["image"], batch["label"], batch["valid"])
    raise_failed_check(err, int(state.step), f"on a {eval_split} batch")
    return preds

  def run_eval(state, split, num_examples=0):
    return evaluate(
      eval_step,
      state,
      ds,
      split,
      batch_size=eval_batch_size,
      sharding=batch_sharding,
      num_examples=num_examples,
    )

  from tqdm.auto import tqdm

  pbar = tqdm(
    total=t.steps,
    initial=start,
    desc=f"{config.loss.name}",
    unit="step",
    disable=not (is_main and t.progress_bar),
    mininterval=1.0,
    dynamic_ncols=True,
  )
  final: dict | None = None
  window: list[float] = []
  last_grad_norm = last_lr = float("nan")
  train_time = 0.0
  batches = None
  try:
    batches = seg_data.train_batches(
      ds, batch_size=t.batch_size, seed=t.seed, start_step=start, sharding=batch_sharding
    )

    def consume(step: int, out) -> None:
      nonlocal last_grad_norm, last_lr
      out = jax.device_get(out)
      if not bool(out["finite"]):
        raise diverged(
          config,
          ckpt,
          step,
          f"non-finite loss, gradient or updated parameters (loss={float(out['loss'])}, "
          f"gradient norm={float(out['grad_norm'])})",
        )
      window.append(float(out["loss"]))
      last_grad_norm, last_lr = float(out["grad_norm"]), float(out["learning_rate"])
      pbar.update(1)
      pbar.set_postfix(loss=f"{window[-1]:.4f}", refresh=False)

    pending = None
    tick = time.perf_counter()
    for step in range(start, t.steps):
      batch = next(batches)
      if step == start:
        tic = time.perf_counter()
      if step < start + t.check_inputs_steps:
        err, (state, out) = checked_train_step(state, batch)
        raise_failed_check(err, step + 1, f"at training step {step + 1}")
      else:
        state, out = train_step(state, batch)
      if step == start:
        jax.block_until_ready(out)
        _echo(f"First step (with compilation): {time.perf_counter() - tic:.1f} s.", pbar=pbar)
        tick = time.perf_counter()
      if pending is not None:
        consume(*pending)
      pending = (step + 1, out)
      s = step + 1
      done = s == t.steps
      do_eval = done or (t.eval_every > 0 and s % t.eval_every == 0)
      do_ckpt = do_eval or (t.checkpoint_every > 0 and s % t.checkpoint_every == 0)
      preempted = preemption.reached(s)
      do_log = done or s % t.log_every == 0 or preempted  # Nothing logged is lost on SIGTERM.
      if not (do_eval or do_ckpt or do_log or preempted):
        continue
      consume(*pending)
      pending = None
      if do_log and window:
        train_time += time.perf_counter() - tick
        writer.write(
          s,
          "train",
          {
            "loss": float(np.mean(window)),
            "grad_norm": last_grad_norm,
            "learning_rate": last_lr,
            "steps_per_sec": len(window) / max(train_time, 1e-9),
            "images_per_sec": len(window) * t.batch_size / max(train_time, 1e-9),
          },
        )
        window.clear()
        train_time = 0.0
        tick = time.perf_counter()
      val = None
      if do_eval:
        train_time += time.perf_counter() - tick
        val, examples = run_eval(state, eval_split, num_examples=t.num_plot_examples if done else 0)
        writer.write(s, eval_split, val)
        _echo(_summary(eval_split, s, val), pbar=pbar)
        if done:
          final = dict(val, step=s)
          if examples is not None and is_main:
            save_predictions_png(
              os.path.join(workdir, PREDICTIONS_FILE),
              examples["image"],
              examples["label"],
              examples["pred"],
              class_names=ds.class_names,
              title=f"{config.loss.name}, step {s}: {eval_split} dice_mean "
              f"{val.get('dice_mean', float('nan')):.3f}",
            )
        tick = time.perf_counter()
      if do_ckpt or preempted:
        ckpt.save(s, state, metrics=val if val and "dice_mean" in val else None)
      if preempted and not done:
        ckpt.wait()
        _echo(
          f"SIGTERM: saved a checkpoint at step {s} in {ckpt.directory}; rerun the same "
          "command to resume.",
          pbar=pbar,
        )
        return {"preempted": True, "step": s}
    batches.close()
    batches = None

    if final is None:  # Nothing left to train: the run had already finished.
      # Evaluated again (every process takes part), recorded only if the record is missing.
      val, _ = run_eval(state, eval_split)
      final = dict(val, step=t.steps)
      records = read_metrics(workdir) if is_main else []
      if not any(r["step"] == t.steps and r["split"] == eval_split for r in records):
        writer.write(t.steps, eval_split, val)
      _echo(f"Training had already reached step {t.steps} in {workdir}.", pbar=pbar)
      # A run stopped during its final test evaluation gets it now.
      has_test = any(r["step"] == t.steps and r["split"] == "test" for r in records)
      if jax.process_count() > 1:  # Only process 0 reads the records; all must agree.
        has_test = bool(multihost_utils.broadcast_one_to_all(np.int32(has_test)))
    else:
      has_test = False
    if t.test_at_end and "test" in ds.splits and eval_split != "test" and not has_test:
      test, _ = run_eval(state, "test")
      writer.write(t.steps, "test", test)
      _echo(_summary("test", t.steps, test), pbar=pbar)
    return final
  finally:
    if batches is not None:
      batches.close()  # Stops the reading threads.
    pbar.close()
    writer.close()
    ckpt.close()
