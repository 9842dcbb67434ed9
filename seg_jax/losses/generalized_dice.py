r"""Generalized dice loss (Sudre et al. 2017)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses._common import (
  check_class_vector,
  check_region_options,
  prepare,
  reduce_images,
  safe_divide,
)
from seg_jax.losses.dice import overlap_sums
from seg_jax.losses.registry import register


def sudre_weights(
  target: jax.Array,
  *,
  mode: str,
  include_background: bool,
  ignore_empty: bool,
) -> tuple[jax.Array, jax.Array]:
  r"""Class weights ``(..., C)`` proportional to ``1 / G_c**2``, scaled so the largest is 1.

  ``w_c = (G_min / G_c)^2`` for a class present in the ground truth (``G_c > 0``), ``G_min``
  being the smallest present ``G``; an absent class gets the largest weight of the present
  classes (1), or 0 with ``ignore_empty``; the background channel 0 gets 0 in multiclass mode
  without ``include_background``. With no included class present every weight is 0.

  Returns:
    ``(weights, any_present)``, the second ``(...)`` float 1.0/0.0.
  """
  c = target.shape[-1]
  included = jnp.ones((c,), bool)
  if mode == "multiclass" and not include_background:
    included = included.at[0].set(False)
  present = (target > 0) & included
  g_min = jnp.min(jnp.where(present, target, jnp.inf), axis=-1, keepdims=True)
  any_present = jnp.any(present, axis=-1)
  ratio = g_min / jnp.where(present, target, 1.0)
  absent_weight = 0.0 if ignore_empty else 1.0
  w = jnp.where(present, ratio * ratio, jnp.where(included, absent_weight, 0.0))
  w = jnp.where(any_present[..., None], w, 0.0)
  return w, any_present.astype(jnp.float32)


@register("generalized_dice")
def generalized_dice_loss(
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
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
) -> jax.Array:
  r"""Generalized dice loss (Sudre et al. 2017): one dice over all classes, weighted by size.

  With the soft statistics :math:`I_c = \sum_i w_i p_{ic} g_{ic}`, :math:`P_c = \sum_i w_i
  p_{ic}`, :math:`G_c = \sum_i w_i g_{ic}` of one image (``per_image=True``) or of the pooled
  batch (``per_image=False``):

  .. math::
    L = 1 - \frac{2 \sum_c \omega_c I_c + s}{\sum_c \omega_c (P_c + G_c) + s}, \qquad
    \omega_c = \kappa_c\, \frac{G_{\min}^2}{G_c^2} \;\propto\; \frac{1}{G_c^2},

  where :math:`\kappa` are the ``class_weights`` (1 by default) and :math:`G_{\min}` is the
  smallest :math:`G_c` among the classes present in the ground truth.

  Conventions:

  * Weights :math:`1/G_c^2` as in Sudre et al., scaled by :math:`G_{\min}^2` so that the largest
    is 1. The scale cancels in the ratio when ``smooth=0``; it makes ``smooth`` act at the scale
    of the smallest present class, as in the dice loss (with raw :math:`1/G^2` weights a smooth
    of 1e-5 would outweigh the terms of any class larger than a few hundred pixels) and keeps
    the weights finite for tiny soft :math:`G_c`.
  * A class absent from the ground truth (:math:`G_c = 0`) gets the largest weight of the
    present classes (:math:`\kappa_c \cdot 1`), as MONAI does, so predicting it is penalised;
    with ``ignore_empty=True`` it gets weight 0 instead.
  * If no (included) class is present, all weights are 0 and the loss is 0 (with
    ``ignore_empty=True`` that image/batch is left out of the mean over images instead).
  * ``include_background=False`` gives channel 0 weight 0 (multiclass mode only).
  * ``per_image=True``: weights from each image's own :math:`G`, one loss per image, then the
    mean over images (images with no kept pixel left out). ``per_image=False`` (default):
    weights and statistics pooled over the whole batch (and over ``axis_name`` devices).

  Args:
    logits: ``(batch, *spatial, C)`` scores (1-3 spatial dims); probabilities if
      ``from_logits=False``.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'`` (1 channel, sigmoid), ``'multiclass'`` (softmax), ``'multilabel'``
      (independent sigmoids) or None (binary for 1 channel, else multiclass).
    from_logits: False if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value to ignore (integer class maps).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis to ``psum`` over inside ``shard_map``/``pmap``.
    include_background: False gives channel 0 weight 0 (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative factors :math:`\kappa_c` on the weights.
    per_image: statistics and weights per image, or (False) pooled over the batch.
    smooth: :math:`s \ge 0`, added to numerator and denominator.
    ignore_empty: absent classes get weight 0 instead of the largest present weight.

  Returns:
    float32 scalar in :math:`[0, 1]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Sudre, Li, Vercauteren, Ourselin, Cardoso. "Generalised Dice overlap as a deep learning loss
    function for highly unbalanced segmentations", DLMIA 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import generalized_dice_loss
    >>> probs = jnp.array([[[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8]]])  # (1, 4, 2)
    >>> labels = jnp.array([[0, 0, 0, 1]])
    >>> # weights (1/3)^2 and 1: 1 - 2 (2.7/9 + 0.8) / ((2.9 + 3)/9 + (1.1 + 1))
    >>> loss = generalized_dice_loss(probs, labels, from_logits=False, smooth=0.0)
    >>> print(f"{loss:.4f}")
    0.2016
  """
  name = "generalized_dice"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  x = prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=name,
  )
  kappa = check_class_vector("class_weights", class_weights, x.num_classes, loss=name)
  inter, pred, target = overlap_sums(x, per_image=per_image, axis_name=axis_name)
  w, any_present = sudre_weights(
    target, mode=x.mode, include_background=include_background, ignore_empty=ignore_empty
  )
  if kappa is not None:
    w = w * kappa
  num = 2.0 * (w * inter).sum(-1) + smooth
  den = (w * (pred + target)).sum(-1) + smooth
  values = 1.0 - safe_divide(num, den, empty=1.0)
  counted = any_present if ignore_empty else jnp.ones_like(values)
  return reduce_images(
    values, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
