r"""Matthews correlation coefficient (MCC) loss: one minus the soft MCC of each class."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses import _common
from seg_jax.losses.registry import register

_NAME = "mcc"


@register(_NAME)
def mcc_loss(
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
  r"""Matthews correlation coefficient loss (Abhishek & Hamarneh 2021), averaged over classes.

  Per class :math:`c` (one against the rest), with soft, weighted confusion counts over the
  pixels :math:`i` of one image (``per_image=True``) or of the whole batch (``per_image=False``)
  plus the smoothing :math:`s`:

  .. math::
    TP_c = \sum_i w_i p_{ic} g_{ic} + s, \quad FP_c = \sum_i w_i p_{ic} (1 - g_{ic}) + s, \quad
    FN_c = \sum_i w_i (1 - p_{ic}) g_{ic} + s, \quad TN_c = \sum_i w_i (1 - p_{ic})(1 - g_{ic}) + s,

  .. math::
    \mathrm{MCC}_c = \frac{TP_c\,TN_c - FP_c\,FN_c}
      {\sqrt{(TP_c + FP_c)(TP_c + FN_c)(TN_c + FP_c)(TN_c + FN_c)}}, \qquad
    \ell_c = 1 - \mathrm{MCC}_c \in [0, 2].

  Unlike Dice, MCC counts the true negatives: it is the Pearson correlation of the prediction
  and the ground truth. The loss is the ``class_weights``-weighted mean of :math:`\ell_c` over
  the counted classes, then the mean over images (``per_image``). The four counts are summed
  directly (each a sum of non-negative terms, not derived from one another), so they stay
  non-negative in float32 and the square root never sees a negative number.

  Conventions:

  * Smoothing as segmentation_models_pytorch's ``MCCLoss`` (``eps=1e-5`` added to each of the
    four counts; its binary, batch-pooled value is this loss with ``mode='binary'`` and the
    defaults). ``smooth`` must be > 0: MCC is 0/0 whenever the ground truth or the prediction is
    constant, and the smoothing is what defines it there.
  * Empty ground truth (:math:`G_c = 0`): MCC, a correlation with a constant, is undefined; with
    the smoothing, a class absent from both the ground truth and the prediction of :math:`N`
    kept pixels gives :math:`\mathrm{MCC}_c = N / (2(N + 2s)) \approx 1/2` (loss
    :math:`\approx 0.5`, its minimum for that class), and false positives on it raise the loss
    towards 1. The same holds for a class covering every pixel. ``ignore_empty=True`` leaves
    classes with empty ground truth out of the class mean instead. Images (or, pooled, a batch)
    whose pixels are all ignored are left out of the mean over images.
  * Values and gradients are finite for hard and soft inputs, including empty and all-ignored
    masks (every factor under the root is at least :math:`2s`).

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
    reduction: ``'mean'``, ``'sum'`` (over images) or ``'none'`` (``(batch,)``, needs
      ``per_image=True``).
    axis_name: mapped axis to ``psum`` the pooled counts (or the per-image means) over inside
      ``shard_map``/``pmap``: the value equals the single-device one on the global batch.
    include_background: False leaves channel 0 out of the class mean (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: counts per image then averaged over images, or (False) pooled over the batch.
    smooth: :math:`s > 0`, added to each count.
    ignore_empty: leave classes with empty ground truth out of the class mean.

  Returns:
    float32 scalar in :math:`[0, 2]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Abhishek, Hamarneh. "Matthews Correlation Coefficient Loss for Deep Convolutional Networks:
    Application to Skin Lesion Segmentation", ISBI 2021.
    Matthews. "Comparison of the predicted and observed secondary structure of T4 phage
    lysozyme", Biochimica et Biophysica Acta 405, 1975.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import mcc_loss
    >>> probs = jnp.array([[0.0, 1.0, 1.0, 0.0]])[..., None]
    >>> print(f"{mcc_loss(probs, jnp.array([[0, 1, 1, 0]]), from_logits=False):.4f}")
    0.0000
  """
  _common.check_region_options(
    loss=_NAME,
    reduction=reduction,
    per_image=per_image,
    include_background=include_background,
    ignore_empty=ignore_empty,
  )
  _common.check_number("smooth", smooth, loss=_NAME, strict=True)
  x = _common.prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=_NAME,
  )
  cw = _common.check_class_vector("class_weights", class_weights, x.num_classes, loss=_NAME)
  p = _common.probabilities(x)
  g = jax.lax.stop_gradient(x.targets)
  w = jax.lax.stop_gradient(x.weights)[..., None]
  wp, wq = w * p, w * (1.0 - p)
  tp, fp, fn, tn, target = _common.pixel_sums(
    (wp * g, wp * (1.0 - g), wq * g, wq * (1.0 - g), w * g),
    x,
    per_image=per_image,
    axis_name=axis_name,
  )
  tp, fp, fn, tn = (t + smooth for t in (tp, fp, fn, tn))
  # Two roots of two factors each: the product of all four can exceed float32 for large volumes.
  den = jnp.sqrt((tp + fp) * (tp + fn)) * jnp.sqrt((tn + fp) * (tn + fn))
  values, counted = _common.class_mean(
    1.0 - (tp * tn - fp * fn) / den,
    target,
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  return _common.reduce_images(
    values, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
