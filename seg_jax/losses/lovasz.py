r"""Lovasz hinge and Lovasz-Softmax losses (Berman, Rannen Triki, Blaschko, CVPR 2018).

The Lovasz extension of the Jaccard loss :math:`\Delta_J` turns a vector of per-pixel errors
:math:`m \in \mathbb{R}^N_{\ge 0}` into a convex surrogate of :math:`1 - \mathrm{IoU}`:

.. math::

  \bar\Delta_J(m) = \sum_{i=1}^{N} m_{\pi(i)}\, \big(J_i - J_{i-1}\big),\qquad
  J_i = 1 - \frac{G - \sum_{k \le i} g_{\pi(k)}}{G + \sum_{k \le i} (1 - g_{\pi(k)})},\quad J_0 = 0,

where :math:`\pi` sorts the errors in decreasing order, :math:`g` is the ground truth of the class
and :math:`G = \sum_i g_i` (Algorithm 1 of the paper). The cost is one sort: :math:`O(N \log N)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seg_jax.losses._common import (
  _psum,
  check_class_vector,
  check_flag,
  check_region_options,
  class_mean,
  prepare,
  probabilities,
  reduce_images,
  safe_divide,
)
from seg_jax.losses.registry import register

_NAME = "lovasz"


# Rows longer than this are sorted with the index as a second sort operand instead of packed
# into the key (the packed index has 32 bits; ``perm`` is int32).
_PACKED_SORT_MAX = 2**31 - 1


def _descending_keys(errors: jax.Array, kept: jax.Array) -> jax.Array:
  """uint32 keys whose ascending order is the kept errors' descending order, ignored ones last.

  The float32 bit pattern mapped to an unsigned integer of the same order (negative floats
  flipped, the sign bit set for the others), then complemented for the descending order; ignored
  pixels get the largest key. Exact: no rounding, every float keeps its own key.
  """
  bits = lax.bitcast_convert_type(errors, jnp.uint32)
  ascending = jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))
  return jnp.where(kept > 0, ~ascending, jnp.uint32(0xFFFFFFFF))


def _argsort(keys: jax.Array) -> jax.Array:
  """Stable argsort of uint32 ``keys`` along the last axis, as int32 indices.

  One single-operand sort of 64-bit words ``key << 32 | index``: XLA CPU sorts a single operand
  with a built-in comparison (``std::stable_sort``), several times faster than a sort with the
  index as a second operand, which calls a compiled comparator per comparison (measured 5x on
  ``(4, 524288)``; BENCHMARKS.md). The 64-bit words live only inside this function (64-bit
  types are enabled for it alone); the index makes every word distinct and breaks ties in the
  original order, so the permutation equals a stable argsort of ``keys``.
  """
  axis = keys.ndim - 1
  n = keys.shape[axis]
  if n > _PACKED_SORT_MAX:
    iota = lax.broadcasted_iota(jnp.int32, keys.shape, axis)
    return lax.sort((keys, iota), dimension=axis, num_keys=1)[1]
  with jax.enable_x64(True):
    index = lax.broadcasted_iota(jnp.uint64, keys.shape, axis)
    words = lax.sort((keys.astype(jnp.uint64) << 32) | index, dimension=axis)
    return (words & jnp.uint64(0xFFFFFFFF)).astype(jnp.int32)


def _sorted_lovasz_gradient(
  errors: jax.Array, gt: jax.Array, kept: jax.Array
) -> tuple[jax.Array, jax.Array]:
  r"""Sort order of the errors and the Lovasz gradient of the Jaccard loss in that order.

  Args:
    errors: ``(..., N)`` errors; only their order is used (no gradient flows through here).
    gt: ``(..., N)`` ground truth in ``[0, 1]``.
    kept: ``(..., N)`` 1.0 for kept pixels, 0.0 for ignored ones.

  Returns:
    ``(perm, grad)``, both ``(..., N)``: ``perm`` sorts the kept errors in decreasing order
    (ties in their original order) followed by the ignored pixels, and
    ``grad[i] = J_i - J_{i-1}`` for the first ``K`` (number of kept pixels) positions, 0 after.
    ``sum(errors[perm] * grad)`` is the Lovasz extension over the kept pixels only. The kept
    pixels fill the first ``K`` sorted positions, so there the kept count of the prefix is
    ``i`` and the union is :math:`G + i - \sum_{k \le i} g_{\pi(k)}`: one cumulative sum.
    One sort and one gather along the last axis: :math:`O(N \log N)` time, :math:`O(N)` memory.
  """
  errors, gt, kept = (lax.stop_gradient(t) for t in (errors, gt, kept))
  axis = errors.ndim - 1
  perm = _argsort(_descending_keys(errors, kept))
  g_kept = gt * kept
  g_sorted = jnp.take_along_axis(g_kept, perm, axis=axis)
  total = g_kept.sum(axis, keepdims=True)
  n_kept = (kept > 0).sum(axis, keepdims=True, dtype=jnp.int32)
  position = lax.broadcasted_iota(jnp.int32, errors.shape, axis)
  g_prefix = jnp.cumsum(g_sorted, axis)
  intersection = total - g_prefix
  union = total + (position + 1).astype(jnp.float32) - g_prefix
  # union >= 1 at every kept position (i >= 1 pixels, of which at most G in the ground truth).
  jaccard = 1.0 - safe_divide(intersection, union)
  grad = jnp.diff(jaccard, axis=axis, prepend=jnp.zeros_like(jaccard[..., :1]))
  return perm, jnp.where(position < n_kept, grad, 0.0)


@register(_NAME)
def lovasz_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  include_background: bool = True,
  class_weights: jax.Array | None = None,
  per_image: bool = False,
  ignore_empty: bool | None = None,
) -> jax.Array:
  r"""Lovasz hinge (binary/multilabel) or Lovasz-Softmax (multiclass) loss.

  For each class :math:`c` with errors :math:`m^c` sorted in decreasing order by
  :math:`\pi` and :math:`J^c_i` the Jaccard loss of the first :math:`i` sorted pixels
  (module docstring),

  .. math::

    \ell_c = \sum_i m^c_{\pi(i)} \big(J^c_i - J^c_{i-1}\big), \qquad
    m^c_i = \begin{cases}
      \max(0,\ 1 - z_i (2 g_i - 1)) & \text{binary / multilabel (hinge on the logit } z)\\
      |g_{i,c} - p_{i,c}| & \text{multiclass (softmax probabilities } p)
    \end{cases}

  and the loss is the class mean of :math:`\ell_c`.

  Conventions:

  * Binary: the Lovasz hinge of Berman's ``lovasz_hinge`` on the one-channel logit.
    Multilabel: the hinge per channel, averaged over the channels (``class_weights`` weigh them).
    With ``from_logits=False`` the probabilities are turned back into logits
    :math:`z = \log p - \log(1 - p)` (``p`` clipped to ``[1e-7, 1 - 1e-7]``), so the hinge sees
    the same margin as with logits.
  * Multiclass: Berman's ``lovasz_softmax`` with ``classes='present'``: the mean is over the
    classes present in the (kept) ground truth of the image (``per_image``) or of the batch.
    This is ``ignore_empty=True``, the default for multiclass (``ignore_empty=None``); pass
    ``ignore_empty=False`` for Berman's ``classes='all'``. In binary/multilabel mode the default
    is ``ignore_empty=False``: an image without foreground still gets the hinge loss of its
    largest background error, as in Berman's ``lovasz_hinge``.
  * ``per_image=False`` (default) pools all pixels of the batch into one sorted list per class
    (Berman's ``per_image=False``); ``per_image=True`` computes the loss per image and averages
    over the images with at least one kept pixel (and, multiclass, at least one present class).
    Berman's ``per_image=True`` averages over all images, counting an all-ignored or class-free
    image as 0; here such an image leaves the mean, as in every region loss of this package, so
    the two agree when every image has kept pixels and a present class.
  * No ``smooth`` option: the Lovasz extension has no ratio to smooth (an empty ground truth
    gives a finite hinge or a class left out, above).
  * Masks: ``mask > 0`` marks a kept pixel; continuous mask values do **not** weigh the pixels
    (the Lovasz extension is defined on sets). Ignored pixels (mask 0, ``ignore_index``, invalid
    labels) drop out exactly: they sort after every kept pixel and get weight 0, so the value
    equals that of the loss on the kept pixels alone.
  * Dense soft labels are accepted and used as :math:`g` in the formulas above (the hinge sign
    becomes :math:`2g - 1`); presence of a class means :math:`\sum g > 0`.
  * No ``smooth``: the Jaccard ratios of the kept pixels are never 0/0 (the union is at least
    1 after the first kept pixel).
  * ``axis_name`` with ``per_image=False``: the sort needs every pixel of the global batch, so
    the sort keys and labels (not the gradients) are ``all_gather``-ed over ``axis_name`` and
    every device sorts the whole global batch (memory and time of the global batch per device),
    then each device keeps the weights of its own pixels and the per-class sums are ``psum``-ed:
    the value equals the single-device value on the global batch. With ``per_image=True`` only
    the image mean is ``psum``-ed.

  Args:
    logits: ``(batch, *spatial, channels)`` logits (probabilities if ``from_logits=False``).
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or ``None`` (from the channel count).
    from_logits: ``False`` if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)``; pixels with ``mask > 0`` are kept.
    ignore_index: label value of ignored pixels (integer class maps only).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis name(s) inside ``shard_map``/``pmap`` for global-batch statistics.
    include_background: in multiclass mode, ``False`` leaves channel 0 out of the class mean.
    class_weights: optional ``(channels,)`` weights of the class mean.
    per_image: loss per image then averaged (``True``) or pooled over the batch (``False``).
    ignore_empty: leave classes with empty ground truth out of the mean; ``None`` means
      ``True`` for multiclass (Berman's ``classes='present'``) and ``False`` otherwise.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``. 0 when nothing is kept or (with
    ``ignore_empty``) no class is present.

  References:
    M. Berman, A. Rannen Triki, M. B. Blaschko. "The Lovasz-Softmax loss: A tractable surrogate
    for the optimization of the intersection-over-union measure in neural networks", CVPR 2018.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import lovasz_loss
    >>> logits = jnp.array([[[2.0], [-1.0], [0.5]]])  # (batch=1, length=3, channels=1)
    >>> labels = jnp.array([[1, 0, 0]])
    >>> round(float(lovasz_loss(logits, labels)), 4)  # errors [-1, 0, 1.5]: 1.5 * (1 - 1/2)
    0.75
  """
  check_region_options(
    loss=_NAME,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
  )
  if ignore_empty is not None:
    check_flag("ignore_empty", ignore_empty, loss=_NAME)
  if ignore_empty is not None and not isinstance(ignore_empty, bool):
    raise TypeError(f"{_NAME}: ignore_empty must be None, True or False, got {ignore_empty!r}.")
  x = prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=_NAME,
  )
  cw = check_class_vector("class_weights", class_weights, x.num_classes, loss=_NAME)
  if ignore_empty is None:
    ignore_empty = x.mode == "multiclass"

  g = x.targets
  if x.mode == "multiclass":
    errors = jnp.abs(g - probabilities(x))
  else:
    if x.from_logits:
      z = x.scores
    else:
      z = jnp.log(x.scores) - jnp.log1p(-x.scores)
    errors = jax.nn.relu(1.0 - z * (2.0 * g - 1.0))
  kept = (x.weights > 0).astype(jnp.float32)
  kept_c = jnp.broadcast_to(kept[..., None], g.shape)

  # Channels first, pixels last: (batch, C, M) per image, (C, N) pooled.
  batch, c = g.shape[0], g.shape[-1]

  def to_rows(t):
    if per_image:
      return jnp.moveaxis(t.reshape(batch, -1, c), 1, 2)
    return t.reshape(-1, c).T

  e_rows, g_rows, k_rows = to_rows(errors), to_rows(g), to_rows(kept_c)
  present = (g_rows * k_rows).sum(-1)

  if per_image or axis_name is None:
    perm, grad = _sorted_lovasz_gradient(e_rows, g_rows, k_rows)
    values = (jnp.take_along_axis(e_rows, perm, axis=-1) * grad).sum(-1)
  else:
    # Every device sorts the global batch; it keeps the weights of its own pixels (the Lovasz
    # gradient put back in the original order) and the per-class sums are psum-ed.
    n_local = e_rows.shape[-1]
    gathered = [
      lax.all_gather(lax.stop_gradient(t), axis_name, axis=1, tiled=True)
      for t in (e_rows, g_rows, k_rows)
    ]
    perm, grad = _sorted_lovasz_gradient(*gathered)
    w_all = jnp.put_along_axis(jnp.zeros_like(grad), perm, grad, axis=-1, inplace=False)
    start = lax.axis_index(axis_name) * n_local
    w = lax.dynamic_slice_in_dim(w_all, start, n_local, axis=1)
    values = _psum((e_rows * w).sum(-1), axis_name)
    present = _psum(present, axis_name)

  loss, counted = class_mean(
    values,
    present,
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  return reduce_images(
    loss, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
