r"""Tversky and focal Tversky losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses._common import check_number, check_region_options, safe_divide
from seg_jax.losses.dice import overlap_loss
from seg_jax.losses.registry import register


def tversky_index(inter, pred, target, *, alpha, beta, smooth) -> jax.Array:
  r"""``(TP + s) / (TP + alpha FP + beta FN + s)`` from ``(I, P, G)``; 1 for 0/0.

  ``FP = P - I`` and ``FN = G - I`` are sums of non-negative terms (``sum w p (1 - g)`` and
  ``sum w (1 - p) g``), so they are not clamped at 0: rounding can only make them off by a few
  ulp of ``P`` or ``G``. Every clamp tried here (``maximum``, ``abs``, ``where``, a clamp under
  ``stop_gradient``) made the gradient 4-5x slower on XLA CPU at (2, 64, 64, 64, 3), and none
  changed it at (8, 256, 256, 4). The cause was XLA recomputing the statistics' cotangents in
  the loop that assembles the gradient (see :func:`seg_jax.losses.dice._own_loop`, which now
  prevents it: with it a ``maximum`` clamp costs nothing, measured), but no clamp is needed.
  """
  fp = pred - inter
  fn = target - inter
  return safe_divide(inter + smooth, inter + alpha * fp + beta * fn + smooth, empty=1.0)


def _safe_power(base: jax.Array, exponent) -> jax.Array:
  """``max(base, 0) ** exponent`` with a finite gradient (0) at ``base == 0``; NaN stays NaN."""
  # Tested as ``base <= 0`` (not ``base > 0``) so that a NaN base is powered, giving NaN, instead
  # of being replaced by 0, the loss's optimum.
  zero = base <= 0
  return jnp.where(zero, 0.0, jnp.where(zero, 1.0, base) ** exponent)


def _check_alpha_beta(alpha, beta, *, loss: str) -> None:
  check_number("alpha", alpha, loss=loss)
  check_number("beta", beta, loss=loss)


@register("tversky")
def tversky_loss(
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
  alpha: float = 0.5,
  beta: float = 0.5,
) -> jax.Array:
  r"""Tversky loss (Salehi et al. 2017), averaged over classes.

  Per class :math:`c`, with soft true positives :math:`TP_c = \sum_i w_i p_{ic} g_{ic}`, false
  positives :math:`FP_c = \sum_i w_i p_{ic} (1 - g_{ic})` and false negatives
  :math:`FN_c = \sum_i w_i (1 - p_{ic}) g_{ic}` over the pixels of one image
  (``per_image=True``) or of the whole batch (``per_image=False``):

  .. math::
    TI_c = \frac{TP_c + s}{TP_c + \alpha\, FP_c + \beta\, FN_c + s}, \qquad \ell_c = 1 - TI_c.

  Convention: ``alpha`` weighs the false positives and ``beta`` the false negatives (as in
  Salehi et al., MONAI and optax; some code swaps them). ``beta > alpha`` favours recall, as
  for small lesions. ``alpha = beta = 0.5`` is the dice loss with smoothing ``2 s``
  (:math:`TI = (2TP + 2s)/(2TP + FP + FN + 2s)`); ``alpha = beta = 1`` is the Jaccard loss.

  The loss is the ``class_weights``-weighted mean of :math:`\ell_c` over the counted classes,
  then the mean over images. Empty ground truth: :math:`TI_c = s / (\alpha P_c + s)`, 1 (loss 0)
  if the prediction is empty too, about 0 otherwise (for ``alpha > 0``); 0/0 counts as 1;
  ``ignore_empty=True`` leaves such classes out. Images with no kept pixel are left out of the
  mean over images.

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
    include_background: False leaves channel 0 out of the class mean (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image then averaged, or (False) pooled over the batch.
    smooth: :math:`s \ge 0`, added to numerator and denominator.
    ignore_empty: leave classes with empty ground truth out of the class mean.
    alpha: weight :math:`\ge 0` of the false positives.
    beta: weight :math:`\ge 0` of the false negatives.

  Returns:
    float32 scalar in :math:`[0, 1]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Salehi, Erdogmus, Gholipour. "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", MLMI 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import tversky_loss
    >>> probs = jnp.array([[0.0, 0.9, 0.9, 0.0]])[..., None]
    >>> labels = jnp.array([[0, 1, 1, 0]])
    >>> # TP = 1.8, FP = 0, FN = 0.2: 1 - 1.8 / (1.8 + 0.7 * 0.2) = 0.0722
    >>> loss = tversky_loss(probs, labels, from_logits=False, smooth=0.0, alpha=0.3, beta=0.7)
    >>> print(f"{loss:.4f}")
    0.0722
  """
  name = "tversky"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  _check_alpha_beta(alpha, beta, loss=name)

  def per_class(inter, pred, target):
    return 1.0 - tversky_index(inter, pred, target, alpha=alpha, beta=beta, smooth=smooth)

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
  )


@register("focal_tversky")
def focal_tversky_loss(
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
  alpha: float = 0.3,
  beta: float = 0.7,
  gamma: float = 0.75,
) -> jax.Array:
  r"""Focal Tversky loss (Abraham & Khan 2019), averaged over classes.

  .. math::
    \ell_c = (1 - TI_c)^{\gamma}, \qquad
    TI_c = \frac{TP_c + s}{TP_c + \alpha\, FP_c + \beta\, FN_c + s},

  with the Tversky index of :func:`tversky_loss` (``alpha`` weighs false positives, ``beta``
  false negatives), then the ``class_weights``-weighted mean over the counted classes and the
  mean over images.

  Parameterisation: here ``gamma`` is the exponent itself. The paper writes
  :math:`(1 - TI)^{1/\gamma}` and recommends :math:`\gamma = 4/3`, i.e. exponent ``0.75`` here
  (the default), with its :math:`\alpha = 0.7` on false negatives and :math:`0.3` on false
  positives, i.e. ``alpha=0.3, beta=0.7`` here (the defaults). ``gamma = 1`` is
  :func:`tversky_loss`. An exponent below 1 (the paper's choice) makes the loss concave in
  :math:`1 - TI`: compared with the Tversky loss it gives classes that are already well
  segmented (:math:`TI` near 1) a larger loss and gradient, and poorly segmented ones a smaller
  gradient; ``gamma > 1`` does the opposite, like the focal loss's down-weighting of easy
  examples. The gradient of :math:`x^\gamma` is unbounded at :math:`x = 0` for ``gamma < 1``;
  at exactly :math:`1 - TI = 0` it is taken as 0, so values and gradients stay finite.

  Conventions for empty ground truth, ``ignore_empty``, ignored pixels and ``per_image`` are
  those of :func:`tversky_loss`.

  Args:
    logits: ``(batch, *spatial, C)`` scores (1-3 spatial dims); probabilities if
      ``from_logits=False``.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or None (from the channel count).
    from_logits: False if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value to ignore (integer class maps).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis to ``psum`` over inside ``shard_map``/``pmap``.
    include_background: False leaves channel 0 out of the class mean (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image then averaged, or (False) pooled over the batch.
    smooth: :math:`s \ge 0`, added to numerator and denominator of :math:`TI`.
    ignore_empty: leave classes with empty ground truth out of the class mean.
    alpha: weight :math:`\ge 0` of the false positives.
    beta: weight :math:`\ge 0` of the false negatives.
    gamma: exponent :math:`> 0` applied to :math:`1 - TI_c` (the paper's :math:`1/\gamma`).

  Returns:
    float32 scalar in :math:`[0, 1]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Abraham, Khan. "A Novel Focal Tversky loss function with improved Attention U-Net for
    lesion segmentation", ISBI 2019.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import focal_tversky_loss
    >>> probs = jnp.array([[0.0, 0.9, 0.9, 0.0]])[..., None]
    >>> labels = jnp.array([[0, 1, 1, 0]])
    >>> # 1 - TI = 0.14 / 1.94 = 0.07216..., to the power 0.75
    >>> print(f"{focal_tversky_loss(probs, labels, from_logits=False, smooth=0.0):.4f}")
    0.1392
  """
  name = "focal_tversky"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  _check_alpha_beta(alpha, beta, loss=name)
  check_number("gamma", gamma, loss=name, strict=True)

  def per_class(inter, pred, target):
    ti = tversky_index(inter, pred, target, alpha=alpha, beta=beta, smooth=smooth)
    return _safe_power(1.0 - ti, gamma)

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
  )
