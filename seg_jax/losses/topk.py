r"""Top-k cross-entropy: the mean cross-entropy of the hardest ``k`` percent of the pixels.

nnU-Net's ``TopKLoss`` (Wu et al. 2016's bootstrapped cross-entropy, in Ma et al.'s loss
odyssey): the per-pixel cross-entropy is computed, the ``k`` percent largest values are kept and
averaged. The selection is made here without sorting: the ``k``-th largest value is found by a
bisection on the bit patterns of the (non-negative, float32) per-pixel values, 31 weighted
counts, each a pass over the pixels. With ``axis_name`` each count is ``psum``-ed, so the
selection is the global batch's top ``k`` percent under ``shard_map``, exactly the single-device
value, at the cost of 31 scalar collectives and no gather of the pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seg_jax.losses import _common
from seg_jax.losses.cross_entropy import prepare_ce, sigmoid_ce_values, softmax_ce_values
from seg_jax.losses.registry import register

_NAME = "topk_cross_entropy"

# Bit pattern of +inf in float32: every finite non-negative float32 lies in [0, _INF_BITS).
_INF_BITS = 0x7F800000
_BISECTION_STEPS = 31  # ceil(log2(_INF_BITS))


def topk_select(
  values: jax.Array, weights: jax.Array, fraction, *, per_image: bool, axis_name=None
) -> tuple[jax.Array, jax.Array]:
  r"""Selection weights of the top ``fraction`` of ``values`` by pixel weight, and its size.

  For non-negative ``values`` ``(batch, *spatial)`` and pixel weights ``w``, with
  :math:`K = \text{fraction} \cdot \sum_i w_i` (per image with ``per_image``, else over the
  batch and the ``axis_name`` devices), finds the threshold :math:`t`, the largest value with
  :math:`\sum_{v_i \ge t} w_i \ge K`, and returns :math:`s_i = 1` for :math:`v_i > t`,
  :math:`s_i = (K - \sum_{v_j > t} w_j) / \sum_{v_j = t} w_j` for :math:`v_i = t`, 0 below, so
  that :math:`\sum_i s_i w_i = K` and :math:`\sum_i s_i w_i v_i` is the sum of the :math:`K`
  largest values (ties at the threshold share the remainder). For 0/1 weights and an integer
  :math:`K` this is exactly the top-:math:`K` set. ``s`` carries no gradient.

  Pixels of weight 0 are never counted, so they are never part of the selection's weight.

  Returns:
    ``(s, K)``: ``s`` of ``values.shape``, ``K`` of shape ``(batch,)`` or ``()``.
  """
  v = lax.stop_gradient(jnp.where(values > 0, values, 0.0))  # +0.0 for 0, -0.0 and NaN
  w = lax.stop_gradient(weights)
  bits = lax.bitcast_convert_type(v, jnp.int32)  # monotone in v for v >= +0.0
  axes = tuple(range(1, v.ndim)) if per_image else tuple(range(v.ndim))

  def total(t):
    s = t.sum(axes)
    return s if per_image or axis_name is None else lax.psum(s, axis_name)

  k_weight = fraction * total(w)

  def expand(t):
    return t.reshape(t.shape + (1,) * (v.ndim - t.ndim))

  def step(_, bounds):
    lo, hi = bounds  # W(bits >= lo) >= K > W(bits >= hi)
    mid = lo + (hi - lo) // 2
    ok = total(jnp.where(bits >= expand(mid), w, 0.0)) >= k_weight
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  # Bounds derived from the data, so that under shard_map they vary over the devices exactly
  # when the counts do (per image: local counts; pooled: psum-ed, the same on every device).
  lo = jnp.zeros_like(k_weight, jnp.int32) * (k_weight > 0)
  hi = lo + _INF_BITS
  t, _ = lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))
  t = expand(t)
  above = total(jnp.where(bits > t, w, 0.0))
  at = total(jnp.where(bits == t, w, 0.0))
  share = jnp.clip(_common.safe_divide(k_weight - above, at), 0.0, 1.0)
  s = jnp.where(bits > t, 1.0, jnp.where(bits == t, expand(share), 0.0))
  return s, k_weight


@register(_NAME)
def topk_cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  k: float = 10.0,
  per_image: bool = False,
  class_weights=None,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Top-k cross-entropy (nnU-Net's ``TopKLoss``): mean CE of the hardest ``k`` % of pixels.

  With :math:`\ell_i` the per-pixel cross-entropy of :func:`seg_jax.losses.cross_entropy`
  (softmax in multiclass mode; the channel mean of the sigmoid cross-entropy in binary and
  multilabel mode), pixel weights :math:`w_i` (``mask`` x label validity) and
  :math:`K = \tfrac{k}{100} \sum_i w_i`:

  .. math::
    \mathcal{L} = \frac{1}{K} \max_{\substack{0 \le s_i \le 1 \\ \sum_i s_i w_i = K}}
      \sum_i s_i\, w_i\, \ell_i,

  the weighted mean of the :math:`K` largest :math:`\ell_i` (for a 0/1 mask: the mean of the
  top :math:`K` kept pixels, the pixel at the threshold counted with the fraction of it that
  completes :math:`K`). The gradient is that of the mean over the selected pixels, as for
  ``torch.topk``; ``k=100`` is the plain (weighted mean) cross-entropy.

  Conventions:

  * Per batch by default, as nnU-Net: the top ``k`` % over all pixels of the batch (and, with
    ``axis_name``, of the global batch over the devices: the selection threshold is found with
    ``psum``-ed counts, so the value under ``shard_map`` equals the single-device value on the
    global batch, not the mean of per-shard top-k). ``per_image=True`` selects the top ``k`` % of
    each image and averages the images (each image equally, as the region losses).
  * Ignored pixels (``mask`` 0, ``ignore_index``, out-of-range labels) are never selected and
    :math:`K` counts kept pixels only. nnU-Net instead computes the CE with ``ignore_index``
    (ignored pixels give 0) and takes ``int(k/100 * all voxels)`` of them, ignored included; the
    two agree when no pixel is ignored, up to nnU-Net's rounding of :math:`K` down to an integer
    (here :math:`K` is fractional: at most one pixel's share of difference).
  * ``class_weights`` scale each pixel's CE by the weight of its true class before selection,
    and the mean is over :math:`K` (as nnU-Net's ``TopKLoss(weight=...)``, which takes
    ``torch``'s unreduced weighted CE), not over the class-weighted count.
  * An image (``per_image``) or batch without kept pixels gives 0 and drops out of the mean.

  Args:
    logits: ``(batch, *spatial, C)`` logits (probabilities if ``from_logits=False``), 1-3
      spatial dims.
    labels: integer class map ``(batch, *spatial)`` or dense ``logits.shape`` targets.
    mode: ``'multiclass'`` (softmax CE), ``'binary'`` or ``'multilabel'`` (sigmoid CE); ``None``
      picks binary for one channel, multiclass otherwise.
    from_logits: ``False`` if ``logits`` are probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value whose pixels are ignored (integer class maps).
    reduction: ``'mean'``, ``'sum'`` (over images with ``per_image``; the batch gives one value
      either way) or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis name inside ``shard_map``/``pmap``: the selection and the mean are
      over the global batch (see above).
    k: percentage of the (kept) pixels to average, in ``(0, 100]``; nnU-Net's default 10.
    per_image: the top ``k`` % of each image (then averaged over images) instead of the batch.
    class_weights: optional ``(C,)`` non-negative weights of the true class's CE.
    label_smoothing: as in :func:`seg_jax.losses.cross_entropy`.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    Wu, Shen, van den Hengel. "Bridging Category-level and Instance-level Semantic Image
    Segmentation", arXiv:1605.06885, 2016 (bootstrapped cross-entropy).
    Ma et al. "Loss odyssey in medical image segmentation", Medical Image Analysis 71, 2021.
    Isensee et al. "nnU-Net", Nature Methods 18, 2021 (``nnunetv2/training/loss/robust_ce_loss.py``
    ``TopKLoss``).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import topk_cross_entropy
    >>> probs = jnp.array([[0.9, 0.8, 0.6, 0.2]])[..., None]  # p(foreground), 4 pixels
    >>> labels = jnp.array([[1, 1, 1, 1]])
    >>> round(float(topk_cross_entropy(probs, labels, from_logits=False, k=25.0)), 4)  # -log 0.2
    1.6094
  """
  _common.check_reduction(reduction, loss=_NAME, per_image=per_image)
  _common.check_number("k", k, loss=_NAME, strict=True)
  if not isinstance(k, jax.core.Tracer) and float(k) > 100.0:
    raise ValueError(f"{_NAME}: k is a percentage in (0, 100], got {k!r}.")
  x, v = prepare_ce(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    class_weights=class_weights,
    label_smoothing=label_smoothing,
    loss=_NAME,
  )
  if x.mode == "multiclass":
    values, _ = softmax_ce_values(x, v, label_smoothing)
  else:
    values = sigmoid_ce_values(x, v, label_smoothing)
  s, k_weight = topk_select(values, x.weights, k / 100.0, per_image=per_image, axis_name=axis_name)
  axes = x.spatial_axes if per_image else (0, *x.spatial_axes)
  top = (jnp.where(x.weights > 0, values, 0.0) * x.weights * s).sum(axes)
  if not per_image:
    top = _common._psum(top, axis_name)
  per_unit = _common.safe_divide(top, k_weight)
  return _common.reduce_images(
    per_unit,
    jnp.ones_like(per_unit),
    x,
    per_image=per_image,
    reduction=reduction,
    axis_name=axis_name,
  )
