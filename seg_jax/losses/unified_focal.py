r"""Asymmetric Unified Focal loss (Yeung, Sala, Schonlieb, Rundo, CMIG 2022).

A compound of a modified asymmetric focal loss (cross-entropy family) and a modified asymmetric
focal Tversky loss (Dice family), with one parameter set: ``weight`` (:math:`\lambda`),
``delta`` (:math:`\delta`) and ``gamma`` (:math:`\gamma`). "Asymmetric": the background class
gets the focal suppression in the cross-entropy term and the plain Tversky term, the
foreground ("rare") classes get full cross-entropy and the focal enhancement
:math:`(1 - \mathrm{mTI})^{1 - \gamma}` in the Tversky term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses._common import (
  _psum,
  check_class_vector,
  check_region_options,
  check_unit_interval,
  class_mean,
  log_probabilities,
  prepare,
  probabilities,
  reduce_images,
  reduce_pixels,
  safe_divide,
)
from seg_jax.losses.registry import register

_NAME = "unified_focal"


def _power(base: jax.Array, exponent) -> jax.Array:
  """``base ** exponent`` for ``base >= 0`` with a finite (zero) gradient at ``base == 0``.

  ``0 ** 0`` is 1.
  """
  positive = base > 0
  at_zero = jnp.where(exponent > 0, 0.0, 1.0)  # The exponent may be traced.
  return jnp.where(positive, jnp.where(positive, base, 1.0) ** exponent, at_zero)


@register(_NAME)
def unified_focal_loss(
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
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  weight: float = 0.5,
  delta: float = 0.6,
  gamma: float = 0.5,
) -> jax.Array:
  r"""Asymmetric Unified Focal loss, :math:`\lambda L_{maF} + (1-\lambda) L_{maFT}`.

  With class 0 the background, classes :math:`c \ge 1` the foreground, :math:`p_{i,c}` the
  predicted probabilities, :math:`g_{i,c}` the targets and :math:`w_i` the pixel weights:

  .. math::

    L_{maF} = \frac{1}{\sum_i w_i} \sum_i w_i \Big[
      -(1 - \delta)\,(1 - p_{i,0})^{\gamma}\, g_{i,0} \log p_{i,0}
      - \delta \sum_{c \ge 1} g_{i,c} \log p_{i,c} \Big],

  .. math::

    \mathrm{mTI}_c = \frac{TP_c + s}{TP_c + \delta\, FN_c + (1 - \delta)\, FP_c + s},\qquad
    L_{maFT} = \operatorname{mean}_c \begin{cases}
      1 - \mathrm{mTI}_0 & c = 0\\ (1 - \mathrm{mTI}_c)^{1 - \gamma} & c \ge 1 \end{cases}

  with :math:`TP_c = \sum_i w_i p_{i,c} g_{i,c}`, :math:`FN_c = \sum_i w_i (1-p_{i,c}) g_{i,c}`,
  :math:`FP_c = \sum_i w_i p_{i,c} (1 - g_{i,c})`.

  Conventions:

  * Defaults ``weight=0.5, delta=0.6, gamma=0.5`` are the paper's. The paper writes
    :math:`\lambda` on :math:`L_{maF}`; the authors' code puts ``weight`` on the
    Tversky term. We follow the paper; at the default 0.5 they agree.
  * :math:`\delta` weighs false negatives and the foreground cross-entropy (:math:`\delta > 0.5`
    favours recall), as in the authors' code.
  * Binary (one sigmoid channel ``p``): the two classes are background :math:`1 - p` (class 0)
    and foreground :math:`p` (class 1), exactly the authors' two-class form; the Tversky mean
    runs over these two terms. Multilabel: every channel is such a binary problem; the focal
    term is averaged over the channels and the Tversky term is the class mean over channels
    of the two-term mean. Multiclass (softmax): channel 0 is the background, all other
    channels are foreground ("rare") classes.
  * ``class_weights``, ``include_background`` (multiclass: drops :math:`c = 0` from the
    Tversky mean) and ``ignore_empty`` (leaves out classes, or multilabel channels, with empty
    ground truth) act on the Tversky class mean only, as in every region loss; the focal term
    is a pixel loss whose class weighting is :math:`\delta`.
  * The paper writes the Tversky term as a sum over classes, the code as a mean; we take the
    mean (a loss in ``[0, 1]``, as the other region losses).
  * ``per_image=False`` (default): both terms are computed over the whole batch (pixel mean,
    pooled Tversky statistics; ``psum``-ed over ``axis_name``). ``per_image=True``: per image
    (the authors' code computes the Tversky statistics per image), then averaged over images
    with kept pixels.
  * ``smooth=1e-5`` as in the other region losses (the authors' code uses 1e-7 (Keras
    epsilon)). With ``smooth=0`` a 0/0 Tversky index is 1.
  * :math:`(1 - p)^\gamma` and :math:`\log p` are computed from the logits in log space, so the
    value and gradient stay finite for saturated logits; a perfect prediction has zero gradient
    in the :math:`(1 - \mathrm{mTI})^{1 - \gamma}` term.

  Args:
    logits: ``(batch, *spatial, channels)`` logits (probabilities if ``from_logits=False``).
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or ``None`` (from the channel count).
    from_logits: ``False`` if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value of ignored pixels (integer class maps only).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis name(s) inside ``shard_map``/``pmap``: batch sums are ``psum``-ed.
    include_background: multiclass only: ``False`` leaves class 0 out of the Tversky mean.
    class_weights: optional ``(channels,)`` weights of the Tversky class mean.
    per_image: statistics per image then averaged (``True``) or over the whole batch.
    smooth: the constant :math:`s` of the Tversky index.
    ignore_empty: leave classes with empty (kept) ground truth out of the Tversky mean.
    weight: :math:`\lambda \in [0, 1]`, the weight of the focal (cross-entropy) term.
    delta: :math:`\delta \in [0, 1]`.
    gamma: :math:`\gamma \in [0, 1]`: background suppression :math:`(1-p)^\gamma` and
      foreground enhancement :math:`(1 - \mathrm{mTI})^{1-\gamma}`.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    M. Yeung, E. Sala, C.-B. Schonlieb, L. Rundo. "Unified Focal loss: Generalising Dice and
    cross entropy-based losses to handle class imbalanced medical image segmentation",
    Computerized Medical Imaging and Graphics 95 (2022) 102026.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import unified_focal_loss
    >>> logits = jnp.array([[[3.0], [-2.0], [1.0], [-4.0]]])  # (batch=1, length=4, channels=1)
    >>> labels = jnp.array([[1, 0, 1, 0]])
    >>> loss = unified_focal_loss(logits, labels)
    >>> bool(0.0 < loss < 1.0)
    True
  """
  check_region_options(
    loss=_NAME,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  for name, value in (("weight", weight), ("delta", delta), ("gamma", gamma)):
    check_unit_interval(name, value, loss=_NAME)
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
  g = x.targets
  w = x.weights
  log_p, log_q = log_probabilities(x)
  p = probabilities(x)

  if x.mode == "multiclass":
    # log(1 - p_0) = logsumexp of the foreground logits minus logsumexp of all logits.
    if x.from_logits:
      log_q0 = jax.nn.logsumexp(x.scores[..., 1:], axis=-1) - jax.nn.logsumexp(x.scores, axis=-1)
    else:
      log_q0 = jnp.log1p(-x.scores[..., 0])
    background = -(1.0 - delta) * jnp.exp(gamma * log_q0) * g[..., 0] * log_p[..., 0]
    foreground = -delta * (g[..., 1:] * log_p[..., 1:]).sum(-1)
    focal_pixels = background + foreground
    q = 1.0 - p
  else:
    # Background probability 1 - p: log(1 - p) = log_q, suppression (1 - (1 - p))^gamma = p^gamma.
    background = -(1.0 - delta) * jnp.exp(gamma * log_p) * (1.0 - g) * log_q
    foreground = -delta * g * log_p
    focal_pixels = (background + foreground).mean(-1)
    q = jax.nn.sigmoid(-x.scores) if x.from_logits else 1.0 - x.scores

  axes = x.spatial_axes if per_image else (0, *x.spatial_axes)

  def total(t):
    s = (w[..., None] * t).sum(axes)
    return s if per_image else _psum(s, axis_name)

  def one_minus_mti(tp, fn, fp):
    # 1 - mTI = (delta FN + (1 - delta) FP) / (TP + delta FN + (1 - delta) FP + s): no cancellation.
    errors = delta * fn + (1.0 - delta) * fp
    return safe_divide(errors, tp + errors + smooth)

  tp, fn, fp = total(p * g), total(q * g), total(p * (1.0 - g))
  fg = _power(one_minus_mti(tp, fn, fp), 1.0 - gamma)
  if x.mode == "multiclass":
    tversky_terms = jnp.concatenate([one_minus_mti(tp, fn, fp)[..., :1], fg[..., 1:]], axis=-1)
  else:
    tn = total(q * (1.0 - g))  # Background: TP_0 = TN, FN_0 = FP, FP_0 = FN.
    tversky_terms = 0.5 * (one_minus_mti(tn, fp, fn) + fg)
  tversky, tversky_counted = class_mean(
    tversky_terms,
    total(g),
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )

  if per_image:
    focal = reduce_pixels(focal_pixels, w, reduction="none")
  else:
    focal = reduce_pixels(focal_pixels, w, reduction="mean", axis_name=axis_name)

  # Each term is averaged over the images where it is defined: the focal term over images with
  # kept pixels, the Tversky term also only where a class was counted (with ignore_empty, an
  # image without any of its classes leaves the Tversky mean, as in dice_loss).
  def reduced(values, counted):
    return reduce_images(
      values, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
    )

  return weight * reduced(focal, jnp.ones_like(focal)) + (1.0 - weight) * reduced(
    tversky, tversky_counted
  )
