"""Segmentation data for seg_jax: tfds builders read with grain, batched into global arrays.

Sources (``config.data.name``):

* ``synthetic_shapes`` (:mod:`seg_jax.data.synthetic_shapes`): procedurally generated images,
  built locally on first use; configs ``balanced`` (default), ``imbalanced``, ``thin``,
  ``multiclass``.
* ``image_folder`` (:mod:`seg_jax.data.image_folder`): the user's ``images/`` + ``masks/``.
* catalogue sets by tfds name (:mod:`seg_jax.data.catalogue`), e.g. ``oxford_iiit_pet``.

Entry points: :func:`default_config`, :func:`load` -> :class:`SegDataset`,
:func:`train_batches`, :func:`eval_batches` (see :mod:`seg_jax.data.pipeline`).

This package knows nothing of training; it uses :func:`seg_jax.losses.check_labels` to validate
labels eagerly.
"""

from seg_jax.data import catalogue, image_folder, synthetic_shapes
from seg_jax.data.dataset import Augment, SegDataset
from seg_jax.data.pipeline import default_config, eval_batches, load, names, train_batches

__all__ = [
  "Augment",
  "SegDataset",
  "catalogue",
  "default_config",
  "eval_batches",
  "image_folder",
  "load",
  "names",
  "synthetic_shapes",
  "train_batches",
]
