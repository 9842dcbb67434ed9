r"""The training configuration: every field, its default and its type, and the checks on it.

A training run is described by one ``ml_collections.ConfigDict`` with four sections:

* ``loss``: ``name`` (a :func:`seg_jax.losses.names` entry) and ``options`` (keyword options of
  that loss, e.g. ``gamma`` for ``focal``; the trainer supplies ``axis_name`` itself).
* ``model``: the :class:`seg_jax.models.UNet` settings (the output channels follow from the data
  and the loss mode, see :func:`output_channels`).
* ``data``: :func:`seg_jax.data.default_config` (data set name, image size, augmentation, ...).
* ``train``: optimisation, evaluation, checkpointing and logging (fields below).

``configs/default.py`` returns :func:`default_config`; the per-loss files in ``configs/`` change
the loss and nothing else. :func:`validate` is called by
:func:`seg_jax.training.loop.train_and_evaluate` before anything is built, so a misspelt field, a
value of the wrong type or an unknown loss or data set name fails at once with a message that
names the field.

``train`` fields:
  steps: optimisation steps in total.
  batch_size: global batch (all devices of all processes); a multiple of the device count.
  eval_batch_size: global batch of the evaluation passes (0: ``batch_size``).
  learning_rate: peak learning rate of the schedule.
  warmup_steps: linear warm-up from 0 to ``learning_rate``.
  schedule: ``'cosine'`` (warm-up then cosine decay to ``learning_rate * final_lr_fraction``
    at ``steps``) or ``'constant'`` (warm-up then constant).
  final_lr_fraction: end of the cosine decay as a fraction of ``learning_rate``.
  optimizer: ``'adamw'``, ``'adam'`` or ``'sgd'`` (with ``momentum``).
  b1, b2, eps: Adam moments' decay rates and epsilon.
  momentum: SGD momentum (0: plain SGD).
  weight_decay: decoupled weight decay of AdamW, or L2 decay added to SGD's gradient (applied
    to every parameter; ignored by ``'adam'``).
  grad_clip_norm: clip the gradient to this global L2 norm (0: no clipping).
  seed: parameter initialisation and data order/augmentation seed.
  log_every: steps between train-loss records in ``metrics.jsonl`` / TensorBoard.
  eval_every: steps between validation passes (0: only at the end); a pass also runs at the end.
  eval_split: split evaluated during training (``'validation'``).
  test_at_end: also evaluate the ``'test'`` split (when the data has one) after the last step.
  checkpoint_every: steps between checkpoints (0: only at the end and at evaluations).
  keep_checkpoints: most recent checkpoints kept; the best by validation ``dice_mean`` is kept
    too.
  async_checkpoints: write checkpoints in the background (orbax async saves).
  num_plot_examples: validation examples drawn in ``predictions.png`` at the end (0: no PNG).
  progress_bar: show a tqdm progress bar (process 0).
  check_inputs_steps: the first steps of a run (also of a resumed one) use the checked loss
    (:func:`seg_jax.losses.checked`): labels outside the classes (other than the loss's
    ``ignore_index``), non-finite model outputs and bad mask weights stop training with an error
    naming the value and the valid range, before any checkpoint of the run is written. Later
    steps use the unchecked step (0: never checked). Every evaluation batch is checked too.
  precompute_targets: the per-example targets the loss declares (``seg_jax.losses.targets``:
    the tubed skeleton of ``skeleton_recall``, the distance maps of ``boundary`` /
    ``hausdorff_dt`` and their compounds) are computed on the host by the data pipeline, once per
    (augmented) example, and passed to the loss; ``False``: the loss computes them inside the
    step. Distance maps are not precomputed when ``loss.options.sampling`` is set.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import ml_collections
from ml_collections import config_dict

from seg_jax import data as seg_data
from seg_jax import losses

NORMS = ("group", "instance", "batch", "none")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
# Fields that may differ when a run is resumed: they change how a run is watched (logging,
# evaluation, checkpointing, progress, loading threads), not the parameters it computes.
RESUME_SAFE_FIELDS = (
  "train.progress_bar",
  "train.log_every",
  "train.eval_every",
  "train.eval_batch_size",
  "train.test_at_end",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.async_checkpoints",
  "train.num_plot_examples",
  "train.check_inputs_steps",
  "data.data_dir",
  "data.num_threads",
  "data.prefetch",
  "data.num_workers",
)
# Options the trainer sets itself; a config must not.
RESERVED_LOSS_OPTIONS = ("axis_name", "mask", "reduction")


def default_config() -> ml_collections.ConfigDict:
  """The default experiment: a small U-Net on ``synthetic_shapes/balanced`` with ``dice_ce``.

  Sized so that it trains to a validation ``dice_mean`` above 0.8 in a few minutes on a 2-core
  CPU (see the README); scale ``model.features``, ``data.image_size`` and ``train.steps`` up
  for real data on accelerators.
  """
  c = ml_collections.ConfigDict()

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "dice_ce"
  c.loss.options = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.features = 16
  c.model.depth = 4
  c.model.norm = "group"
  c.model.num_groups = 8
  c.model.dtype = "float32"
  c.model.deep_supervision = False
  # Per-output weights of the deep-supervision loss, finest first; () uses nnU-Net v2's defaults
  # (2^-i halving from the finest, the coarsest 0, normalised to sum 1).
  c.model.deep_supervision_weights = ()

  c.data = seg_data.default_config()

  t = c.train = ml_collections.ConfigDict()
  t.steps = 400
  t.batch_size = 16
  t.eval_batch_size = 0
  t.learning_rate = 3e-3
  t.warmup_steps = 50
  t.schedule = "cosine"
  t.final_lr_fraction = 0.01
  t.optimizer = "adamw"
  t.b1 = 0.9
  t.b2 = 0.999
  t.eps = 1e-8
  t.momentum = 0.9
  t.weight_decay = 1e-4
  t.grad_clip_norm = 1.0
  t.seed = 0
  t.log_every = 20
  t.eval_every = 100
  t.eval_split = "validation"
  t.test_at_end = True
  t.checkpoint_every = 100
  t.keep_checkpoints = 2
  t.async_checkpoints = True
  t.num_plot_examples = 6
  t.progress_bar = True
  t.check_inputs_steps = 10
  t.precompute_targets = True
  return c


def _type_name(value) -> str:
  return type(value).__name__


def _suggest(key: str, valid) -> str:
  close = difflib.get_close_matches(str(key), list(valid), n=1)
  return f" Did you mean {close[0]!r}?" if close else ""


def _check_value(path: str, value, reference) -> None:
  """Raises TypeError if ``value`` does not have the type of the default ``reference``."""
  if isinstance(reference, config_dict.FieldReference):
    reference = reference.get()
  if isinstance(value, config_dict.FieldReference):
    value = value.get()
  if reference is None:
    return
  if isinstance(reference, bool):
    ok = isinstance(value, bool)
  elif isinstance(reference, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(reference, float):
    ok = isinstance(value, int | float) and not isinstance(value, bool)
  elif isinstance(reference, str):
    ok = isinstance(value, str)
  elif isinstance(reference, tuple | list):
    ok = isinstance(value, tuple | list)
  else:
    ok = isinstance(value, type(reference))
  if not ok:
    raise TypeError(
      f"config.{path} must be {_type_name(reference)} (like its default {reference!r}), got "
      f"{value!r} ({_type_name(value)})."
    )


def _check_fields(path: str, config, reference) -> None:
  """Checks that ``config`` has exactly the fields of ``reference``, of the same types."""
  if not isinstance(config, Mapping | ml_collections.ConfigDict):
    raise TypeError(f"config.{path} must be a ConfigDict section, got {_type_name(config)}.")
  valid = set(reference.keys())
  for key in config.keys():
    if key not in valid:
      raise ValueError(
        f"config.{path}.{key}: unknown field.{_suggest(key, valid)} Valid fields of "
        f"config.{path}: {', '.join(sorted(valid))}."
      )
  for key in sorted(valid):
    if key not in config:
      raise ValueError(f"config.{path}.{key} is missing (see seg_jax.training.config).")
    ref, value = reference[key], config[key]
    if isinstance(ref, ml_collections.ConfigDict):
      _check_fields(f"{path}.{key}", value, ref)
    else:
      _check_value(f"{path}.{key}", value, ref)


def _check_choice(path: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"config.{path}={value!r} is not one of {tuple(choices)}.")


def _check_positive(path: str, value, *, allow_zero: bool = False) -> None:
  if value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f"config.{path} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")


def loss_options(config: ml_collections.ConfigDict) -> dict:
  """``config.loss.options`` as a plain dict (nested ConfigDicts and lists become tuples/dicts)."""
  options = config.loss.options
  options = options.to_dict() if isinstance(options, ml_collections.ConfigDict) else dict(options)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def output_channels(config: ml_collections.ConfigDict, num_classes: int) -> int:
  """Model output channels: 1 for binary data (sigmoid) unless ``loss.options.mode`` is
  ``'multiclass'`` (softmax over 2 channels); ``num_classes`` otherwise."""
  mode = loss_options(config).get("mode")
  if num_classes == 2 and mode != "multiclass":
    return 1
  return num_classes


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a training config; raises with a message naming the field at fault.

  Checks: the sections and their fields are exactly those of :func:`default_config` (a
  misspelt or unknown field is an error, with the closest valid name), every value has its
  default's type, the loss and data set names are registered, the loss options are options of
  that loss (and not ones the trainer sets), and numeric ranges.

  Raises:
    ValueError: unknown or missing field, unknown loss/data set name, value out of range.
    TypeError: a value of the wrong type, or a loss option the loss does not have.
  """
  reference = _check_sections(config)
  _check_loss(config)
  _check_fields("model", config.model, reference.model)
  _check_fields("train", config.train, reference.train)
  _check_fields("data", config.data, reference.data)
  _check_model(config.model)
  _check_train(config.train)
  _check_data(config.data, config.model)


def _check_sections(config) -> ml_collections.ConfigDict:
  """The config is a ConfigDict with exactly the sections of the default; returns the default."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"config must be an ml_collections.ConfigDict, got {_type_name(config)}.")
  reference = default_config()
  sections = set(reference.keys())
  for key in config.keys():
    if key not in sections:
      raise ValueError(
        f"config.{key}: unknown section.{_suggest(key, sections)} Valid sections: "
        f"{', '.join(sorted(sections))}."
      )
  for key in sorted(sections):
    if key not in config:
      raise ValueError(f"config.{key} is missing (see seg_jax.training.config.default_config()).")
  return reference


def _check_loss(config) -> None:
  """The loss name is registered; the options are options of it, none set by the trainer."""
  # The options' names depend on the loss, so they are checked by it.
  loss = config.loss
  if not isinstance(loss, ml_collections.ConfigDict) or set(loss.keys()) != {"name", "options"}:
    keys = sorted(loss.keys()) if isinstance(loss, ml_collections.ConfigDict) else loss
    raise ValueError(f"config.loss must have exactly the fields 'name' and 'options', got {keys}.")
  if not isinstance(loss.name, str):
    raise TypeError(f"config.loss.name must be str, got {loss.name!r} ({_type_name(loss.name)}).")
  try:
    losses.lookup(loss.name)
  except KeyError as err:
    raise ValueError(f"config.loss.name: {err.args[0]}") from None
  if not isinstance(loss.options, ml_collections.ConfigDict | Mapping):
    raise TypeError(f"config.loss.options must be a ConfigDict, got {_type_name(loss.options)}.")
  opts = loss_options(config)
  reserved = sorted(set(opts) & set(RESERVED_LOSS_OPTIONS))
  if reserved:
    raise ValueError(
      f"config.loss.options: {reserved} are set by the trainer (axis_name='data', no mask, "
      "reduction='mean'); remove them from the config."
    )
  try:
    losses.get(loss.name, **opts)
  except TypeError as err:
    raise TypeError(f"config.loss.options: {err}") from None


def _check_model(m) -> None:
  _check_positive("model.features", m.features)
  _check_positive("model.depth", m.depth)
  _check_positive("model.num_groups", m.num_groups)
  _check_choice("model.norm", m.norm, NORMS)
  _check_choice("model.dtype", m.dtype, DTYPES)
  if m.deep_supervision_weights and not m.deep_supervision:
    raise ValueError(
      "config.model.deep_supervision_weights is set but config.model.deep_supervision is False."
    )
  n_heads = m.depth - 1
  if m.deep_supervision_weights and len(m.deep_supervision_weights) != n_heads:
    raise ValueError(
      f"config.model.deep_supervision_weights has {len(m.deep_supervision_weights)} value(s), "
      f"but a U-Net of depth {m.depth} has {n_heads} outputs with deep supervision (one per "
      "decoder level, finest first)."
    )


def _check_train(t) -> None:
  for name in ("steps", "batch_size", "learning_rate", "log_every", "keep_checkpoints"):
    _check_positive(f"train.{name}", t[name])
  for name in (
    "eval_batch_size",
    "warmup_steps",
    "final_lr_fraction",
    "weight_decay",
    "grad_clip_norm",
    "eval_every",
    "checkpoint_every",
    "num_plot_examples",
    "check_inputs_steps",
    "seed",
    "eps",
  ):
    _check_positive(f"train.{name}", t[name], allow_zero=True)
  if t.warmup_steps >= t.steps:
    raise ValueError(
      f"config.train.warmup_steps={t.warmup_steps} must be smaller than "
      f"config.train.steps={t.steps}."
    )
  for name in ("b1", "b2", "momentum"):
    if not 0.0 <= t[name] < 1.0:
      raise ValueError(f"config.train.{name} must be in [0, 1), got {t[name]}.")
  _check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
  _check_choice("train.schedule", t.schedule, SCHEDULES)

  if not 0 <= t.seed < 2**31:
    raise ValueError(f"config.train.seed must be in [0, 2**31), got {t.seed}.")


def _check_data(d, m) -> None:
  if d.name not in seg_data.names():
    raise ValueError(
      f"config.data.name: unknown data set {d.name!r}.{_suggest(d.name, seg_data.names())} "
      f"Valid names: {', '.join(seg_data.names())}."
    )
  factor = 2 ** (m.depth - 1)
  if isinstance(d.image_size, int) and d.image_size % factor:
    raise ValueError(
      f"config.data.image_size={d.image_size} must be divisible by 2**(model.depth - 1) = "
      f"{factor} (the U-Net halves the image {m.depth - 1} times); e.g. "
      f"{max(factor, d.image_size // factor * factor)}."
    )


def check_loss_options(config: ml_collections.ConfigDict, num_classes: int) -> None:
  """Traces the configured loss on small abstract inputs, so that a bad option *value* (a
  negative ``gamma``, a ``class_weights`` of the wrong length, ...) is reported now, naming
  ``config.loss.options``, rather than after the data is built and the model compiled.

  Args:
    config: a validated training config.
    num_classes: the data set's number of classes.

  Raises:
    ValueError / TypeError: the loss's own message, prefixed by ``config.loss.options``.
  """
  import jax

  channels = output_channels(config, num_classes)
  logits = jax.ShapeDtypeStruct((2, 8, 8, channels), jax.numpy.float32)
  labels = jax.ShapeDtypeStruct((2, 8, 8), jax.numpy.int32)
  fn = losses.get(config.loss.name, **loss_options(config))
  try:
    jax.eval_shape(fn, logits, labels)
  except (TypeError, ValueError) as err:
    raise type(err)(
      f"config.loss.options {loss_options(config)} for loss {config.loss.name!r} with "
      f"{num_classes} classes: {err}"
    ) from None
