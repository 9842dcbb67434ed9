r"""Segmentation metrics accumulated exactly over a whole split: confusion counts, Dice, IoU,
precision, recall, and, per image and foreground class, the 95th-percentile Hausdorff distance
(HD95) and the normalised surface Dice (NSD) at a tolerance.

Everything derives from the confusion matrix ``cm`` of a split, ``cm[t, p]`` = number of counted
pixels whose true class is ``t`` and predicted class is ``p`` (rows truth, columns prediction,
as in scikit-learn). For class ``c``:

.. math::

  TP_c = cm_{cc}, \quad FP_c = \sum_t cm_{tc} - TP_c, \quad FN_c = \sum_p cm_{cp} - TP_c,

  \mathrm{Dice}_c = \frac{2 TP_c}{2 TP_c + FP_c + FN_c}, \quad
  \mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c}, \quad
  \mathrm{precision}_c = \frac{TP_c}{TP_c + FP_c}, \quad
  \mathrm{recall}_c = \frac{TP_c}{TP_c + FN_c}.

The counts are summed over every pixel of the split before any ratio is taken ("global" or
"micro over pixels" aggregation, as in the Cityscapes/PASCAL VOC IoU), not averaged per batch or
per image, so the result does not depend on the batch size or the padding of the last batch.

Conventions:

* Counted pixels: the label is in ``[0, num_classes)`` (any other label value, e.g. an
  ``ignore_index`` of 255, is not counted) and ``valid`` (if given) is true.
* Undefined ratios (``0 / 0``): a class absent from both prediction and truth over the whole split
  has no Dice or IoU; a class never predicted has no precision; a class absent from the truth has
  no recall. The per-class functions return NaN there, the means skip them (MONAI's
  ``do_metric_reduction`` convention), and :meth:`SegMetrics.compute` leaves those keys out, so
  its dict (and ``metrics.jsonl``) holds only finite numbers. A mean over no defined class is
  left out too.
* Means (``dice_mean``, ...) are over the foreground classes ``1 .. C-1`` (class 0 is the
  background); for binary data that is the foreground class alone.
* The surface metrics (HD95, NSD) are per image and foreground class, from the *surface* pixels
  of the two masks (:func:`surface_distances`), then averaged over the images of the split (each
  image counts once, whatever the batching) and over the foreground classes. Empty masks follow
  MONAI: HD95 is undefined if either mask is empty (left out, counted apart); NSD is undefined
  (left out) if both are empty and 0 if exactly one is.

References:
  L. R. Dice. "Measures of the Amount of Ecologic Association Between Species." Ecology 1945.
  M. Everingham et al. "The PASCAL Visual Object Classes (VOC) Challenge." IJCV 2010 (IoU).
  D. P. Huttenlocher et al. "Comparing images using the Hausdorff distance." TPAMI 1993.
  L. Maier-Hein et al. "Metrics reloaded." Nature Methods 2024 (conventions for empty masks).
  S. Nikolov et al. "Clinically applicable segmentation of head and neck anatomy for
  radiotherapy: deep learning algorithm development and validation study." JMIR 2021 (NSD).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

__all__ = [
  "SegMetrics",
  "confusion",
  "confusion_np",
  "dice",
  "foreground_mean",
  "hausdorff95",
  "iou",
  "precision",
  "predict_labels",
  "recall",
  "surface_dice",
  "surface_distances",
  "surface_scores",
]

_INT32_MAX = 2**31 - 1


def _check_maps(pred_shape, label_shape, num_classes, valid_shape, fn):
  if not isinstance(num_classes, int | np.integer) or isinstance(num_classes, bool):
    raise TypeError(f"{fn}: num_classes must be an int, got {num_classes!r}.")
  if num_classes < 1:
    raise ValueError(f"{fn}: num_classes must be >= 1, got {num_classes}.")
  if tuple(pred_shape) != tuple(label_shape):
    raise ValueError(
      f"{fn}: pred_map and label_map must have the same shape, got {tuple(pred_shape)} and "
      f"{tuple(label_shape)}."
    )
  if len(label_shape) < 1:
    raise ValueError(f"{fn}: label_map must have a batch axis, got a scalar.")
  if valid_shape is not None and tuple(valid_shape) not in (
    tuple(label_shape[:1]),
    tuple(label_shape),
  ):
    raise ValueError(
      f"{fn}: valid must have shape (batch,) = {tuple(label_shape[:1])} (one flag per example) "
      f"or the label shape {tuple(label_shape)} (one per pixel), got {tuple(valid_shape)}."
    )


def confusion(
  pred_map: jax.Array,
  label_map: jax.Array,
  num_classes: int,
  valid: jax.Array | None = None,
  *,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Confusion counts of one batch in JAX (jit-able, usable inside ``shard_map``).

  :math:`cm_{tp} = \sum_i [\mathrm{label}_i = t][\mathrm{pred}_i = p][\mathrm{valid}_i]`,
  computed as a fused comparison-and-sum (no scatter), so it is exact and deterministic on
  every backend.

  Args:
    pred_map: integer predicted classes ``(batch, *spatial)``.
    label_map: integer true classes, same shape. Labels outside ``[0, num_classes)`` (e.g. an
      ignore value of 255) are not counted; neither are pixels whose prediction is outside that
      range (a model cannot produce one through :func:`predict_labels`).
    num_classes: number of classes ``C``.
    valid: optional bool mask, ``(batch,)`` (one flag per example: padding of the last eval
      batch) or exactly ``label_map.shape`` (per pixel). Nothing else is broadcast.
    axis_name: if given, the counts are ``psum``-ed over this mapped axis (e.g. ``'data'``), so
      every device gets the counts of the global batch.

  Returns:
    int32 ``(C, C)`` counts, rows = truth, columns = prediction. int32 is exact up to
    :math:`2^{31}-1` pixels per call; accumulate calls on the host in int64 (:class:`SegMetrics`
    does).

  Raises:
    ValueError: shapes differ, ``valid`` has another shape, non-integer maps, or a batch with
      more than :math:`2^{31}-1` pixels (int32 could overflow).

  Example:
    >>> import jax.numpy as jnp
    >>> confusion(jnp.array([[0, 1, 1]]), jnp.array([[0, 1, 0]]), 2).tolist()
    [[1, 1], [0, 1]]
  """
  pred_map = jnp.asarray(pred_map)
  label_map = jnp.asarray(label_map)
  _check_maps(
    pred_map.shape,
    label_map.shape,
    num_classes,
    None if valid is None else jnp.shape(valid),
    "confusion",
  )
  for name, a in (("pred_map", pred_map), ("label_map", label_map)):
    if not jnp.issubdtype(a.dtype, jnp.integer):
      raise ValueError(f"confusion: {name} must be an integer class map, got dtype {a.dtype}.")
  if label_map.size > _INT32_MAX:
    raise ValueError(
      f"confusion: {label_map.size} pixels in one call (shape {label_map.shape}) could overflow "
      f"the int32 counts; call it on smaller batches."
    )
  counted = (label_map >= 0) & (label_map < num_classes) & (pred_map >= 0)
  counted &= pred_map < num_classes
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.ndim == 1 and label_map.ndim > 1:
      valid = valid.reshape(valid.shape + (1,) * (label_map.ndim - 1))
    counted &= valid
  classes = jnp.arange(num_classes)
  truth = (label_map[..., None] == classes) & counted[..., None]  # (..., C)
  pred = pred_map[..., None] == classes  # (..., C)
  both = truth[..., :, None] & pred[..., None, :]  # (..., C, C), fused into the sum
  counts = jnp.sum(both, axis=tuple(range(label_map.ndim)), dtype=jnp.int32)
  if axis_name is not None:
    counts = jax.lax.psum(counts, axis_name)
  return counts


def confusion_np(
  pred_map: np.ndarray,
  label_map: np.ndarray,
  num_classes: int,
  valid: np.ndarray | None = None,
) -> np.ndarray:
  r"""Confusion counts on the host in NumPy int64 (same conventions as :func:`confusion`).

  Unlike :func:`confusion` it checks its inputs: a prediction outside ``[0, num_classes)``
  raises (it is a bug upstream, not an ignore label).

  Args:
    pred_map: integer predicted classes ``(batch, *spatial)``.
    label_map: integer true classes, same shape; labels outside ``[0, num_classes)`` are not
      counted.
    num_classes: number of classes ``C``.
    valid: optional bool mask ``(batch,)`` or ``label_map.shape``.

  Returns:
    int64 ``(C, C)`` counts, rows = truth, columns = prediction.

  Example:
    >>> confusion_np(np.array([[0, 1, 1]]), np.array([[0, 1, 0]]), 2).tolist()
    [[1, 1], [0, 1]]
  """
  pred_map = np.asarray(pred_map)
  label_map = np.asarray(label_map)
  _check_maps(
    pred_map.shape,
    label_map.shape,
    num_classes,
    None if valid is None else np.shape(valid),
    "confusion_np",
  )
  for name, a in (("pred_map", pred_map), ("label_map", label_map)):
    if not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"confusion_np: {name} must be an integer class map, got dtype {a.dtype}.")
  counted = (label_map >= 0) & (label_map < num_classes)
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.ndim == 1 and label_map.ndim > 1:
      valid = valid.reshape(valid.shape + (1,) * (label_map.ndim - 1))
    counted = counted & valid
  pred = pred_map[counted].astype(np.int64)
  if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
    raise ValueError(
      f"confusion_np: predictions must lie in [0, {num_classes}), got values in "
      f"[{pred.min()}, {pred.max()}]."
    )
  index = label_map[counted].astype(np.int64) * num_classes + pred
  return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _counts(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}.")
  cm = cm.astype(np.float64)
  tp = np.diag(cm)
  return tp, cm.sum(0) - tp, cm.sum(1) - tp


def _ratio(num, den) -> np.ndarray:
  out = np.full(num.shape, np.nan)
  np.divide(num, den, out=out, where=den > 0)
  return out


def dice(cm) -> np.ndarray:
  r"""Per-class Dice :math:`2TP / (2TP + FP + FN)` from a ``(C, C)`` confusion matrix.

  Returns float64 ``(C,)``, NaN for a class absent from both prediction and truth.

  Example:
    >>> dice(np.array([[1, 1], [0, 1]])).round(4).tolist()
    [0.6667, 0.6667]
  """
  tp, fp, fn = _counts(cm)
  return _ratio(2 * tp, 2 * tp + fp + fn)


def iou(cm) -> np.ndarray:
  r"""Per-class IoU (Jaccard) :math:`TP / (TP + FP + FN)`; NaN where the class is absent from
  both prediction and truth.

  Example:
    >>> iou(np.array([[1, 1], [0, 1]])).tolist()
    [0.5, 0.5]
  """
  tp, fp, fn = _counts(cm)
  return _ratio(tp, tp + fp + fn)


def precision(cm) -> np.ndarray:
  r"""Per-class precision :math:`TP / (TP + FP)`; NaN for a class never predicted.

  Example:
    >>> precision(np.array([[1, 1], [0, 1]])).tolist()
    [1.0, 0.5]
  """
  tp, fp, _ = _counts(cm)
  return _ratio(tp, tp + fp)


def recall(cm) -> np.ndarray:
  r"""Per-class recall (sensitivity) :math:`TP / (TP + FN)`; NaN for a class absent from the
  truth.

  Example:
    >>> recall(np.array([[1, 1], [0, 1]])).tolist()
    [0.5, 1.0]
  """
  tp, _, fn = _counts(cm)
  return _ratio(tp, tp + fn)


def foreground_mean(values: np.ndarray) -> float:
  r"""Mean over classes ``1 .. C-1`` of the defined (non-NaN) values; NaN if none is defined.

  Example:
    >>> foreground_mean(np.array([0.9, 0.5, np.nan, 0.7]))
    0.6
  """
  fg = np.asarray(values, np.float64)[1:]
  fg = fg[~np.isnan(fg)]
  return float(fg.mean()) if fg.size else float("nan")


def predict_labels(logits: jax.Array) -> jax.Array:
  r"""Class map from logits ``(batch, *spatial, channels)``: one channel means binary with a
  sigmoid (class 1 where the logit is > 0, i.e. probability > 0.5), several channels mean the
  argmax (softmax) class. Returns int32 ``(batch, *spatial)``.

  Example:
    >>> import jax.numpy as jnp
    >>> predict_labels(jnp.array([[[-1.0], [2.0]]])).tolist()
    [[0, 1]]
  """
  logits = jnp.asarray(logits)
  if logits.ndim < 2:
    raise ValueError(f"predict_labels: logits must be (batch, ..., channels), got {logits.shape}.")
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _spacing(spacing, ndim: int) -> np.ndarray:
  if spacing is None:
    return np.ones(ndim)
  s = np.asarray(spacing, np.float64)
  if s.ndim == 0:
    s = np.full(ndim, float(s))
  if s.shape != (ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(
      f"spacing must be a positive number or one positive number per spatial axis ({ndim}), "
      f"got {spacing!r}."
    )
  return s


def _surface(mask: np.ndarray) -> np.ndarray:
  # Foreground pixels with a background (or out-of-image) neighbour along an axis.
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(from_mask, to_mask, spacing=None) -> np.ndarray:
  r"""Directed surface distances: for every surface pixel of ``from_mask``, the Euclidean distance
  (in ``spacing`` units, between pixel centres) to the nearest surface pixel of ``to_mask``.

  The surface of a mask is its foreground pixels with a background neighbour along an axis
  (face connectivity) or on the image border: ``mask & ~erode(mask)``, as in MedPy and MONAI.
  Both masks must be non-empty.

  Example:
    >>> surface_distances(np.array([1, 1, 0, 0]), np.array([0, 0, 0, 1])).tolist()
    [3.0, 2.0]
  """
  a = np.asarray(from_mask) != 0
  b = np.asarray(to_mask) != 0
  if a.shape != b.shape:
    raise ValueError(f"surface_distances: mask shapes differ: {a.shape} and {b.shape}.")
  if not a.any() or not b.any():
    raise ValueError("surface_distances: both masks must be non-empty.")
  dist_to_b = ndimage.distance_transform_edt(~_surface(b), sampling=_spacing(spacing, b.ndim))
  return dist_to_b[_surface(a)]


def _check_pair(pred_mask, true_mask, fn: str) -> tuple[np.ndarray, np.ndarray]:
  a = np.asarray(pred_mask) != 0
  b = np.asarray(true_mask) != 0
  if a.shape != b.shape:
    raise ValueError(f"{fn}: pred_mask {a.shape} and true_mask {b.shape} differ in shape.")
  if not 1 <= a.ndim <= 3:
    raise ValueError(f"{fn}: masks must have 1-3 spatial dims, got shape {a.shape}.")
  return a, b


def _check_percentile_pooling(percentile, pooling, fn: str) -> None:
  if pooling not in ("max", "pooled"):
    raise ValueError(f"{fn}: pooling must be 'max' or 'pooled', got {pooling!r}.")
  if not 0 <= percentile <= 100:
    raise ValueError(f"{fn}: percentile must be in [0, 100], got {percentile}.")


def _check_tolerance(tolerance, fn: str, name: str = "tolerance") -> float:
  if isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.number):
    raise TypeError(f"{fn}: {name} must be a number, got {tolerance!r}.")
  if not np.isfinite(tolerance) or tolerance < 0:
    raise ValueError(f"{fn}: {name} must be finite and >= 0, got {tolerance}.")
  return float(tolerance)


def _hd_from(d_ab, d_ba, percentile, pooling) -> float:
  if pooling == "pooled":
    return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))
  return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def _nsd_from(d_ab, d_ba, tolerance) -> float:
  within = np.count_nonzero(d_ab <= tolerance) + np.count_nonzero(d_ba <= tolerance)
  return float(within / (d_ab.size + d_ba.size))


def hausdorff95(
  pred_mask, true_mask, spacing=None, *, percentile: float = 95.0, pooling: str = "max"
) -> float:
  r"""95th-percentile Hausdorff distance (HD95) between two binary masks of one image.

  With :math:`d(A \to B)` the directed surface distances (:func:`surface_distances`) and
  :math:`P_{95}` the 95th percentile with linear interpolation (``np.percentile``):

  * ``pooling='max'`` (default; MONAI ``compute_hausdorff_distance(percentile=95)``, DeepMind
    ``surface-distance`` robust Hausdorff up to its surfel-area weights):
    :math:`\max(P_{95}(d(A \to B)), P_{95}(d(B \to A)))`.
  * ``pooling='pooled'`` (MedPy ``hd95``): :math:`P_{95}(d(A \to B) \cup d(B \to A))`.

  Empty masks: NaN if both are empty (undefined: nothing to delineate, nothing predicted), +inf
  if exactly one is (MONAI's convention). :class:`SegMetrics` averages HD95 over the images where
  both masks are non-empty and counts the others separately.

  Args:
    pred_mask: binary mask ``(*spatial)``, 1-3 dims; nonzero = foreground.
    true_mask: binary mask of the same shape.
    spacing: pixel size per axis (a number or one per axis); default 1.
    percentile: the percentile (95 for HD95, 100 for the Hausdorff distance).
    pooling: ``'max'`` or ``'pooled'``, see above.

  Returns:
    The distance as a Python float, in ``spacing`` units.

  References:
    D. P. Huttenlocher et al., TPAMI 1993; MONAI ``monai.metrics.hausdorff_distance``;
    MedPy ``medpy.metric.binary.hd95``.

  Example:
    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> b = np.zeros((8, 8), bool); b[2:5, 3:6] = True
    >>> hausdorff95(a, b)
    1.0
  """
  a, b = _check_pair(pred_mask, true_mask, "hausdorff95")
  _check_percentile_pooling(percentile, pooling, "hausdorff95")
  spacing = _spacing(spacing, a.ndim)
  has_a, has_b = a.any(), b.any()
  if not has_a and not has_b:
    return float("nan")
  if not has_a or not has_b:
    return float("inf")
  return _hd_from(
    surface_distances(a, b, spacing), surface_distances(b, a, spacing), percentile, pooling
  )


def surface_dice(pred_mask, true_mask, spacing=None, *, tolerance: float = 1.0) -> float:
  r"""Normalised surface Dice (NSD) at ``tolerance`` between two binary masks of one image.

  The fraction of the two surfaces that lies within ``tolerance`` of the other surface. With
  :math:`S_P, S_G` the surface pixels of prediction and truth (:func:`surface_distances`: mask
  pixels with a background face neighbour or on the image border) and :math:`d(x, S)` the
  Euclidean distance (in ``spacing`` units, between pixel centres) from :math:`x` to the nearest
  pixel of :math:`S`:

  .. math::

    \mathrm{NSD}_	au = rac{|\{x \in S_P : d(x, S_G) \le 	au\}| + |\{y \in S_G : d(y, S_P)
    \le 	au\}|}{|S_P| + |S_G|}.

  This is Nikolov et al.'s surface Dice with every surface pixel weighing 1 (MONAI
  ``compute_surface_dice(use_subvoxels=False)``, same surfaces, distances and :math:`\le`); the
  DeepMind ``surface-distance`` package weighs surface elements by their area instead, which
  differs slightly on curved or oblique contours.

  Empty masks (MONAI's convention): NaN if both are empty (no surface to delineate: undefined),
  0.0 if exactly one is (none of the other surface is within any tolerance).

  Args:
    pred_mask: binary mask ``(*spatial)``, 1-3 dims; nonzero = foreground.
    true_mask: binary mask of the same shape.
    spacing: pixel size per axis (a number or one per axis); default 1.
    tolerance: the accepted deviation :math:`	au` >= 0, in ``spacing`` units (pixels when
      ``spacing`` is not given); default 1.

  Returns:
    NSD in [0, 1] as a Python float (NaN if both masks are empty).

  References:
    S. Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for
    radiotherapy", JMIR 2021 (arXiv:1809.04430); MONAI ``monai.metrics.compute_surface_dice``.

  Example:
    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> b = np.zeros((8, 8), bool); b[2:5, 3:6] = True
    >>> surface_dice(a, b, tolerance=0.5), surface_dice(a, b, tolerance=1.0)
    (0.5, 1.0)
  """
  a, b = _check_pair(pred_mask, true_mask, "surface_dice")
  tolerance = _check_tolerance(tolerance, "surface_dice")
  spacing = _spacing(spacing, a.ndim)
  has_a, has_b = a.any(), b.any()
  if not has_a and not has_b:
    return float("nan")
  if not has_a or not has_b:
    return 0.0
  return _nsd_from(surface_distances(a, b, spacing), surface_distances(b, a, spacing), tolerance)


def surface_scores(
  pred_mask, true_mask, spacing=None, *, tolerance: float = 1.0, pooling: str = "max"
) -> tuple[float, float]:
  r"""``(hausdorff95(...), surface_dice(...))`` of one pair of masks, from one pair of distance
  transforms (the two functions would compute them twice).

  Same arguments and empty-mask conventions as :func:`hausdorff95` (NaN both empty, +inf one
  empty) and :func:`surface_dice` (NaN both empty, 0 one empty).

  Example:
    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> b = np.zeros((8, 8), bool); b[2:5, 3:6] = True
    >>> surface_scores(a, b, tolerance=0.5)
    (1.0, 0.5)
  """
  a, b = _check_pair(pred_mask, true_mask, "surface_scores")
  _check_percentile_pooling(95.0, pooling, "surface_scores")
  tolerance = _check_tolerance(tolerance, "surface_scores")
  spacing = _spacing(spacing, a.ndim)
  has_a, has_b = a.any(), b.any()
  if not has_a and not has_b:
    return float("nan"), float("nan")
  if not has_a or not has_b:
    return float("inf"), 0.0
  d_ab, d_ba = surface_distances(a, b, spacing), surface_distances(b, a, spacing)
  return _hd_from(d_ab, d_ba, 95.0, pooling), _nsd_from(d_ab, d_ba, tolerance)


class SegMetrics:
  r"""Exact accumulation of segmentation metrics over a split, on the host.

  Call :meth:`update` with each batch's predicted and true class maps (or :meth:`add_confusion`
  with counts from :func:`confusion` computed on device), then :meth:`compute`.

  Args:
    num_classes: number of classes ``C >= 2`` (class 0 is the background).
    class_names: names used in the keys (default ``class_0``, ``class_1``, ...).
    hd95: compute HD95 per image and foreground class (default true). The surface metrics need
      the class maps, so they are computed in :meth:`update` (two distance transforms per image
      and foreground class, shared by HD95 and NSD).
    nsd: compute the normalised surface Dice per image and foreground class (default true).
    spacing: pixel spacing for HD95 and NSD (a number or one per spatial axis).
    hd95_pooling: ``'max'`` or ``'pooled'`` (see :func:`hausdorff95`).
    nsd_tolerance: the NSD tolerance in ``spacing`` units (pixels by default): a number, or one
      per foreground class (``C - 1`` numbers, as MONAI's ``class_thresholds``); default 1.

  :meth:`compute` returns a dict of finite Python numbers:

  * ``dice_mean``, ``iou_mean``, ``precision_mean``, ``recall_mean``: foreground means;
  * ``dice/<name>``, ``iou/<name>``, ``precision/<name>``, ``recall/<name>``: every class,
    the background included;
  * ``accuracy``: fraction of counted pixels classified correctly; ``num_pixels``: pixels
    counted;
  * with HD95: ``hd95/<name>`` per foreground class, the mean over the images where prediction
    and truth both have the class; ``hd95``, the mean of those over the foreground classes (for
    binary data the mean over images); ``hd95_images`` (the (image, class) pairs averaged),
    ``hd95_one_empty`` (pairs where exactly one of the two is empty: undefined HD95, excluded
    from the mean but counted here so that a model predicting nothing cannot look good),
    ``hd95_both_empty``, all three summed over the foreground classes;
  * with NSD: ``nsd/<name>`` per foreground class, the mean over the images where prediction or
    truth has the class (an image where only one has it counts 0, MONAI's convention); ``nsd_mean``,
    the mean of those over the foreground classes; ``nsd_images``, the (image, class) pairs
    averaged.

  Undefined values (see the module docstring) are left out of the dict rather than given as NaN,
  so it can be written as strict JSON.

  Example:
    >>> m = SegMetrics(2, ["background", "fg"])
    >>> m.update(np.array([[[0, 1], [1, 1]]]), np.array([[[0, 1], [0, 1]]]))
    >>> r = m.compute()
    >>> round(r["dice/fg"], 4), r["hd95_images"], r["nsd_mean"]
    (0.8, 1, 1.0)
  """

  def __init__(
    self,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    *,
    hd95: bool = True,
    nsd: bool = True,
    spacing=None,
    hd95_pooling: str = "max",
    nsd_tolerance: float | Sequence[float] = 1.0,
  ):
    if not isinstance(num_classes, int | np.integer) or isinstance(num_classes, bool):
      raise TypeError(f"SegMetrics: num_classes must be an int, got {num_classes!r}.")
    if num_classes < 2:
      raise ValueError(
        f"SegMetrics: num_classes must be >= 2 (background + foreground), got {num_classes}; "
        f"binary data has 2 classes even when the model has one output channel."
      )
    if class_names is None:
      class_names = [f"class_{i}" for i in range(num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
      raise ValueError(
        f"SegMetrics: class_names must be {num_classes} distinct names, got {class_names}."
      )
    if hd95_pooling not in ("max", "pooled"):
      raise ValueError(f"SegMetrics: hd95_pooling must be 'max' or 'pooled', got {hd95_pooling!r}.")
    if isinstance(nsd_tolerance, Sequence | np.ndarray) and not isinstance(nsd_tolerance, str):
      if len(nsd_tolerance) != num_classes - 1:
        raise ValueError(
          f"SegMetrics: nsd_tolerance must be a number or one number per foreground class "
          f"({num_classes - 1}), got {list(nsd_tolerance)}."
        )
      tolerances = tuple(
        _check_tolerance(t, "SegMetrics", f"nsd_tolerance[{i}]")
        for i, t in enumerate(nsd_tolerance)
      )
    else:
      tolerances = (_check_tolerance(nsd_tolerance, "SegMetrics", "nsd_tolerance"),) * (
        num_classes - 1
      )
    if spacing is not None:
      _spacing(spacing, np.size(spacing))  # Positive and finite; the rank is checked per image.
    self.num_classes = int(num_classes)
    self.class_names = class_names
    self.hd95 = bool(hd95)
    self.nsd = bool(nsd)
    self.spacing = spacing
    self.hd95_pooling = hd95_pooling
    self.nsd_tolerance = tolerances
    self.reset()

  def reset(self) -> None:
    """Forgets everything accumulated."""
    self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
    fg = self.num_classes - 1
    self._hd95: list[list[float]] = [[] for _ in range(fg)]
    self._nsd: list[list[float]] = [[] for _ in range(fg)]
    self._one_empty = np.zeros(fg, np.int64)
    self._both_empty = np.zeros(fg, np.int64)

  def add_confusion(self, cm) -> None:
    """Adds a ``(C, C)`` confusion matrix (e.g. from :func:`confusion` on device)."""
    cm = np.asarray(cm)
    if cm.shape != self.confusion_matrix.shape or not np.issubdtype(cm.dtype, np.integer):
      raise ValueError(
        f"SegMetrics.add_confusion: expected integer counts of shape "
        f"{self.confusion_matrix.shape}, got {cm.dtype} {cm.shape}."
      )
    if np.any(cm < 0):
      raise ValueError("SegMetrics.add_confusion: counts must be non-negative.")
    self.confusion_matrix += cm.astype(np.int64)

  def update(self, preds, labels, valid=None) -> None:
    """Adds a batch: integer class maps ``(batch, *spatial)`` (NumPy or JAX arrays).

    Args:
      preds: predicted classes (:func:`predict_labels` of the logits).
      labels: true classes; values outside ``[0, C)`` are ignored pixels.
      valid: optional bool ``(batch,)`` (padded examples are False) or per-pixel mask. For
        the surface metrics, invalid examples are skipped and invalid (or ignored) pixels are
        background in both masks.
    """
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    valid = None if valid is None else np.asarray(valid, bool)
    self.confusion_matrix += confusion_np(preds, labels, self.num_classes, valid)
    if not (self.hd95 or self.nsd):
      return
    if not 2 <= labels.ndim <= 4:
      raise ValueError(
        f"SegMetrics.update: HD95 and NSD need (batch, *spatial) maps with 1-3 spatial dims, got "
        f"{labels.shape}; pass hd95=False, nsd=False for other shapes."
      )
    spacing = _spacing(self.spacing, labels.ndim - 1)
    for i in range(labels.shape[0]):
      counted = (labels[i] >= 0) & (labels[i] < self.num_classes)
      if valid is not None:
        if valid.ndim == 1:
          if not valid[i]:
            continue
        else:
          counted &= valid[i]
      for j, c in enumerate(range(1, self.num_classes)):
        self._add_surface(j, (preds[i] == c) & counted, (labels[i] == c) & counted, spacing)

  def _add_surface(self, j: int, pred: np.ndarray, truth: np.ndarray, spacing) -> None:
    """HD95 and NSD of foreground class ``j + 1`` on one image."""
    hd, nsd = surface_scores(
      pred, truth, spacing, tolerance=self.nsd_tolerance[j], pooling=self.hd95_pooling
    )
    if np.isnan(hd):
      self._both_empty[j] += 1
    elif np.isinf(hd):
      self._one_empty[j] += 1
    elif self.hd95:
      self._hd95[j].append(hd)
    if self.nsd and not np.isnan(nsd):
      self._nsd[j].append(nsd)

  def compute(self) -> dict[str, float | int]:
    """The metrics of everything added since the last :meth:`reset` (see the class docstring)."""
    out: dict[str, float | int] = {}
    per_class = {
      "dice": dice(self.confusion_matrix),
      "iou": iou(self.confusion_matrix),
      "precision": precision(self.confusion_matrix),
      "recall": recall(self.confusion_matrix),
    }
    for name, values in per_class.items():
      mean = foreground_mean(values)
      if np.isfinite(mean):
        out[f"{name}_mean"] = mean
    for name, values in per_class.items():
      for class_name, v in zip(self.class_names, values, strict=True):
        if np.isfinite(v):
          out[f"{name}/{class_name}"] = float(v)
    total = int(self.confusion_matrix.sum())
    out["num_pixels"] = total
    if total:
      out["accuracy"] = float(np.trace(self.confusion_matrix) / total)
    if self.hd95:
      self._surface_keys(out, "hd95", "hd95", self._hd95)
      out["hd95_images"] = sum(len(v) for v in self._hd95)
      out["hd95_one_empty"] = int(self._one_empty.sum())
      out["hd95_both_empty"] = int(self._both_empty.sum())
    if self.nsd:
      self._surface_keys(out, "nsd", "nsd_mean", self._nsd)
      out["nsd_images"] = sum(len(v) for v in self._nsd)
    return out

  def _surface_keys(self, out: dict, prefix: str, mean_key: str, values) -> None:
    """``<prefix>/<name>`` per foreground class and ``mean_key`` over the defined classes."""
    means = np.array([np.mean(v) if v else np.nan for v in values])
    for name, v in zip(self.class_names[1:], means, strict=True):
      if np.isfinite(v):
        out[f"{prefix}/{name}"] = float(v)
    mean = foreground_mean(np.concatenate([[np.nan], means]))
    if np.isfinite(mean):
      out[mean_key] = mean
