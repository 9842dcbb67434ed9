"""Float64 NumPy building blocks for the reference implementations in the tests.

Written from the formulas, independent of seg_jax. Each test module builds its loss reference
from these.
"""

import numpy as np
from scipy import ndimage


def sigmoid(x):
  x = np.asarray(x, np.float64)
  return np.where(
    x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
  )


def log_sigmoid(x):
  x = np.asarray(x, np.float64)
  return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = x.max(axis, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


def softmax(x, axis=-1):
  return np.exp(log_softmax(x, axis))


def one_hot(labels, num_classes):
  labels = np.asarray(labels)
  return (labels[..., None] == np.arange(num_classes)).astype(np.float64)


def pixel_weights(labels, num_classes, mask=None, ignore_index=None, binary=False):
  """Weight per pixel for an integer class map: mask x (label valid and not ignored)."""
  labels = np.asarray(labels)
  upper = 2 if binary else num_classes
  valid = (labels >= 0) & (labels < upper)
  if ignore_index is not None:
    valid &= labels != ignore_index
  w = valid.astype(np.float64)
  if mask is not None:
    w = w * np.asarray(mask, np.float64)
  return w


def random_case(rng, spatial, channels, batch=2, scale=3.0):
  """Random logits (float32) and integer labels for a (batch, *spatial, channels) problem."""
  logits = (scale * rng.standard_normal((batch, *spatial, channels))).astype(np.float32)
  labels = rng.integers(0, max(channels, 2), size=(batch, *spatial)).astype(np.int32)
  return logits, labels


def pixel_ce(logits, labels, mode):
  """Per-pixel cross-entropy, float64 ``(batch, *spatial)``: softmax CE (multiclass), else the
  channel mean of the sigmoid CE; integer labels are one-hot (binary: the map itself)."""
  x = np.asarray(logits, np.float64)
  y = np.asarray(labels)
  if mode == "multiclass":
    g = one_hot(np.clip(y, 0, x.shape[-1] - 1), x.shape[-1]) if y.ndim < x.ndim else y
    return -(g * log_softmax(x)).sum(-1)
  g = np.clip(y, 0, 1)[..., None].astype(np.float64) if y.ndim < x.ndim else y
  return -(g * log_sigmoid(x) + (1 - g) * log_sigmoid(-x)).mean(-1)


def top_fraction_mean(values, weights, fraction):
  """Mean of the largest values holding ``fraction`` of the total weight (float64, by sorting).

  Values are taken in decreasing order with their weights until the weight ``K = fraction *
  sum(weights)`` is reached; the last one counts with the part of its weight that completes
  ``K``. Returns ``sum(selected weight * value) / K`` (0 when ``K`` is 0).
  """
  v = np.asarray(values, np.float64).ravel()
  w = np.asarray(weights, np.float64).ravel()
  k = fraction * w.sum()
  if k <= 0:
    return 0.0
  order = np.argsort(-v, kind="stable")
  v, w = v[order], w[order]
  before = np.concatenate([[0.0], np.cumsum(w)[:-1]])
  take = np.clip(k - before, 0.0, w)
  return float((take * v).sum() / k)


def semimetric_intersection(p, g, w, axes):
  """Wang & Blaschko's soft intersection ``(|p|_1 + |g|_1 - |p - g|_1) / 2`` with pixel weights.

  ``p`` and ``g`` are ``(batch, *spatial, C)``, ``w`` is ``(batch, *spatial)``; the weighted
  L1 norms are summed over ``axes``, giving one value per class (float64).
  """
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  w = np.asarray(w, np.float64)[..., None]
  return 0.5 * ((w * p).sum(axes) + (w * g).sum(axes) - (w * np.abs(p - g)).sum(axes))


def confusion_counts(p, g, w, axes):
  """Soft weighted ``(TP, FP, FN, TN)`` per class, summed over ``axes`` (float64).

  ``p``, ``g`` ``(batch, *spatial, C)``; ``w`` ``(batch, *spatial)``.
  """
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  w = np.asarray(w, np.float64)[..., None]
  return tuple((w * a * b).sum(axes) for a, b in ((p, g), (p, 1 - g), (1 - p, g), (1 - p, 1 - g)))


def mcc(tp, fp, fn, tn):
  """Matthews correlation coefficient from the four counts (float64, no smoothing)."""
  return (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def cross_boundary(foreground):
  """Boundary of a 0/1 ``(batch, *spatial)`` map, by loops over the pixels: a foreground pixel
  with a face neighbour (+-1 along one spatial axis) that is background or outside the image."""
  f = np.asarray(foreground, bool)
  out = np.zeros(f.shape, bool)
  for idx in np.argwhere(f):
    for axis in range(1, f.ndim):
      for step in (-1, 1):
        j = idx.copy()
        j[axis] += step
        if not 0 <= j[axis] < f.shape[axis] or not f[tuple(j)]:
          out[tuple(idx)] = True
  return out


def boundary_dou_alpha(boundary_count, area, s=1e-5, max_alpha=0.8):
  """Sun et al.'s alpha: ``min(1 - 2 (C + s) / (S + s), max_alpha)``."""
  return min(1 - 2 * (boundary_count + s) / (area + s), max_alpha)


def boundary_dou(p, g, alpha, s=1e-5):
  """Boundary DoU of one class with soft sums (Sun et al.'s code; float64):
  ``(Z + Y - 2 I + s) / (Z + Y - (1 + alpha) I + s)``, ``I = sum p g``, ``Y = sum g^2``,
  ``Z = sum p^2`` over the given pixels."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  i, y, z = (p * g).sum(), (g * g).sum(), (p * p).sum()
  return (z + y - 2 * i + s) / (z + y - (1 + alpha) * i + s)


def soft_skeleton(img, num_iter, domain):
  """Soft skeleton of one image ``img`` (spatial dims only); ``domain`` = pixels inside."""
  cross = ndimage.generate_binary_structure(img.ndim, 1)

  def erode(t):
    out = ndimage.minimum_filter(
      np.where(domain, t, np.inf), footprint=cross, mode="constant", cval=np.inf
    )
    return np.where(domain, out, 0.0)

  def dilate(t):
    out = ndimage.maximum_filter(
      np.where(domain, t, -np.inf), size=3, mode="constant", cval=-np.inf
    )
    return np.where(domain, out, 0.0)

  def relu(t):
    return np.maximum(t, 0.0)

  img = np.where(domain, np.asarray(img, np.float64), 0.0)
  skel = relu(img - dilate(erode(img)))
  for _ in range(num_iter):
    img = erode(img)
    delta = relu(img - dilate(erode(img)))
    skel = skel + relu(delta - skel * delta)
  return skel


def cross_dilate(mask, times, domain):
  """``times`` binary dilations of ``mask`` by the cross (connectivity 1) inside ``domain``."""
  cross = ndimage.generate_binary_structure(mask.ndim, 1)
  out = np.asarray(mask, bool) & domain
  for _ in range(times):
    out = ndimage.binary_dilation(out, cross) & domain
  return out


def skeleton_recall(
  probs,
  tube,
  weights,
  *,
  foreground,
  per_image=False,
  smooth=1e-5,
  class_weights=None,
  ignore_empty=False,
):
  """Skeleton Recall loss from Kirchhoff et al.'s formula, float64.

  ``probs`` and ``tube`` (B, *spatial, C), ``weights`` (B, *spatial) pixel weights, ``foreground``
  the channels of the class mean. Recall per class ``(sum w p S + s) / (sum w S + s)`` (0/0 = 1),
  loss ``1 - weighted mean`` over the classes; per image then averaged over images with kept
  pixels, or pooled over the batch.
  """
  p = np.asarray(probs, np.float64)
  t = np.asarray(tube, np.float64)
  w = np.asarray(weights, np.float64)[..., None]
  lam = np.ones(p.shape[-1]) if class_weights is None else np.asarray(class_weights, np.float64)
  lam = np.where(np.isin(np.arange(p.shape[-1]), foreground), lam, 0.0)

  def one(pp, tt, ww):
    axes = tuple(range(pp.ndim - 1))
    num, den = (ww * pp * tt).sum(axes) + smooth, (ww * tt).sum(axes) + smooth
    rec = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    lw = lam * ((ww * tt).sum(axes) > 0) if ignore_empty else lam
    if lw.sum() == 0 or ww.sum() == 0:
      return None
    return 1.0 - (lw * rec).sum() / lw.sum()

  if not per_image:
    v = one(p, t, w)
    return 0.0 if v is None else v
  vals = [one(p[i], t[i], w[i]) for i in range(p.shape[0])]
  vals = [v for v in vals if v is not None]
  return float(np.mean(vals)) if vals else 0.0


def blobs(rng, shape, channels):
  """Labels with thick and thin structures (smoothed noise thresholded into classes)."""
  noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0, axes=range(1, len(shape)))
  q = np.quantile(noise, np.linspace(0, 1, channels + 1)[1:-1])
  return np.searchsorted(q, noise).astype(np.int32)


def surface_points(mask, spacing):
  """Physical coordinates of foreground pixels with a background or outside face neighbour."""
  mask = np.asarray(mask, bool)
  points = []
  for index in zip(*np.nonzero(mask), strict=True):
    on_surface = False
    for axis in range(mask.ndim):
      for step in (-1, 1):
        n = list(index)
        n[axis] += step
        if not 0 <= n[axis] < mask.shape[axis] or not mask[tuple(n)]:
          on_surface = True
    if on_surface:
      points.append(np.asarray(index, np.float64) * spacing)
  return np.array(points)


def directed_surface_distances(a, b, spacing):
  """Distances from every surface point of ``a`` to the nearest of ``b`` and vice versa."""
  spacing = np.asarray(spacing, np.float64)
  pa, pb = surface_points(a, spacing), surface_points(b, spacing)
  pairwise = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
  return pairwise.min(1), pairwise.min(0)


def surface_dice(a, b, spacing, tolerance):
  """Normalised surface Dice from its definition (Nikolov et al. 2021, one weight per surface
  pixel): the share of both surfaces within ``tolerance`` of the other; NaN if both masks are
  empty, 0 if one is."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if not a.any() and not b.any():
    return np.nan
  if not a.any() or not b.any():
    return 0.0
  d_ab, d_ba = directed_surface_distances(a, b, spacing)
  return (np.sum(d_ab <= tolerance) + np.sum(d_ba <= tolerance)) / (len(d_ab) + len(d_ba))
