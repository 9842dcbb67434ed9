r"""Per-example loss targets computed on the host, once per example, from its label map.

Some losses need a target derived from the labels alone, which does not change during training:
the tubed skeleton of ``skeleton_recall`` (Kirchhoff et al. 2024) and the distance maps of
``boundary`` / ``hausdorff_dt``. Such a loss declares them in the registry,
``seg_jax.losses.targets(name) -> {option: kind}``; the pipeline (:mod:`seg_jax.data.pipeline`,
``train_batches(..., targets=...)``) computes each kind with :func:`compute` for every example it
yields and carries it in the batch under the option's name, and the trainer passes
``batch[option]`` to the loss. A loss called without them computes its own inside ``jit``.

**Augmentation.** Targets are computed from the label map *after* the example's augmentation
(zoom-crop, flips, rotation), so they always match the labels the loss sees; the zoom's
nearest-neighbour resize changes the shapes, so moving a target computed before it would not give
the target of the resized labels. The cost is one skeletonization or distance transform per
yielded example on the pipeline's threads (a 64 x 64 skeleton takes well under 1 ms), not per
loss evaluation on the device.

Kinds (the formats of :data:`seg_jax.losses.registry.TARGET_KINDS`):

* ``'tubed_skeleton'`` (:func:`tubed_skeleton`): int32 map of the label's shape.
* ``'signed_distance'`` (:func:`signed_distance`), ``'boundary_distance'``
  (:func:`boundary_distance`): float32 ``(*spatial, channels)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize


def _foreground(label: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
  fg = (label > 0) & (label < num_classes)
  if ignore_index is not None:
    fg &= label != ignore_index
  return fg


def tubed_skeleton(
  label: np.ndarray, *, num_classes: int, ignore_index: int | None = None, tube: int = 2
) -> np.ndarray:
  """The paper's tubed skeleton of a class map (2D or 3D), int32 of ``label.shape``.

  The foreground (labels in ``[1, num_classes)``, not ``ignore_index``) is binarised and
  skeletonized with ``skimage.morphology.skeletonize`` (Zhang's thinning in 2D, Lee's in 3D),
  dilated ``tube`` times with the cross-shaped footprint (connectivity 1; two dilations as in the
  authors' ``SkeletonTransform``), and each tube pixel on the foreground gets its label (the
  others 0), as the authors' ``skel *= seg``.

  Args:
    label: integer class map, 2 or 3 dims.
    num_classes: number of classes (background 0 included).
    ignore_index: label value of ignored pixels, or ``None``.
    tube: number of cross dilations.

  Returns:
    int32 map: the class of each tube pixel, 0 elsewhere.
  """
  label = np.asarray(label)
  fg = _foreground(label, num_classes, ignore_index)
  if not fg.any():
    return np.zeros(label.shape, np.int32)
  skel = skeletonize(fg)
  footprint = ndimage.generate_binary_structure(label.ndim, 1)
  for _ in range(tube):
    skel = ndimage.binary_dilation(skel, footprint)
  return np.where(skel & fg, label, 0).astype(np.int32)


def _class_masks(
  label: np.ndarray, *, num_classes: int, channels: int, ignore_index: int | None
) -> np.ndarray:
  """Per-channel masks ``(*spatial, channels)`` of a class map, read as the losses read it:
  invalid and ignored labels count as class 0; one channel holds class 1 (binary)."""
  label = np.asarray(label)
  valid = (label >= 0) & (label < num_classes)
  if ignore_index is not None:
    valid &= label != ignore_index
  y = np.where(valid, label, 0)
  if channels == 1:
    return (y == 1)[..., None]
  return y[..., None] == np.arange(channels)


def _edt(mask: np.ndarray) -> np.ndarray:
  """Distance of each pixel to the nearest pixel where ``mask`` is False (0 on them)."""
  return ndimage.distance_transform_edt(mask)


def _per_channel(masks: np.ndarray, fn) -> np.ndarray:
  out = np.zeros(masks.shape, np.float32)
  for c in range(masks.shape[-1]):
    m = masks[..., c]
    if m.any() and not m.all():  # A class absent or filling the image has no boundary: 0.
      out[..., c] = fn(m)
  return out


def signed_distance(
  label: np.ndarray, *, num_classes: int, channels: int, ignore_index: int | None = None
) -> np.ndarray:
  """Host counterpart of :func:`seg_jax.losses.signed_distance_map` of the labels' one-hot.

  Unit spacing: ``edt(outside)`` outside each class, ``-(edt(inside) - 1)`` inside, 0 for a
  class without boundary. ``channels`` is the model's (1: class 1 of a binary map).
  """
  masks = _class_masks(label, num_classes=num_classes, channels=channels, ignore_index=ignore_index)
  return _per_channel(masks, lambda m: np.where(m, -(_edt(m) - 1.0), _edt(~m)))


def boundary_distance(
  label: np.ndarray, *, num_classes: int, channels: int, ignore_index: int | None = None
) -> np.ndarray:
  """Host counterpart of :func:`seg_jax.losses.boundary_distance_map` of the labels' one-hot:
  ``edt(inside) + edt(outside)`` per class, 0 for a class without boundary (unit spacing)."""
  masks = _class_masks(label, num_classes=num_classes, channels=channels, ignore_index=ignore_index)
  return _per_channel(masks, lambda m: _edt(m) + _edt(~m))


def compute(
  targets: Mapping[str, str],
  label: np.ndarray,
  *,
  num_classes: int,
  channels: int,
  ignore_index: int | None = None,
) -> dict[str, np.ndarray]:
  """``{option: target}`` for the ``{option: kind}`` a loss declares, from one label map.

  Raises:
    ValueError: an unknown kind (the message lists the known ones).
  """
  out = {}
  for option, kind in targets.items():
    if kind == "tubed_skeleton":
      out[option] = tubed_skeleton(label, num_classes=num_classes, ignore_index=ignore_index)
    elif kind == "signed_distance":
      out[option] = signed_distance(
        label, num_classes=num_classes, channels=channels, ignore_index=ignore_index
      )
    elif kind == "boundary_distance":
      out[option] = boundary_distance(
        label, num_classes=num_classes, channels=channels, ignore_index=ignore_index
      )
    else:
      raise ValueError(
        f"unknown target kind {kind!r} for option {option!r}; known kinds: 'tubed_skeleton', "
        "'signed_distance', 'boundary_distance'."
      )
  return out
