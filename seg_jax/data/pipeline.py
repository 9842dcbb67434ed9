r"""Data config, loading by name, and the train/eval batch pipelines (grain over tfds sources).

``load(config.data)`` returns a :class:`~seg_jax.data.dataset.SegDataset`;
``train_batches`` and ``eval_batches`` turn it into batches of global ``jax.Array``\ s.

**Order.** Training reads an infinite stream of examples: position :math:`p = t B + r` (step
:math:`t`, row :math:`r` of the global batch of size :math:`B`) holds example
:math:`\pi_e(p \bmod N)` of the :math:`N`-example split, where :math:`e = \lfloor p / N \rfloor` is
the epoch and :math:`\pi_e` a permutation drawn from ``(seed, e)`` (grain's ``shuffle`` +
``repeat``); its augmentation is drawn from ``(seed, p)`` (grain's ``random_map``). Batch
:math:`t` is therefore a pure function of ``(seed, t)``: ``train_batches(start_step=k)`` yields
exactly what an uninterrupted iterator yields from step ``k``, and the global batch is the same
whatever the number of processes or devices.

**Processes.** Each process reads only the rows of the global batch that its devices hold under
``sharding`` (``sharding.addressable_devices_indices_map``), and the global arrays are assembled
with ``jax.make_array_from_process_local_data``. This is a per-process split of every batch
rather than of the data set (``tfds.split_for_jax_process``), so the order does not depend on the
process count.

**Threads.** Batches are prepared by ``num_threads`` grain threads, ``prefetch`` batches ahead;
``num_workers > 0`` adds grain worker processes (``mp_prefetch``), off by default.

Example::

  import jax, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from seg_jax import data

  cfg = data.default_config()
  ds = data.load(cfg)                      # builds synthetic_shapes/balanced on first use
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  batch = next(data.train_batches(ds, batch_size=16, seed=0, sharding=sharding))
  batch['image'].shape, batch['label'].dtype   # ((16, 64, 64, 3), int32)
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import grain
import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from seg_jax.data import catalogue, image_folder, synthetic_shapes
from seg_jax.data import targets as loss_targets
from seg_jax.data.dataset import Augment, SegDataset

_BUILTIN = ("synthetic_shapes", "image_folder")


def names() -> tuple[str, ...]:
  """Valid ``config.data.name`` values."""
  return _BUILTIN + catalogue.names()


def default_config() -> ml_collections.ConfigDict:
  """The data section of the training config (``config.data``).

  Fields:
    name: ``'synthetic_shapes'``, ``'image_folder'`` or a catalogue name (``'oxford_iiit_pet'``).
    config: ``synthetic_shapes`` kind: ``'balanced'``, ``'imbalanced'``, ``'thin'``,
      ``'multiclass'`` (ignored by the other sources).
    data_dir: tfds data directory; ``''`` means tfds's default (``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    image_size: side of the square examples fed to the model (synthetic data is generated at
      this size; other sources are resized to it).
    synthetic: ``num_train``, ``num_validation``, ``num_test``, ``seed`` of the generated set.
    folder: ``image_folder`` options: ``path``, ``num_classes``, ``class_names``,
      ``mask_values``, ``ignore_index`` (-1: none), ``channels`` (0: as stored),
      ``validation_fraction``, ``split_seed`` (see :mod:`seg_jax.data.image_folder`).
    border: oxford_iiit_pet trimap border: ``'ignore'`` (label 255), ``'foreground'``,
      ``'background'``.
    augment: ``flip_horizontal``, ``flip_vertical``, ``rotate90``, ``scale_min``,
      ``scale_max`` (random zoom range, >= 1).
    num_threads: grain threads preparing batches.
    prefetch: batches prepared ahead.
    num_workers: grain worker processes (0: none).
  """
  c = ml_collections.ConfigDict()
  c.name = "synthetic_shapes"
  c.config = "balanced"
  c.data_dir = ""
  c.image_size = synthetic_shapes.DEFAULT_IMAGE_SIZE
  c.synthetic = ml_collections.ConfigDict(
    {
      "num_train": synthetic_shapes.DEFAULT_NUM_EXAMPLES["train"],
      "num_validation": synthetic_shapes.DEFAULT_NUM_EXAMPLES["validation"],
      "num_test": synthetic_shapes.DEFAULT_NUM_EXAMPLES["test"],
      "seed": 0,
    }
  )
  c.folder = ml_collections.ConfigDict(
    {
      "path": "",
      "num_classes": 2,
      "class_names": config_dict.placeholder(tuple),
      "mask_values": config_dict.placeholder(tuple),
      "ignore_index": -1,
      "channels": 0,
      "validation_fraction": 0.2,
      "split_seed": 0,
    }
  )
  c.border = "ignore"
  c.augment = ml_collections.ConfigDict(
    {
      "flip_horizontal": True,
      "flip_vertical": True,
      "rotate90": False,
      "scale_min": 1.0,
      "scale_max": 1.25,
    }
  )
  c.num_threads = 2
  c.prefetch = 2
  c.num_workers = 0
  return c


def _get(config, key, kind, where="config.data"):
  if key not in config:
    raise ValueError(f"{where}.{key} is missing (see seg_jax.data.default_config()).")
  value = config[key]
  ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    ok, value = True, float(value)
  if not ok:
    raise TypeError(
      f"{where}.{key} must be {kind.__name__}, got {value!r} ({type(value).__name__})."
    )
  return value


def load(config: ml_collections.ConfigDict) -> SegDataset:
  """Returns the data set that ``config`` (``config.data``) names, building it if needed.

  Raises:
    ValueError: unknown ``name`` or ``config`` (the message lists the valid ones), or a bad
      value; TypeError: a field of the wrong type.
  """
  name = _get(config, "name", str)
  if name not in names():
    raise ValueError(f"config.data.name: unknown data set {name!r}; valid names are {names()}.")
  data_dir = _get(config, "data_dir", str) or None
  image_size = _get(config, "image_size", int)
  if image_size < 8:
    raise ValueError(f"config.data.image_size must be >= 8, got {image_size}.")
  aug = config.augment
  augment = Augment(
    flip_horizontal=_get(aug, "flip_horizontal", bool, "config.data.augment"),
    flip_vertical=_get(aug, "flip_vertical", bool, "config.data.augment"),
    rotate90=_get(aug, "rotate90", bool, "config.data.augment"),
    scale_min=_get(aug, "scale_min", float, "config.data.augment"),
    scale_max=_get(aug, "scale_max", float, "config.data.augment"),
  )
  threads = {
    "num_threads": _get(config, "num_threads", int),
    "prefetch": _get(config, "prefetch", int),
    "num_workers": _get(config, "num_workers", int),
  }
  if threads["num_threads"] < 1 or threads["prefetch"] < 1 or threads["num_workers"] < 0:
    raise ValueError(
      f"config.data: need num_threads >= 1, prefetch >= 1, num_workers >= 0; got {threads}."
    )
  if name == "synthetic_shapes":
    kind = _get(config, "config", str)
    if kind not in synthetic_shapes.KINDS:
      raise ValueError(
        f"config.data.config: unknown synthetic_shapes config {kind!r}; valid configs are "
        f"{synthetic_shapes.KINDS}."
      )
    syn = config.synthetic
    return synthetic_shapes.load(
      kind,
      data_dir=data_dir,
      image_size=image_size,
      num_train=_get(syn, "num_train", int, "config.data.synthetic"),
      num_validation=_get(syn, "num_validation", int, "config.data.synthetic"),
      num_test=_get(syn, "num_test", int, "config.data.synthetic"),
      seed=_get(syn, "seed", int, "config.data.synthetic"),
      augment=augment,
      **threads,
    )
  if name == "image_folder":
    options = image_folder.options_from_config(config.folder)
    return image_folder.load(
      options, data_dir=data_dir, image_size=image_size, augment=augment, **threads
    )
  return catalogue.load(
    name,
    data_dir=data_dir,
    image_size=image_size,
    border=_get(config, "border", str),
    augment=augment,
    **threads,
  )


# ----------------------------------------------------------------------------------------------
# Batches.


def _decode(ds: SegDataset, split: str, index: int, record) -> dict[str, np.ndarray]:
  return ds.prepare(split, index, record, None)


def _decode_raw(ds: SegDataset, split: str, index: int, record):
  """Keeps the raw record with its split index; decoding happens with the augmentation."""
  return index, record


def _augment(ds: SegDataset, split: str, extra, item, rng: np.random.Generator):
  index, record = item
  return _add_targets(ds, extra, ds.prepare(split, index, record, rng))


def _no_augment(ds: SegDataset, split: str, extra, item):
  index, record = item
  return _add_targets(ds, extra, ds.prepare(split, index, record, None))


def _add_targets(ds: SegDataset, extra, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The example with the loss targets ``extra = (targets, channels)`` of its (augmented) label
  (see :mod:`seg_jax.data.targets`)."""
  targets, channels = extra
  if not targets:
    return example
  made = loss_targets.compute(
    targets,
    example["label"],
    num_classes=ds.num_classes,
    channels=channels,
    ignore_index=ds.ignore_index,
  )
  return {**example, **made}


def _check_targets(targets, channels) -> tuple[dict[str, str], int]:
  targets = dict(targets or {})
  reserved = sorted(set(targets) & {"image", "label", "valid"})
  if reserved:
    raise ValueError(f"train_batches: targets may not be named {reserved} (batch fields).")
  if targets and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
    raise ValueError(
      f"train_batches: targets need channels (the model's output channels), got {channels!r}."
    )
  return targets, channels


def _process_rows(sharding, global_shape: tuple[int, ...]) -> np.ndarray:
  """Sorted rows of the global batch held by this process's devices under ``sharding``."""
  batch = global_shape[0]
  if sharding is None:
    return np.arange(batch)
  try:
    shard = sharding.shard_shape(global_shape)
  except ValueError as err:
    raise ValueError(
      f"batch_size={batch} does not split evenly over the sharding {sharding}: {err}"
    ) from None
  if batch % shard[0]:
    raise ValueError(f"batch_size={batch} is not a multiple of the per-device rows {shard[0]}.")
  rows: set[int] = set()
  for index in sharding.addressable_devices_indices_map(global_shape).values():
    sl = index[0] if index else slice(None)
    rows.update(range(*sl.indices(batch)))
  return np.array(sorted(rows), dtype=np.int64)


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def _train_batch(stream, rows: np.ndarray, batch_size: int, step: int) -> dict[str, np.ndarray]:
  return _stack([stream[step * batch_size + int(r)] for r in rows])


def _eval_batch(
  examples, rows: np.ndarray, batch_size: int, n: int, padding, index: int
) -> dict[str, np.ndarray]:
  out = []
  for r in rows:
    i = index * batch_size + int(r)
    ex = dict(examples[i]) if i < n else dict(padding)
    ex["valid"] = np.asarray(i < n)
    out.append(ex)
  return _stack(out)


def _check_batch(batch_size, where):
  if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
    raise TypeError(f"{where}: batch_size must be an int, got {batch_size!r}.")
  if batch_size < 1:
    raise ValueError(f"{where}: batch_size must be >= 1, got {batch_size}.")


def _to_global(local: dict[str, np.ndarray], sharding, batch_size: int):
  if sharding is None:
    return local
  return {
    k: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:]))
    for k, v in local.items()
  }


def _globalize(local_batches, sharding, batch_size: int) -> Iterator[dict]:
  """Generator of global batches (a generator, so that ``close()`` stops the reading)."""
  for local in local_batches:
    yield _to_global(local, sharding, batch_size)


def _iterate(dataset: grain.MapDataset, ds: SegDataset) -> Iterator:
  it = dataset.to_iter_dataset(
    grain.ReadOptions(num_threads=ds.num_threads, prefetch_buffer_size=ds.prefetch)
  )
  if ds.num_workers:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=ds.num_workers))
  return iter(it)


def train_batches(
  ds: SegDataset,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  sharding=None,
  augment: bool = True,
  split: str = "train",
  targets=None,
  channels: int | None = None,
) -> Iterator[dict]:
  r"""Infinite iterator of training batches; batch ``t`` depends only on ``(seed, t)``.

  Args:
    ds: the data set (:func:`load`).
    batch_size: global batch size (all processes together); a multiple of the number of
      devices the batch axis is split over.
    seed: shuffling and augmentation seed (0 <= seed < 2**32).
    start_step: first step to yield (resume): the result equals an uninterrupted iterator with
      its first ``start_step`` batches dropped.
    sharding: ``jax.sharding.Sharding`` of the batch axis (e.g.
      ``NamedSharding(mesh, P('data'))``); the yielded arrays are global ``jax.Array``\ s with
      this sharding. ``None``: NumPy arrays (single process).
    augment: apply ``ds.augment``'s random zoom-crop, flips and rotations.
    split: the split to read.
    targets: ``{option: kind}`` per-example loss targets to add to every batch under the
      option's name (``seg_jax.losses.targets(loss_name)``), computed on the host from each
      example's label after its augmentation (:mod:`seg_jax.data.targets`).
    channels: the model's output channels (the channel count of distance-map targets; 1 for a
      binary sigmoid output); needed with ``targets``.

  Returns:
    An iterator (generator) of ``{'image': float32 (B, H, W, C), 'label': int32 (B, H, W)}``
    plus one entry per target. Arguments are checked when it is made, not at the first ``next``.
  """
  _check_batch(batch_size, "train_batches")
  if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
    raise ValueError(f"train_batches: seed must be an int in [0, 2**32), got {seed!r}.")
  if start_step < 0:
    raise ValueError(f"train_batches: start_step must be >= 0, got {start_step}.")
  extra = _check_targets(targets, channels)
  source = ds.source(split)
  shape = (batch_size, *ds.spatial_shape, ds.in_channels)
  rows = _process_rows(sharding, shape)
  stream = (
    grain.MapDataset.source(source)
    .map_with_index(functools.partial(_decode_raw, ds, split))
    .seed(int(seed))
    .shuffle()
    .repeat()
  )
  if augment:
    stream = stream.random_map(functools.partial(_augment, ds, split, extra))
  else:
    stream = stream.map(functools.partial(_no_augment, ds, split, extra))
  steps = grain.MapDataset.range(int(start_step), 2**62).map(
    functools.partial(_train_batch, stream, rows, batch_size)
  )
  return _globalize(_iterate(steps, ds), sharding, batch_size)


def eval_batches(ds: SegDataset, split: str, *, batch_size: int, sharding=None) -> Iterator[dict]:
  r"""One pass over ``split`` in order; the last batch is padded and marked by ``'valid'``.

  Args:
    ds: the data set (:func:`load`).
    split: e.g. ``'validation'`` or ``'test'``.
    batch_size: global batch size (see :func:`train_batches`).
    sharding: as in :func:`train_batches`.

  Returns:
    An iterator of :math:`\lceil N / B \rceil` batches ``{'image': float32 (B, H, W, C),
    'label': int32 (B, H, W), 'valid': bool (B,)}``; padding rows have zero image and label
    and ``valid=False``.
  """
  _check_batch(batch_size, "eval_batches")
  source = ds.source(split)
  n = len(source)
  shape = (batch_size, *ds.spatial_shape, ds.in_channels)
  rows = _process_rows(sharding, shape)
  examples = grain.MapDataset.source(source).map_with_index(functools.partial(_decode, ds, split))
  padding = {
    "image": np.zeros((*ds.spatial_shape, ds.in_channels), np.float32),
    "label": np.zeros(ds.spatial_shape, np.int32),
  }
  num_batches = math.ceil(n / batch_size)
  batches = grain.MapDataset.range(num_batches).map(
    functools.partial(_eval_batch, examples, rows, batch_size, n, padding)
  )
  return _globalize(itertools.islice(_iterate(batches, ds), num_batches), sharding, batch_size)
