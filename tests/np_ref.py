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
