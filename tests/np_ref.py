"""Float64 NumPy building blocks for the reference implementations in the tests.

Written from the formulas, independent of seg_jax. Each test module builds its loss reference
from these.
"""

import numpy as np


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
