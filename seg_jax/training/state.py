"""The training state and what it is made from: the model, the optimizer, the initialisation.

The model is a Flax NNX :class:`seg_jax.models.UNet`, used in NNX's functional form: it is split
(``nnx.split``) into a static graph definition and its variables, and the variables live in the
:class:`TrainState` as plain nested dicts (``nnx.to_pure_dict``) keyed like the module's
attributes (``params['down0']['conv0']['kernel']``). Inside a jitted step :func:`apply_model`
merges them back (``nnx.merge``) into a module and calls it. The state is thus an ordinary pytree:
``jax.jit`` donates it, ``jax.shard_map`` replicates it, optax updates it and orbax checkpoints it
as it would any dict of arrays.

:class:`TrainState` holds everything a step changes (parameters, batch statistics, optimizer
state, step count), replicated over the ``'data'`` mesh. :func:`init_state` creates a fresh one;
:func:`abstract_state` gives its structure (the restore target of a checkpoint) without running
anything.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax.models import UNet
from seg_jax.training import config as train_config
from seg_jax.training.devices import AXIS

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a step changes (all replicated over the mesh).

  Attributes:
    step: number of optimisation steps taken (int32 scalar).
    params: model parameters (``nnx.Param`` variables, as a nested dict of arrays).
    batch_stats: batch-norm running statistics (``nnx.BatchStat`` variables, as a nested dict;
      empty unless ``model.norm == 'batch'``).
    opt_state: optax optimizer state.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree


def build_model(config: ml_collections.ConfigDict, num_classes: int, input_shape) -> UNet:
  r"""The U-Net of ``config.model`` for inputs ``(*spatial, channels) = input_shape`` and data
  with ``num_classes`` classes, as an *abstract* module (``nnx.eval_shape``: its variables are
  ``jax.ShapeDtypeStruct``\ s, nothing is initialised). It gives the structure
  (:func:`init_state` and :func:`abstract_state` make the variables) and the static graph
  definition the steps merge the state into."""
  m = config.model
  norm = None if m.norm == "none" else m.norm
  kwargs = dict(
    spatial_dims=len(input_shape) - 1,
    features=m.features,
    depth=m.depth,
    norm=norm,
    num_groups=m.num_groups,
    axis_name=AXIS if norm == "batch" else None,
    dtype=jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32,
    deep_supervision=m.deep_supervision,
  )
  num_outputs = train_config.output_channels(config, num_classes)
  return nnx.eval_shape(lambda: UNet(input_shape[-1], num_outputs, **kwargs, rngs=nnx.Rngs(0)))


def split_model(model: UNet):
  """``(graphdef, params, batch_stats)`` of ``model``, the variables as nested dicts."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


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


def _init(model: UNet, tx, seed) -> TrainState:
  """A fresh state, the model initialised from ``nnx.Rngs(seed)`` (an int or a PRNG key)."""
  _, params, batch_stats = split_model(UNet(**model.config, rngs=nnx.Rngs(seed)))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
  )


def _init_fn(model: UNet, tx, seed: int):
  return lambda: _init(model, tx, seed)


# Compiling the initialisation without LLVM optimisations is several times faster on CPU (the
# random initialisers' threefry code is otherwise slow to compile) and costs nothing at run; it
# also gives the same bits whether or not the initialisation is vmapped (init_seed_states).
_INIT_OPTIONS = {"xla_backend_optimization_level": 0}


def init_state(model: UNet, tx, mesh: Mesh, seed: int) -> TrainState:
  """A fresh state for ``model`` (of :func:`build_model`, initialised from ``nnx.Rngs(seed)``),
  replicated over ``mesh`` (the initialisation runs once, jitted)."""
  return jax.jit(
    _init_fn(model, tx, seed),
    out_shardings=NamedSharding(mesh, P()),
    compiler_options=_INIT_OPTIONS,
  )()


def init_seed_states(model: UNet, tx, mesh: Mesh, seeds) -> TrainState:
  """The states of :func:`init_state` for every seed of ``seeds``, stacked on a leading seed
  axis (every leaf ``(len(seeds), *shape)``), initialised by one ``jax.vmap``-ed program.
  Slice ``s`` holds the same values as ``init_state(model, tx, mesh, seeds[s])``."""
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
  init = jax.vmap(lambda key: _init(model, tx, key))
  return jax.jit(init, out_shardings=NamedSharding(mesh, P()), compiler_options=_INIT_OPTIONS)(keys)


def abstract_state(model: UNet, tx, mesh: Mesh) -> TrainState:
  r"""The state's structure as ``jax.ShapeDtypeStruct``\ s replicated over ``mesh``: the
  restore target of a checkpoint, obtained without running (or compiling) the initialisation."""
  shapes = jax.eval_shape(_init_fn(model, tx, 0))
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


def apply_model(model: UNet, state: TrainState, params, images, *, train: bool):
  """Model outputs and the new batch statistics, inside a traced function: ``params`` and
  ``state.batch_stats`` merged (``nnx.merge``) into ``model``'s graph definition and called.
  With ``train``, batch norm uses and updates the batch statistics (averaged over the model's
  ``axis_name``)."""
  net = nnx.merge(nnx.graphdef(model), params, state.batch_stats)
  out = net(images, train=train)
  if train and jax.tree.leaves(state.batch_stats):
    return out, nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))
  return out, state.batch_stats
