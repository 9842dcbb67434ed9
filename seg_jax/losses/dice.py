r"""Dice losses, and the soft overlap statistics shared by every overlap (region) loss.

The overlap losses (:func:`dice_loss`, :func:`log_cosh_dice_loss`, and
:func:`~seg_jax.losses.jaccard_loss`, :func:`~seg_jax.losses.tversky_loss`,
:func:`~seg_jax.losses.focal_tversky_loss`, :func:`~seg_jax.losses.generalized_dice_loss` in
their own modules) are all functions of three soft, weighted statistics per class :math:`c`:

.. math::
  I_c = \sum_i w_i\, p_{ic}\, g_{ic}, \qquad
  P_c = \sum_i w_i\, p_{ic}, \qquad
  G_c = \sum_i w_i\, g_{ic},

with :math:`p` the probabilities (softmax over channels in multiclass mode, sigmoid in binary and
multilabel mode, the inputs themselves with ``from_logits=False``), :math:`g` the one-hot or soft
targets and :math:`w` the pixel weights (``mask`` x label validity; ignored pixels have weight 0).
The sums run over the spatial axes of each image (``per_image=True``, statistics ``(batch, C)``)
or also over the batch -- and, with ``axis_name``, over the devices -- (``per_image=False``, the
default: nnU-Net's "batch dice", also segmentation_models_pytorch's default), giving ``(C,)``.
They are the statistics of :func:`seg_jax.losses._common.region_sums` evaluated on
:func:`~seg_jax.losses._common.probabilities`, computed here channel by channel (see
:func:`overlap_sums`), which is 2x (5x with the gradient) faster on XLA CPU.

Each loss turns the statistics into one loss value per class, averages the classes with
:func:`~seg_jax.losses._common.class_mean` (``class_weights``; background channel 0 left out in
multiclass mode with ``include_background=False``; classes with empty ground truth left out with
``ignore_empty=True``) and reduces the images with :func:`~seg_jax.losses._common.reduce_images`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from seg_jax.losses._common import (
  EPS,
  Inputs,
  check_class_vector,
  check_flag,
  check_region_options,
  class_mean,
  prepare,
  probabilities,
  reduce_images,
  region_sums,
  safe_divide,
)
from seg_jax.losses.registry import register

# Up to this many channels the statistics are computed channel-major from explicit per-channel
# operations (fast on XLA CPU, where reductions over a small last axis are slow); above it, the
# channels-last region_sums.
_MAX_UNROLLED_CHANNELS = 16

Stats = tuple[jax.Array, jax.Array, jax.Array]


# --------------------------------------------------------------------------------------------
# Soft statistics.


def _channel_probabilities(scores: jax.Array, kind: str) -> list[jax.Array]:
  """Probabilities of ``scores`` ``(batch, *spatial, C)`` as one ``(batch, *spatial)`` per channel.

  ``kind`` is ``'softmax'`` (see :func:`softmax_planes`), ``'sigmoid'`` or ``'identity'``
  (scores already probabilities).
  """
  if kind == "identity":
    return [scores[..., k] for k in range(scores.shape[-1])]
  if kind == "sigmoid":
    return [jax.nn.sigmoid(scores[..., k]) for k in range(scores.shape[-1])]
  exps, total = softmax_planes(scores)
  inv = 1.0 / total
  return [e * inv for e in exps]


def softmax_planes(scores: jax.Array) -> tuple[list[jax.Array], jax.Array]:
  """``exp(x_c - max_k x_k)`` per channel, one ``(batch, *spatial)`` array each, and their sum.

  Built from explicit per-channel operations (max, exp, sum), so no reduction runs over the
  small channel axis (slow on XLA CPU). The sum is at least 1.
  """
  chans = [scores[..., k] for k in range(scores.shape[-1])]
  top = chans[0]
  for s in chans[1:]:
    top = jnp.maximum(top, s)
  exps = [jnp.exp(s - top) for s in chans]
  total = exps[0]
  for e in exps[1:]:
    total = total + e
  return exps, total


def _channel_sums(weighted, targets, classes, axes, probs=None) -> tuple[jax.Array, jax.Array]:
  """``(sum_i v_c g_c, sum_i v_c [p_c])`` per channel for planes ``v_c``, stacked on axis 0.

  ``targets`` is either a list of per-channel target planes ``g_c`` (``classes`` None), or an
  integer class map, with channel ``c`` standing for class ``classes[c]`` (``g_c`` = [map ==
  class]): the product is then a select, and no one-hot plane is built. With ``probs`` (squared
  denominators) the second sum is ``sum_i v_c p_c``.
  """
  if classes is None:
    inter = [(v * g).sum(axes) for v, g in zip(weighted, targets, strict=True)]
  else:
    inter = [
      jnp.where(targets == k, v, 0.0).sum(axes) for v, k in zip(weighted, classes, strict=True)
    ]
  if probs is None:
    pred = [v.sum(axes) for v in weighted]
  else:
    pred = [(v * p).sum(axes) for v, p in zip(weighted, probs, strict=True)]
  return jnp.stack(inter), jnp.stack(pred)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _soft_sums(scores, targets, weights, classes, kind, axes, squared):
  """``(I, P)`` per channel (axis 0) from ``scores``; see :func:`overlap_sums`.

  ``targets`` and ``classes`` as in :func:`_channel_sums`; ``weights`` the pixel weights. With
  ``squared``, ``P = sum(w p^2)``. A custom JVP keeps the derivative in the same per-channel
  form (the automatic one assembles the gradient in a fusion that recomputes the softmax
  several times over, about 3x slower on XLA CPU); being a JVP, it serves forward and reverse
  mode alike.
  """
  probs = _channel_probabilities(scores, kind)
  weighted = [weights * p for p in probs]
  return _channel_sums(weighted, targets, classes, axes, probs if squared else None)


@_soft_sums.defjvp
def _soft_sums_jvp(classes, kind, axes, squared, primals, tangents):
  scores, targets, weights = primals
  # Labels and mask enter as constants (overlap_sums stops their gradient): only d(scores).
  d_scores = tangents[0]
  probs = _channel_probabilities(scores, kind)
  weighted = [weights * p for p in probs]
  out = _channel_sums(weighted, targets, classes, axes, probs if squared else None)
  d_chans = [d_scores[..., k] for k in range(scores.shape[-1])]
  if kind == "softmax":
    mean = probs[0] * d_chans[0]
    for p, d in zip(probs[1:], d_chans[1:], strict=True):
      mean = mean + p * d
    # w dp_c = w p_c (d_c - sum_k p_k d_k).
    d_weighted = [v * (d - mean) for v, d in zip(weighted, d_chans, strict=True)]
  elif kind == "sigmoid":
    d_weighted = [v * (1.0 - p) * d for v, p, d in zip(weighted, probs, d_chans, strict=True)]
  else:
    d_weighted = [weights * d for d in d_chans]
  d_inter, d_pred = _channel_sums(d_weighted, targets, classes, axes, probs if squared else None)
  if squared:
    d_pred = 2.0 * d_pred  # d sum(w p^2) = 2 sum(w p dp).
  return out, (d_inter, d_pred)


def _own_loop(*stats: jax.Array) -> tuple[jax.Array, ...]:
  """``stats`` unchanged, divided by an exact 1 that XLA cannot fold, for their cotangents' sake.

  The gradient of an overlap loss comes back to the logits through the cotangents of the
  per-class statistics, small ``(C,)`` arrays computed by a chain of cheap element-wise
  operations (the per-class loss, the class mean, the reductions: selects, products, sums)
  from the statistics. XLA on CPU fuses such cheap producers into the consumer that broadcasts
  them over the pixels, the loop that interleaves the channels of the ``(..., C)`` gradient,
  and recomputes the chain there for every element; depending on the chain, LLVM then no
  longer vectorises that loop. Here ``focal_tversky`` (a power ``(1 - TI)^gamma`` and its
  guards on top of Tversky's chain) took 21-36 ms for its forward+gradient at (2, 64, 64, 64, 3)
  on a 2-core CPU against 3-6 ms for ``tversky``, whose loop was vectorised; the same cliff made
  every clamp tried in :func:`~seg_jax.losses.tversky.tversky_index` 4-5x slower. The transpose
  of ``s / one`` is ``ct / one``: the chain then ends in a division, an operation XLA does not
  fuse into a consumer that broadcasts it, so the cotangents are computed once, in a loop of
  their own, and the interleaving loop only reads ``C`` numbers (``focal_tversky`` then runs
  at ``tversky``'s speed). The division by 1 is exact: values and gradients are unchanged.
  ``optimization_barrier`` keeps XLA from folding ``one`` (a barrier alone on the statistics or
  their cotangents is removed before fusion and changed nothing).
  """
  return tuple(s / jax.lax.optimization_barrier(jnp.ones((), s.dtype)) for s in stats)


def overlap_sums(x: Inputs, *, per_image: bool, axis_name=None, squared: bool = False) -> Stats:
  """Soft statistics ``(I, P, G)``, equal to ``region_sums(x, probabilities(x), ...)``.

  For up to ``_MAX_UNROLLED_CHANNELS`` channels they are computed channel by channel: the
  weighted probabilities ``w p_c`` are built as one ``(batch, *spatial)`` array per channel and
  each statistic is a plain sum over such an array (times the channel's target plane for dense
  labels, or selected where the class map equals the channel's class for integer labels, so no
  one-hot array is built). On XLA CPU this is about 2x faster than the channels-last form (whose
  softmax reduces over a small last axis and whose per-class sums keep one), and 5x faster with
  the gradient, which a custom JVP keeps in the same per-channel form (measured at
  (8, 256, 256, 4) on a 2-core CPU). More channels use
  :func:`~seg_jax.losses._common.region_sums` directly.

  Gradients flow to the logits only (labels and mask are constants of the loss).

  Args:
    x: the prepared inputs.
    per_image: statistics per image ``(batch, C)``; else pooled over the batch ``(C,)`` and
      ``psum``-ed over ``axis_name``.
    axis_name: mapped axis name (``shard_map``/``pmap``) to pool over, or None.
    squared: ``P = sum(w p^2)``, ``G = sum(w g^2)`` (Milletari's denominators); ``I`` unchanged.

  Returns:
    ``(intersection, pred_sum, target_sum)``.
  """
  x = x._replace(targets=jax.lax.stop_gradient(x.targets), weights=jax.lax.stop_gradient(x.weights))
  if x.num_classes > _MAX_UNROLLED_CHANNELS:
    return region_sums(
      x, probabilities(x), per_image=per_image, axis_name=axis_name, squared=squared
    )
  axes = x.spatial_axes if per_image else tuple(range(x.weights.ndim))
  kind = _probability_kind(x)
  w = x.weights
  if x.class_map is not None and not squared:
    # Integer labels: channel c is class c (class 1 for the single binary channel).
    classes = (1,) if x.mode == "binary" else tuple(range(x.num_classes))
    targets = x.class_map
    target = jnp.stack([jnp.where(x.class_map == k, w, 0.0).sum(axes) for k in classes])
  else:
    classes = None
    targets = [x.targets[..., k] for k in range(x.num_classes)]
    # sum(w g^2) for squared denominators: the targets may be soft.
    target = jnp.stack([(w * (g * g if squared else g)).sum(axes) for g in targets])
  inter, pred = _own_loop(*_soft_sums(x.scores, targets, w, classes, kind, axes, squared))
  if per_image:
    return inter.T, pred.T, target.T
  if axis_name is not None:
    inter, pred, target = jax.lax.psum((inter, pred, target), axis_name)
  return inter, pred, target


def _probability_kind(x: Inputs) -> str:
  """How probabilities come from ``x.scores``: ``'identity'``, ``'softmax'`` or ``'sigmoid'``."""
  if not x.from_logits:
    return "identity"
  return "softmax" if x.mode == "multiclass" else "sigmoid"


def l1_sums(x: Inputs, *, per_image: bool, axis_name=None) -> jax.Array:
  r"""Weighted L1 distances :math:`\sum_i w_i |p_{ic} - g_{ic}|` per class.

  Shaped and pooled like the statistics of :func:`overlap_sums` (``(batch, C)`` per image, else
  ``(C,)`` ``psum``-ed over ``axis_name``); gradients flow to the logits only.
  """
  g = jax.lax.stop_gradient(x.targets)
  w = jax.lax.stop_gradient(x.weights)
  axes = x.spatial_axes if per_image else tuple(range(w.ndim))
  if x.num_classes > _MAX_UNROLLED_CHANNELS:
    d = (w[..., None] * jnp.abs(probabilities(x) - g)).sum(axes)
  else:
    probs = _channel_probabilities(x.scores, _probability_kind(x))
    d = jnp.stack([(w * jnp.abs(p - g[..., k])).sum(axes) for k, p in enumerate(probs)], -1)
  if not per_image and axis_name is not None:
    d = jax.lax.psum(d, axis_name)
  return d


def check_soft_labels(soft_labels, *, squared: bool, loss: str) -> None:
  """Checks ``soft_labels`` (a flag; not with ``squared``, whose form needs no correction)."""
  check_flag("soft_labels", soft_labels, loss=loss)
  if soft_labels and squared:
    raise ValueError(
      f"{loss}: soft_labels=True applies to the L1 (non-squared) statistics; with squared=True "
      "the loss is already minimised at p = g (1 - D = |p - g|_2^2 / (|p|_2^2 + |g|_2^2)), so "
      "pass one of them."
    )


# --------------------------------------------------------------------------------------------
# The shared probs -> statistics -> class mean -> reduction chain.


def overlap_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  loss: str,
  per_class: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
  mode,
  from_logits: bool,
  mask,
  ignore_index,
  reduction: str,
  axis_name,
  include_background: bool,
  class_weights,
  per_image: bool,
  ignore_empty: bool,
  squared: bool = False,
  per_unit: Callable[[jax.Array], jax.Array] | None = None,
  soft_labels: bool = False,
) -> jax.Array:
  """Runs an overlap loss: prepare -> soft statistics -> per-class loss -> class mean -> reduce.

  The caller validates its own options first (:func:`check_region_options` and loss-specific
  ones).

  Args:
    logits, labels, mode, from_logits, mask, ignore_index, reduction, axis_name,
    include_background, class_weights, per_image, ignore_empty: as in the losses.
    loss: registry name, for error messages.
    per_class: ``(I, P, G) -> loss`` per class, elementwise on ``(..., C)`` arrays.
    squared: use squared denominators in ``P`` and ``G``.
    per_unit: optional function applied to the class-mean loss of each image (``per_image``)
      or of the pooled batch, before the mean over images (e.g. log-cosh).
    soft_labels: the semimetric intersection ``I = (P + G - sum_i w_i |p_i - g_i|) / 2`` for
      dense labels (see :func:`dice_loss`); integer class maps are hard, for which it equals the
      product form, which is used.

  Returns:
    The reduced loss, float32.
  """
  x = prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=loss,
  )
  cw = check_class_vector("class_weights", class_weights, x.num_classes, loss=loss)
  inter, pred, target = overlap_sums(x, per_image=per_image, axis_name=axis_name, squared=squared)
  if soft_labels and x.class_map is None:
    inter = 0.5 * (pred + target - l1_sums(x, per_image=per_image, axis_name=axis_name))
  values, counted = class_mean(
    per_class(inter, pred, target),
    target,
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  if per_unit is not None:
    values = per_unit(values)
  return reduce_images(
    values, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )


def dice_score(inter: jax.Array, pred: jax.Array, target: jax.Array, smooth) -> jax.Array:
  """Smoothed soft dice ``(2 I + smooth) / (P + G + smooth)``; 1 for 0/0."""
  return safe_divide(2.0 * inter + smooth, pred + target + smooth, empty=1.0)


# --------------------------------------------------------------------------------------------
# Losses.


@register("dice")
def dice_loss(
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
  squared: bool = False,
  log: bool = False,
  soft_labels: bool = False,
) -> jax.Array:
  r"""Soft dice loss (Milletari et al. 2016), averaged over classes.

  Per class :math:`c`, with the soft statistics :math:`I_c = \sum_i w_i p_{ic} g_{ic}`,
  :math:`P_c = \sum_i w_i p_{ic}`, :math:`G_c = \sum_i w_i g_{ic}` over the pixels :math:`i` of
  one image (``per_image=True``) or of the whole batch (``per_image=False``):

  .. math::
    D_c = \frac{2 I_c + s}{P_c + G_c + s}, \qquad
    \ell_c = 1 - D_c \quad\text{or (log=True)}\quad \ell_c = -\log \max(D_c, 10^{-7}).

  With ``squared=True`` the denominator is :math:`\sum_i w_i p_{ic}^2 + \sum_i w_i g_{ic}^2 + s`
  (V-Net's form). The loss is the ``class_weights``-weighted mean of :math:`\ell_c` over the
  counted classes, then the mean over images (``per_image``).

  Soft labels (``soft_labels=True``, Wang & Blaschko's Dice semimetric loss): with soft targets
  (label smoothing, distillation, averaged annotators) the product intersection :math:`I_c` makes
  :math:`1 - D_c` smallest at a sharpened prediction, not at :math:`p = g`. The semimetric form
  replaces it by

  .. math::
    I_c = \tfrac12\Big(P_c + G_c - \sum_i w_i\,|p_{ic} - g_{ic}|\Big), \qquad
    1 - D_c = \frac{\sum_i w_i |p_{ic} - g_{ic}|}{P_c + G_c + s},

  which is 0 exactly at :math:`p = g` and positive elsewhere (where :math:`P_c + G_c > 0`). For
  hard labels :math:`|p - g| = p + g - 2pg` pointwise, so both forms are equal; integer class maps
  are hard and always use the product form (the option changes nothing for them). This is MONAI's
  ``DiceLoss(soft_label=True)`` and segmentation_models_pytorch's ``soft_dice_score`` with soft
  targets. Not with ``squared=True``, which needs no correction: V-Net's
  :math:`1 - D_c = \sum_i w_i (p_{ic} - g_{ic})^2 / (\sum_i w_i p_{ic}^2 + \sum_i w_i g_{ic}^2)`
  (for :math:`s = 0`) is already 0 only at :math:`p = g`.

  Conventions: a class with empty ground truth (:math:`G_c = 0`) gives
  :math:`D_c = s / (P_c + s)`: 1 (loss 0) if the prediction is empty too, :math:`\approx 0`
  (loss :math:`\approx 1`) otherwise; with ``smooth=0`` the 0/0 case counts as :math:`D_c = 1`.
  ``ignore_empty=True`` leaves such classes out of the mean instead (an image or batch with no
  class left counts as nothing: it is left out of the mean over images). Images whose pixels are
  all ignored are left out of the mean over images. The log form is applied per class before
  the class mean (as segmentation_models_pytorch does) and is clipped at :math:`D_c = 10^{-7}`,
  so it is finite (at most about 16.1) but not bounded by 1.

  Args:
    logits: ``(batch, *spatial, C)`` scores (1-3 spatial dims); probabilities if
      ``from_logits=False``.
    labels: integer class map ``(batch, *spatial)`` or dense (one-hot/soft) labels of
      ``logits.shape``.
    mode: ``'binary'`` (1 channel, sigmoid), ``'multiclass'`` (softmax), ``'multilabel'``
      (independent sigmoids) or None (binary for 1 channel, else multiclass).
    from_logits: False if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value to ignore (integer class maps).
    reduction: ``'mean'``, ``'sum'`` (over images; pooled statistics give one value either
      way) or ``'none'`` (``(batch,)``, needs ``per_image=True``; 0 for an image left out).
    axis_name: mapped axis to ``psum`` the pooled statistics (or the per-image means) over,
      inside ``shard_map``/``pmap``, so the value equals the single-device one on the global
      batch.
    include_background: False leaves channel 0 out of the class mean (multiclass mode only;
      binary/multilabel outputs have no background channel).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image then averaged over images, or (False) pooled over the
      batch.
    smooth: :math:`s \ge 0`, added to numerator and denominator.
    ignore_empty: leave classes with empty ground truth out of the class mean.
    squared: squared terms in the denominator (Milletari's V-Net dice).
    log: the :math:`-\log D_c` form instead of :math:`1 - D_c`.
    soft_labels: the semimetric intersection for dense soft labels (above); default False (the
      product form, equal for hard labels).

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``. In :math:`[0, 1]` unless
    ``log=True``; 0 (up to ``smooth``) for a perfect prediction.

  References:
    Milletari, Navab, Ahmadi. "V-Net: Fully Convolutional Neural Networks for Volumetric
    Medical Image Segmentation", 3DV 2016.
    Isensee et al. "nnU-Net", Nature Methods 2021 (batch dice).
    Wang, Blaschko. "Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels",
    MICCAI 2023 (``soft_labels``).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import dice_loss
    >>> probs = jnp.array([[0.0, 0.9, 0.9, 0.0]])[..., None]  # (batch=1, 4 pixels, 1 channel)
    >>> labels = jnp.array([[0, 1, 1, 0]])
    >>> print(f"{dice_loss(probs, labels, from_logits=False, smooth=0.0):.4f}")
    0.0526
  """
  name = "dice"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  check_flag("squared", squared, loss=name)
  check_flag("log", log, loss=name)
  check_soft_labels(soft_labels, squared=squared, loss=name)

  def per_class(inter, pred, target):
    d = dice_score(inter, pred, target, smooth)
    return -jnp.log(jnp.maximum(d, EPS)) if log else 1.0 - d

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
    squared=squared,
    soft_labels=soft_labels,
  )


@register("log_cosh_dice")
def log_cosh_dice_loss(
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
  squared: bool = False,
  soft_labels: bool = False,
) -> jax.Array:
  r"""Log-cosh dice loss (Jadon 2020): :math:`\log\cosh` of the dice loss.

  .. math::
    L = \log\cosh\Big(\sum_c \tilde w_c\, (1 - D_c)\Big), \qquad
    D_c = \frac{2 I_c + s}{P_c + G_c + s},

  where the inner sum is the class mean of :func:`dice_loss` (:math:`\tilde w` the normalised
  class weights). Following Jadon's formulation (and reference code), :math:`\log\cosh` is
  applied to the class-averaged dice loss -- of each image with ``per_image=True``, then averaged
  over images, or of the pooled batch -- not to each class. :math:`\log\cosh x \approx x^2/2`
  near 0, so the loss is smaller and smoother than the dice loss; it lies in
  :math:`[0, \log\cosh 1 \approx 0.4338]`.

  All conventions (empty ground truth, ``ignore_empty``, ignored pixels, ``per_image``,
  ``squared``, ``soft_labels``) are those of :func:`dice_loss`.

  Args:
    logits: ``(batch, *spatial, C)`` scores; probabilities if ``from_logits=False``.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or None (from the channel count).
    from_logits: False if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value to ignore (integer class maps).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis to pool over inside ``shard_map``/``pmap``.
    include_background: False leaves channel 0 out (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image, or (False) pooled over the batch.
    smooth: :math:`s \ge 0`.
    ignore_empty: leave classes with empty ground truth out of the class mean.
    squared: squared terms in the dice denominator.
    soft_labels: the semimetric intersection for soft labels, see :func:`dice_loss`.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    Jadon. "A survey of loss functions for semantic segmentation", IEEE CIBCB 2020.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import log_cosh_dice_loss
    >>> probs = jnp.array([[0.0, 0.9, 0.9, 0.0]])[..., None]
    >>> labels = jnp.array([[0, 1, 1, 0]])
    >>> print(f"{log_cosh_dice_loss(probs, labels, from_logits=False, smooth=0.0):.5f}")
    0.00138
  """
  name = "log_cosh_dice"
  check_region_options(
    loss=name,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
    smooth=smooth,
  )
  check_flag("squared", squared, loss=name)
  check_soft_labels(soft_labels, squared=squared, loss=name)
  return overlap_loss(
    logits,
    labels,
    loss=name,
    per_class=lambda i, p, g: 1.0 - dice_score(i, p, g, smooth),
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
    squared=squared,
    per_unit=lambda v: jnp.log(jnp.cosh(v)),
    soft_labels=soft_labels,
  )
