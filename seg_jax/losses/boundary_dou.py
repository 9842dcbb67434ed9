r"""Boundary difference over union (Boundary DoU) loss (Sun et al. 2023)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses import _common
from seg_jax.losses.registry import register

_NAME = "boundary_dou"


def boundary_pixels(foreground: jax.Array) -> jax.Array:
  """Boundary of a 0/1 ``(batch, *spatial, C)`` map: foreground pixels with a background pixel
  among their ``2 d`` face neighbours (the cross of the 3^d neighbourhood), pixels outside the
  image counting as background. Returns a 0/1 float32 array of the same shape."""
  interior = foreground
  for axis in range(1, foreground.ndim - 1):
    pad = [(0, 0)] * foreground.ndim
    pad[axis] = (1, 1)
    padded = jnp.pad(foreground, pad)
    n = foreground.shape[axis]
    for start in (0, 2):
      interior = interior * jax.lax.slice_in_dim(padded, start, start + n, axis=axis)
  return foreground * (1.0 - interior)


@register(_NAME)
def boundary_dou_loss(
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
  max_alpha: float = 0.8,
) -> jax.Array:
  r"""Boundary difference over union loss (Sun et al., MICCAI 2023), averaged over classes.

  Per class :math:`c`, with :math:`G` the ground truth and :math:`P` the prediction, the paper's
  loss is :math:`(|G \cup P| - |G \cap P|) / (|G \cup P| - \alpha |G \cap P|)`: the difference
  set over the union, with part :math:`\alpha` of the intersection taken out of the union, so
  that the loss concentrates on the boundary region. In the soft form of the authors' code,
  with sums over the pixels of one image (``per_image=True``) or of the batch:

  .. math::
    \ell_c = \frac{Z_c + Y_c - 2 I_c + s}{Z_c + Y_c - (1 + \alpha_c) I_c + s}, \qquad
    I_c = \sum_i w_i p_{ic} g_{ic},\; Y_c = \sum_i w_i g_{ic}^2,\; Z_c = \sum_i w_i p_{ic}^2,

  computed as :math:`(D_c + s) / (D_c + (1 - \alpha_c) I_c + s)` with
  :math:`D_c = \sum_i w_i (p_{ic} - g_{ic})^2` (the same value, each term non-negative). The
  weight :math:`\alpha_c` comes from the ground truth's boundary-to-area ratio:

  .. math::
    \alpha_c = \min\Big(1 - 2\,\frac{C_c + s}{S_c + s},\; \alpha_{\max}\Big),

  :math:`S_c` the number of kept pixels of class :math:`c` and :math:`C_c` the number of them on
  its boundary: pixels of the class with a pixel of another class (or the image edge) among
  their face neighbours in the 3^d neighbourhood (4 in 2-D, 6 in 3-D; the authors' cross-shaped
  3x3 / 3x3x3 kernel). Large, compact objects get :math:`\alpha` near its cap
  (:math:`\alpha_{\max} = 0.8`, the authors' truncation) and the loss weighs their boundary;
  thin or small objects (all boundary) get :math:`\alpha \to -1`, where the loss is
  :math:`1 - \text{Dice}`-like over the whole object. :math:`\alpha` carries no gradient.

  Conventions:

  * Dense labels: the boundary is that of :math:`g > 0.5`; the sums use :math:`g` as given.
    Ignored pixels (``mask`` 0, ``ignore_index``) are not counted in :math:`S_c`, :math:`C_c` or
    the sums, but as neighbours they count as not of the class (so their edge is boundary).
  * Statistics, :math:`C_c` and :math:`S_c` included, are pooled over the batch by default (the
    authors sum over the batch), and ``psum``-ed over ``axis_name``; ``per_image=True`` computes
    them per image.
  * Empty ground truth (:math:`S_c = 0`): :math:`\alpha_c = -1` and :math:`\ell_c = 1` whatever
    the prediction (no gradient), as in the authors' code, which averages such classes in;
    ``ignore_empty=True`` leaves them out of the class mean. All-ignored images drop out of the
    mean over images. The denominator is at least :math:`s > 0` (:math:`1 - \alpha_c \ge 0.2`),
    so values and gradients are finite, also for empty masks.
  * All classes by default (``include_background=True``), as the authors' loop over classes.

  Args:
    logits: ``(batch, *spatial, C)`` scores (1-3 spatial dims); probabilities if
      ``from_logits=False``.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'`` (1 channel, sigmoid), ``'multiclass'`` (softmax), ``'multilabel'``
      (independent sigmoids) or None (binary for 1 channel, else multiclass).
    from_logits: False if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value to ignore (integer class maps).
    reduction: ``'mean'``, ``'sum'`` (over images) or ``'none'`` (``(batch,)``, needs
      ``per_image=True``).
    axis_name: mapped axis to ``psum`` the pooled statistics over inside ``shard_map``/``pmap``.
    include_background: False leaves channel 0 out of the class mean (multiclass mode only).
    class_weights: optional ``(C,)`` non-negative weights of the class mean.
    per_image: statistics per image then averaged, or (False) pooled over the batch.
    smooth: :math:`s > 0`, in the loss and in :math:`\alpha` (the authors' 1e-5).
    ignore_empty: leave classes with empty ground truth out of the class mean.
    max_alpha: the cap :math:`\alpha_{\max}` of :math:`\alpha`, in ``[0, 1)`` (default 0.8).

  Returns:
    float32 scalar in :math:`[0, 1]`, or ``(batch,)`` for ``reduction='none'``.

  References:
    Sun, Luo, Li. "Boundary Difference Over Union Loss for Medical Image Segmentation", MICCAI
    2023 (code: github.com/sunfan-bvb/BoundaryDoULoss).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import boundary_dou_loss
    >>> probs = jnp.array([[0.0, 1.0, 1.0, 0.0]])[..., None]
    >>> print(f"{boundary_dou_loss(probs, jnp.array([[0, 1, 1, 0]]), from_logits=False):.4f}")
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
  _common.check_unit_interval("max_alpha", max_alpha, loss=_NAME)
  if not isinstance(max_alpha, jax.core.Tracer) and float(max_alpha) >= 1.0:
    raise ValueError(f"{_NAME}: max_alpha must be in [0, 1), got {max_alpha!r}.")
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
  kept = (w > 0).astype(jnp.float32)
  foreground = (g > 0.5).astype(jnp.float32) * kept
  edge = boundary_pixels(foreground) * kept
  inter, diff, target, area, boundary = _common.pixel_sums(
    (w * p * g, w * jnp.square(p - g), w * g, foreground, edge),
    x,
    per_image=per_image,
    axis_name=axis_name,
  )
  alpha = jnp.minimum(1.0 - 2.0 * (boundary + smooth) / (area + smooth), max_alpha)
  values, counted = _common.class_mean(
    (diff + smooth) / (diff + (1.0 - alpha) * inter + smooth),
    target,
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  return _common.reduce_images(
    values, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
