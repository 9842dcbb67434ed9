"""Eager validation of integer label maps (on the host; :func:`seg_jax.losses.checked` checks
inside jit)."""

from __future__ import annotations

import numpy as np


def check_labels(labels, num_classes: int, ignore_index: int | None = None) -> None:
  """Raises ValueError if an integer class map holds a value outside ``[0, num_classes)``.

  The plain losses treat such labels as ignored pixels (weight 0), so they never produce NaN but
  silently drop out; :func:`seg_jax.losses.checked` raises on them from inside ``jit``. Call
  this eagerly on host data to catch them before any loss runs.

  Args:
    labels: integer array-like class map (any shape).
    num_classes: number of classes (channels of the logits; 2 for a binary 0/1 map).
    ignore_index: a value allowed besides the classes, marking ignored pixels.

  Raises:
    TypeError: labels are not integers.
    ValueError: a value outside the valid range; the message lists the offending values.
  """
  arr = np.asarray(labels)
  if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
    raise TypeError(f"check_labels: labels must be integers, got dtype {arr.dtype}.")
  values = np.unique(arr)
  bad = values[(values < 0) | (values >= num_classes)]
  if ignore_index is not None:
    bad = bad[bad != ignore_index]
  if bad.size:
    allowed = f"[0, {num_classes})" + (
      f" or ignore_index={ignore_index}" if ignore_index is not None else ""
    )
    shown = ", ".join(map(str, bad[:10].tolist())) + (" ..." if bad.size > 10 else "")
    raise ValueError(
      f"check_labels: labels of shape {arr.shape} hold value(s) {shown} outside {allowed}."
    )
