r"""The jitted steps: the training step, the evaluation step, and their checked forms.

**Data parallelism.** A step is written per device, as with ``pmap``, and run with
``jax.shard_map`` inside ``jax.jit`` over the ``'data'`` mesh: the state is replicated (``P()``),
the batch is split along its first axis (``P('data')``). The loss is called with
``axis_name='data'``, so its batch-level sums are ``psum``-ed and every device computes the loss
of the *global* batch :math:`L(\theta)`.

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

**Training step.** ``AdamW`` (or ``Adam``, or SGD with momentum) with a linear warm-up and cosine
decay (optax), after clipping the gradient's global norm. A step whose loss, gradient, or updated
parameters, optimizer state or batch statistics are not finite leaves the state unchanged and
says so in its ``finite`` output.

**Seeds as one program** (``seeds=True``): the per-device step is ``jax.vmap``-ed over a
leading seed axis of the state and of the batch (:func:`seed_step`), inside the same
``jit(shard_map)``: the seeds of one loss train as one program (:mod:`seg_jax.training.seeds`).

**Checked steps** use :func:`seg_jax.losses.checked` and are built with
:func:`seg_jax.losses.checkified`: they return a ``checkify`` error next to their outputs, which
:func:`input_error` turns into the exception to raise on the host.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.experimental import checkify
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import losses, metrics
from seg_jax.models import UNet
from seg_jax.training import config as train_config
from seg_jax.training.devices import AXIS
from seg_jax.training.state import TrainState, apply_model


def build_loss(config: ml_collections.ConfigDict, *, deep_supervision: bool = True):
  """``fn(outputs, labels, **targets)``: the configured loss (with deep supervision if the model
  has it and ``deep_supervision``), reduced over the global batch (``axis_name='data'``, to be
  called inside the mesh).

  ``fn.targets`` is the loss's ``{option: kind}`` per-example targets
  (:func:`seg_jax.losses.targets`): the training batches carry them (computed by the data
  pipeline) and :func:`make_train_step` passes ``batch[option]``. Under deep supervision a
  precomputed target is given at each output's resolution: a ``tubed_skeleton`` class map is
  sampled like the labels (strided, nearest), a distance map is given to the finest output only
  (the coarser ones compute theirs from their labels, whose distances are in their own pixels).
  """
  fn = losses.get(config.loss.name, **train_config.loss_options(config))
  targets = losses.targets(config.loss.name)
  if config.model.deep_supervision and deep_supervision:
    weights = tuple(config.model.deep_supervision_weights) or None
    fn = _scaled_targets(losses.deep_supervision(fn, weights), targets)
  fn = functools.partial(fn, axis_name=AXIS)
  fn.targets = targets
  return fn


def _scaled_targets(ds_fn, targets: dict[str, str]):
  """``ds_fn`` (a deep-supervision loss) taking full-resolution targets as keyword options."""
  if not targets:
    return ds_fn

  def fn(outputs, labels, **kwargs):
    per_output = {}
    full = labels.shape[1:]
    for option, kind in targets.items():
      if kwargs.get(option) is None:
        continue
      value = kwargs.pop(option)
      if kind != "tubed_skeleton":
        per_output[option] = [value] + [None] * (len(outputs) - 1)
        continue
      scaled = []
      for out in outputs:
        steps = tuple(n // m for n, m in zip(full, out.shape[1:-1], strict=True))
        scaled.append(value[(slice(None), *(slice(None, None, f) for f in steps))])
      per_output[option] = scaled
    return ds_fn(outputs, labels, per_output=per_output, **kwargs)

  return fn


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(
  model: UNet, loss_fn, tx, schedule, mesh: Mesh, *, checked: bool = False, seeds: bool = False
):
  """The jitted data-parallel step ``(state, batch) -> (state, metrics)``.

  ``state`` is donated. ``batch``: ``image``, ``label`` and the per-example targets of
  ``loss_fn.targets`` (:func:`build_loss`; passed to the loss as keyword options when present).
  ``metrics``: ``loss`` (global batch), ``grad_norm`` (before clipping),
  ``learning_rate`` (of this step), ``finite`` (False: the loss, the gradient, or the updated
  parameters, optimizer state or batch statistics were not finite, and the update was skipped).

  With ``checked``, the loss is :func:`seg_jax.losses.checked` and the step is checkified: it
  returns ``(err, (state, metrics))``, ``err`` a ``checkify.Error`` for :func:`input_error`.

  With ``seeds``, the step trains several seeds as one program (:func:`seed_step`): ``state``
  has a leading seed axis (:func:`seg_jax.training.state.init_seed_states`), ``batch`` is a
  tuple of one batch per seed, and every metric has the seed axis.
  """
  # The per-example targets the loss declares (build_loss) that the batch carries.
  target_names = tuple(getattr(loss_fn, "targets", {}))
  if checked:
    loss_fn = losses.checked(loss_fn)

  def per_device(state: TrainState, batch):
    extra = {k: batch[k] for k in target_names if k in batch}

    def compute_loss(params):
      out, batch_stats = apply_model(model, state, params, batch["image"], train=True)
      return loss_fn(out, batch["label"], **extra), batch_stats

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

  body = seed_step(per_device) if seeds else per_device
  mapped = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(losses.checkified(mapped) if checked else mapped, donate_argnums=0)


def seed_step(per_device):
  """``per_device(state, batch)`` (one seed) as a step of several seeds: ``(states, batches)``,
  ``states`` stacked on a leading seed axis and ``batches`` a tuple of one batch per seed (each
  this device's shard), stacked here and ``jax.vmap``-ed over with the states. Every seed's
  collectives (the loss's ``psum`` over ``'data'``, batch norm) stay its own."""

  def step(states, batches):
    batch = jax.tree.map(lambda *x: jnp.stack(x), *batches)
    return jax.vmap(per_device)(states, batch)

  return step


def _main_output(out):
  """The main output of the model (the first one with deep supervision)."""
  return out[0] if isinstance(out, tuple | list) else out


def make_eval_step(model: UNet, mesh: Mesh, *, probabilities: bool = False):
  """The jitted step ``(state, images) -> predicted class maps`` (sharded like the batch).

  With ``probabilities=True`` it returns ``(class maps, probabilities)``, the probabilities
  float32 ``(batch, *spatial, channels)``: the sigmoid of a one-channel output, else the
  softmax over the channels.
  """

  def per_device(state: TrainState, images):
    out, _ = apply_model(model, state, state.params, images, train=False)
    out = _main_output(out)
    labels = metrics.predict_labels(out)
    if not probabilities:
      return labels
    out = out.astype(jnp.float32)
    probs = jax.nn.sigmoid(out) if out.shape[-1] == 1 else jax.nn.softmax(out, axis=-1)
    return labels, probs

  out_specs = (P(AXIS), P(AXIS)) if probabilities else P(AXIS)
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=out_specs)
  return jax.jit(mapped)


def make_checked_eval_step(model: UNet, loss_fn, mesh: Mesh, *, seeds: bool = False):
  """The jitted checkified step ``(state, images, labels, valid) -> (err, predicted class maps)``.

  Like :func:`make_eval_step`, and the main output and the labels of the rows marked ``valid``
  go through :func:`seg_jax.losses.checked` ``(loss_fn)`` (labels in range, finite outputs);
  ``err`` is for :func:`input_error`. ``loss_fn`` is the loss without deep supervision.

  With ``seeds``, ``state`` has a leading seed axis and the step returns ``(err, (class maps,
  finite))`` with a leading seed axis, ``finite`` ``(seeds, batch)`` telling which rows' outputs
  were finite: ``err`` does not say which seed's outputs failed, ``finite`` does.
  """
  checked_loss = losses.checked(loss_fn)

  def per_device(state: TrainState, images, labels, valid):
    out, _ = apply_model(model, state, state.params, images, train=False)
    out = _main_output(out)
    mask = jnp.broadcast_to(valid.reshape(-1, *(1,) * (labels.ndim - 1)), labels.shape)
    checked_loss(out, labels, mask=mask.astype(jnp.float32))
    if seeds:
      return metrics.predict_labels(out), jnp.all(jnp.isfinite(out), axis=tuple(range(1, out.ndim)))
    return metrics.predict_labels(out)

  spec = P(AXIS)
  body, out_specs = per_device, spec
  if seeds:
    body = jax.vmap(per_device, in_axes=(0, None, None, None))
    out_specs = (P(None, AXIS), P(None, AXIS))
  mapped = jax.shard_map(body, mesh=mesh, in_specs=(P(), spec, spec, spec), out_specs=out_specs)
  return jax.jit(losses.checkified(mapped))


def input_error(err, where: str, hint: str = "") -> Exception | None:
  """The exception for a failed check of a checked step (``None`` if all passed).

  ``ValueError`` naming ``where``, then the check's message (value and valid range) and
  ``hint``. A failed check of the *logits* is the model diverging, not bad data: it gives
  ``FloatingPointError`` with the check's message, recognised by the message format of
  :mod:`seg_jax.losses`' value checks (``'<loss>: logits hold ...'``).
  """
  # On the host first: throw() on device arrays reduces the per-device errors with a collective
  # program, which XLA CPU aborted (all-gather rendezvous timeout) on a loaded 2-core machine.
  # Several processes: the arrays span other processes' devices, so they stay global.
  if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(err)):
    err = jax.device_get(err)
  try:
    err.throw()  # Its message names the first failure (err.get() lists every device's).
  except checkify.JaxRuntimeError as e:
    message = str(e)
  else:
    return None
  if ": logits hold " in message:
    return FloatingPointError(message)
  return ValueError(f"Input check failed {where}: {message}{hint}")
