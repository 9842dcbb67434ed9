r"""Soft Jaccard (intersection-over-union) loss."""

from __future__ import annotations

import jax

from seg_jax.losses._common import check_region_options, safe_divide
from seg_jax.losses.dice import check_soft_labels, overlap_loss
from seg_jax.losses.registry import register


@register("jaccard")
def jaccard_loss(
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
  soft_labels: bool = False,
) -> jax.Array:
  r"""Soft Jaccard (IoU) loss, averaged over classes.

  Per class :math:`c`, with the soft statistics :math:`I_c = \sum_i w_i p_{ic} g_{ic}`,
  :math:`P_c = \sum_i w_i p_{ic}`, :math:`G_c = \sum_i w_i g_{ic}` over the pixels of one image
  (``per_image=True``) or of the whole batch (``per_image=False``):

  .. math::
    J_c = \frac{I_c + s}{P_c + G_c - I_c + s}, \qquad \ell_c = 1 - J_c,

  the soft IoU with the product as intersection and :math:`P + G - I` as union (Rahman & Wang
  2016). The loss is the ``class_weights``-weighted mean of :math:`\ell_c` over the counted
  classes, then the mean over images (``per_image``). It equals
  :func:`~seg_jax.losses.tversky_loss` with ``alpha=beta=1``.

  Conventions (as :func:`~seg_jax.losses.dice_loss`): a class with empty ground truth gives
  :math:`J_c = s / (P_c + s)`: 1 (loss 0) if the prediction is empty too, about 0 (loss about 1)
  otherwise; with ``smooth=0`` the 0/0 case counts as :math:`J_c = 1`. ``ignore_empty=True``
  leaves such classes out of the class mean; images whose pixels are all ignored are left out of
  the mean over images.

  Soft labels (``soft_labels=True``, Wang & Blaschko's Jaccard metric loss): the product
  intersection is replaced by the semimetric one,

  .. math::
    I_c = \tfrac12\Big(P_c + G_c - \sum_i w_i\,|p_{ic} - g_{ic}|\Big), \qquad
    1 - J_c = \frac{2\sum_i w_i |p_{ic} - g_{ic}|}{P_c + G_c + \sum_i w_i |p_{ic} - g_{ic}|}
    \;\text{(for } s = 0),

  a metric on soft labels, 0 exactly at :math:`p = g`; the product form is smallest at a
  sharpened prediction when :math:`g` is soft. Both forms are equal for hard labels; integer class
  maps always use the product form. As MONAI's ``soft_label=True`` (``DiceLoss(jaccard=True)``)
  and segmentation_models_pytorch's soft Jaccard.

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
    axis_name: mapped axis to ``psum`` over inside ``shard_map``/``pmap`` (equals the
      single-device value on the global batch).
    include_background: False leaves channel 0 out of the class mean (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image then averaged, or (False) pooled over the batch.
    smooth: :math:`s \ge 0`, added to numerator and denominator.
    ignore_empty: leave classes with empty ground truth out of the class mean.
    soft_labels: the semimetric intersection for dense soft labels (above); default False.

  Returns:
    float32 scalar in :math:`[0, 1]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Rahman, Wang. "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
    Segmentation", ISVC 2016.
    Wang, Blaschko. "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels",
    NeurIPS 2023 (``soft_labels``).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import jaccard_loss
    >>> probs = jnp.array([[0.0, 0.9, 0.9, 0.0]])[..., None]
    >>> labels = jnp.array([[0, 1, 1, 0]])
    >>> print(f"{jaccard_loss(probs, labels, from_logits=False, smooth=0.0):.4f}")
    0.1000
  """
  name = "jaccard"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  check_soft_labels(soft_labels, squared=False, loss=name)

  def per_class(inter, pred, target):
    return 1.0 - safe_divide(inter + smooth, pred + target - inter + smooth, empty=1.0)

  return overlap_loss(
    logits,
    labels,
    loss=name,
    per_class=per_class,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    reduction=reduction,
    axis_name=axis_name,
    include_background=include_background,
    class_weights=class_weights,
    per_image=per_image,
    ignore_empty=ignore_empty,
    soft_labels=soft_labels,
  )
