r"""Per-image metrics of one run on the validation split, for the paired statistics.

:class:`seg_jax.metrics.SegMetrics` pools a split into one confusion matrix, which is what the
trainer logs. A comparison needs the *per-image* values, so that two losses can be paired image
by image (:mod:`seg_jax.choosing.stats`). :func:`per_image_metrics` computes them from the class
maps of the whole split; :func:`threshold_free` adds the view of the foreground probabilities.

Conventions (quoted by the report):

* Pixels whose label is outside ``[0, num_classes)`` (``ignore_index``) are left out everywhere.
* **Dice, IoU of class c on image i** (:math:`2TP/(2TP+FP+FN)`, :math:`TP/(TP+FP+FN)`): defined
  on the images whose truth contains class ``c`` (MONAI's ``ignore_empty=True``). The set of
  images is then the same for every run (it depends on the truth only), as pairing requires. A
  false positive on an image without the class is not in these numbers; ``fp_images`` counts
  such images.
* **Foreground Dice of an image** (``dice``): the mean over the foreground classes ``1..C-1``
  defined on that image (for binary data, the Dice of the foreground class).
* **HD95** (:func:`seg_jax.metrics.hausdorff95`, pixels): per foreground class, on the images
  where truth and prediction both contain it; the mean over the classes defined on the image.
* **NSD** (normalised surface Dice, :func:`seg_jax.metrics.surface_dice`, at ``nsd_tolerance``
  pixels, default 1): per foreground class, on the images whose truth contains it (the same
  images as Dice, so runs pair); 0 where the prediction lacks the class (MONAI's one-empty
  convention); the mean over the classes defined on the image. Dice counts pixels, NSD the
  share of the contours within the tolerance of each other: a boundary-sensitive comparison
  needs both (Nikolov et al. 2021; Ma et al. 2021 report it beside Dice).
* **Betti-0 error** (``betti0_error``): :math:`|b_0(P) - b_0(G)|`, the difference in the number
  of connected foreground components (8-connectivity in 2-D, 26 in 3-D, per class, summed over
  the foreground classes) between prediction and truth, on every image. Dice barely moves when a
  thin structure breaks; the component count does (Hu et al., NeurIPS 2019; Shit et al., CVPR
  2021 report it for clDice).

References:
  L. R. Dice, Ecology 1945; X. Hu et al., "Topology-preserving deep image segmentation",
  NeurIPS 2019; S. Shit et al., "clDice", CVPR 2021; MONAI ``DiceMetric(ignore_empty=True)``;
  S. Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for
  radiotherapy", JMIR 2021 (surface Dice).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from seg_jax import metrics as seg_metrics

# "Foreground everywhere": a run predicting foreground on at least this share of the valid pixels
# of the split is flagged as collapsed (the classes of the synthetic data cover 2-25 %).
EVERYWHERE_FRACTION = 0.95


def _check(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
  if preds.shape != labels.shape:
    raise ValueError(
      f"per_image_metrics: preds {preds.shape} and labels {labels.shape} must have the same "
      "(images, *spatial) shape."
    )
  if not 2 <= preds.ndim <= 4:
    raise ValueError(f"per_image_metrics: expected (images, *spatial), got shape {preds.shape}.")
  if int(num_classes) < 2:
    raise ValueError(f"per_image_metrics: num_classes must be >= 2, got {num_classes!r}.")


def _components(mask: np.ndarray) -> int:
  structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)  # 8 / 26-connectivity.
  return int(ndimage.label(mask, structure=structure)[1])


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
  defined = np.isfinite(x)
  counts = defined.sum(axis=1)
  sums = np.where(defined, x, 0.0).sum(axis=1)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def per_image_metrics(
  preds,
  labels,
  num_classes: int,
  *,
  hd95: bool = True,
  nsd: bool = True,
  nsd_tolerance: float = 1.0,
) -> dict:
  """Per-image metrics of predicted class maps against the truth (module docstring).

  Args:
    preds: integer class maps ``(images, *spatial)``, 1-3 spatial dims.
    labels: true class maps of the same shape; values outside ``[0, num_classes)`` are ignored.
    num_classes: ``C >= 2`` (class 0 is the background).
    hd95: also compute HD95 (two distance transforms per image and class, shared with NSD).
    nsd: also compute the NSD at ``nsd_tolerance`` pixels.
    nsd_tolerance: the NSD tolerance in pixels.

  Returns:
    Float64 arrays: ``dice``, ``iou``, ``hd95``, ``nsd``, ``betti0_error`` ``(images,)`` (NaN
    where undefined, or everywhere when not computed); ``dice_per_class``, ``iou_per_class``,
    ``nsd_per_class`` ``(images, C - 1)`` for the foreground classes; and the counts
    ``fg_pixels_pred``, ``valid_pixels`` ``(images,)``, ``fp_images`` (int: images with a
    predicted class that their truth lacks).
  """
  p, t = np.asarray(preds), np.asarray(labels)
  _check(p, t, num_classes)
  n, fg = len(p), range(1, num_classes)
  dice_c = np.full((n, num_classes - 1), np.nan)
  iou_c = np.full((n, num_classes - 1), np.nan)
  hd_c = np.full((n, num_classes - 1), np.nan)
  nsd_c = np.full((n, num_classes - 1), np.nan)
  betti = np.zeros(n)
  fg_pred = np.zeros(n)
  valid_px = np.zeros(n)
  fp_images = 0
  for i in range(n):
    valid = (t[i] >= 0) & (t[i] < num_classes)
    valid_px[i] = valid.sum()
    fg_pred[i] = ((p[i] > 0) & valid).sum()
    false_positive = False
    for j, c in enumerate(fg):
      pc, tc = (p[i] == c) & valid, (t[i] == c) & valid
      n_p, n_t = int(pc.sum()), int(tc.sum())
      betti[i] += abs(_components(pc) - _components(tc))
      if n_t == 0:
        false_positive |= n_p > 0
        continue
      tp = int((pc & tc).sum())
      dice_c[i, j] = 2 * tp / (n_p + n_t)
      iou_c[i, j] = tp / (n_p + n_t - tp)
      if (hd95 or nsd) and n_p > 0:
        hd, nsd_c[i, j] = seg_metrics.surface_scores(pc, tc, tolerance=nsd_tolerance)
        hd_c[i, j] = hd if hd95 else np.nan
      elif nsd:
        nsd_c[i, j] = 0.0  # The truth has the class, the prediction does not.
    if not nsd:
      nsd_c[i] = np.nan
    fp_images += int(false_positive)
  return {
    "dice": _nanmean_rows(dice_c),
    "iou": _nanmean_rows(iou_c),
    "hd95": _nanmean_rows(hd_c),
    "nsd": _nanmean_rows(nsd_c),
    "betti0_error": betti,
    "dice_per_class": dice_c,
    "iou_per_class": iou_c,
    "nsd_per_class": nsd_c,
    "fg_pixels_pred": fg_pred,
    "valid_pixels": valid_px,
    "fp_images": fp_images,
  }


def collapse(per_image: dict) -> str | None:
  """``'no foreground'``, ``'foreground everywhere'`` or ``None`` for a run's predictions.

  No foreground: not one foreground pixel predicted on the whole split. Everywhere: foreground
  on at least :data:`EVERYWHERE_FRACTION` of the valid pixels of the split.
  """
  pred, valid = float(np.sum(per_image["fg_pixels_pred"])), float(np.sum(per_image["valid_pixels"]))
  if pred == 0:
    return "no foreground"
  if valid > 0 and pred >= EVERYWHERE_FRACTION * valid:
    return "foreground everywhere"
  return None


def threshold_free(probs, labels, *, num_thresholds: int = 1001) -> dict:
  r"""The foreground probabilities of a binary run, without the 0.5 threshold.

  Pooled over the valid pixels of the split (labels 0 or 1; others are ignored):

  * ``auprc``: area under the precision-recall curve, as average precision
    :math:`\sum_n (R_n - R_{n-1}) P_n` over the distinct scores in decreasing order (scikit-learn's
    ``average_precision_score``); the foreground share is the value of an uninformative model.
  * ``dice_at_0.5``: pooled Dice of ``p > 0.5`` (what the trainer reports for one sigmoid
    channel or two softmax channels).
  * ``best_dice``, ``best_threshold``: the highest pooled Dice of ``p > t`` over
    ``num_thresholds`` evenly spaced ``t`` in [0, 1], and the ``t`` giving it (the smallest if
    several do).

  Args:
    probs: foreground probabilities ``(images, *spatial)`` in [0, 1].
    labels: true class maps of the same shape, classes 0 and 1.
    num_thresholds: thresholds scanned for ``best_dice``.

  Returns:
    ``{'auprc', 'dice_at_0.5', 'best_dice', 'best_threshold', 'foreground_share'}`` (floats;
    ``auprc`` NaN without foreground in the truth).
  """
  p, t = np.asarray(probs, np.float64), np.asarray(labels)
  if p.shape != t.shape:
    raise ValueError(f"threshold_free: probs {p.shape} and labels {t.shape} differ in shape.")
  valid = (t == 0) | (t == 1)
  p, y = p[valid], t[valid] == 1
  if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
    raise ValueError("threshold_free: probs must be finite probabilities in [0, 1].")
  pos = int(y.sum())
  order = np.argsort(-p, kind="stable")
  ps, ys = p[order], y[order]
  tp = np.cumsum(ys)
  # Average precision over the distinct scores: the last index of every run of equal scores.
  last = np.r_[np.flatnonzero(np.diff(ps) != 0), ps.size - 1] if ps.size else np.array([], int)
  if pos:
    recall = tp[last] / pos
    precision = tp[last] / (last + 1)
    auprc = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
  else:
    auprc = float("nan")
  thresholds = np.linspace(0.0, 1.0, int(num_thresholds))
  # Pixels above threshold t: those with p > t; TP(t) from the sorted cumulative sum.
  above = np.searchsorted(-ps, -thresholds, side="left")  # count of ps > t
  tp_t = np.where(above > 0, tp[np.maximum(above - 1, 0)], 0)
  den = above + pos
  dice_t = np.where(den > 0, 2 * tp_t / np.maximum(den, 1), 1.0)
  k = int(np.argmax(dice_t))
  at_half = int(np.sum(ps > 0.5))
  tp_half = int(tp[at_half - 1]) if at_half else 0
  dice_half = 2 * tp_half / (at_half + pos) if at_half + pos else 1.0
  return {
    "auprc": auprc,
    "dice_at_0.5": float(dice_half),
    "best_dice": float(dice_t[k]),
    "best_threshold": float(thresholds[k]),
    "foreground_share": pos / p.size if p.size else float("nan"),
  }
