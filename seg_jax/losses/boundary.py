r"""Distance-based losses: Kervadec's boundary loss, Karimi's Hausdorff distance-transform loss.

Both weight each pixel's prediction by its distance to the ground-truth boundary, so they look at
where the errors are, not only how many there are. The distance maps come from the exact JAX
distance transform in :mod:`seg_jax.losses.distance`, computed inside the (jitted) loss from the
labels, or are passed precomputed with ``distance_maps`` (e.g. made once by the data pipeline).
The maps carry no gradient.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.losses._common import (
  check_class_vector,
  check_flag,
  check_reduction,
  prepare,
  probabilities,
  reduce_pixels,
  require,
  safe_divide,
)
from seg_jax.losses.distance import boundary_distance_map, signed_distance_map
from seg_jax.losses.registry import register


def _channels(x, include_background: bool, class_weights, *, loss: str):
  """The channels the loss averages over (static slice) and their weights ``(C',)``."""
  num_classes = x.num_classes
  weights = check_class_vector("class_weights", class_weights, num_classes, loss=loss)
  if weights is None:
    weights = jnp.ones((num_classes,), jnp.float32)
  first = 1 if x.mode == "multiclass" and not include_background else 0
  return slice(first, num_classes), weights[first:]


def _given_maps(
  distance_maps, logits_shape, sel: slice, *, loss: str, nonnegative: bool = False
) -> jax.Array:
  """Checks precomputed maps and returns the selected channels, float32, gradient stopped.

  Non-finite entries (``distance_transform_edt`` of a mask with no background is ``+inf``) are
  set to 0, the maps' convention for a class that has no boundary in an image, so a probability
  of 0 never meets an infinite distance (0 * inf = NaN). With ``nonnegative`` (unsigned
  distances) negative entries are set to 0 as well.
  """
  shape = tuple(np.shape(distance_maps))
  require(
    chex.assert_shape,
    distance_maps,
    tuple(logits_shape),
    message=f"{loss}: distance_maps must have the shape of logits {tuple(logits_shape)} (one map "
    f"per channel), got distance_maps of shape {shape}.",
  )
  dtype = jnp.result_type(distance_maps)
  # Not chex.assert_type: it takes one expected type, and both floats and integers are valid.
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"{loss}: distance_maps must be real numbers, got dtype {dtype}.")
  maps = jnp.asarray(distance_maps, jnp.float32)[..., sel]
  ok = jnp.isfinite(maps) & (maps >= 0) if nonnegative else jnp.isfinite(maps)
  return jax.lax.stop_gradient(jnp.where(ok, maps, 0.0))


def _class_average(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean over the last (class) axis of ``values`` ``(..., C')``."""
  return safe_divide((values * weights).sum(-1), weights.sum())


@register("boundary", targets={"distance_maps": "signed_distance"})
def boundary_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  include_background: bool = False,
  class_weights=None,
  distance_maps: jax.Array | None = None,
  sampling=None,
) -> jax.Array:
  r"""Boundary loss (Kervadec et al.): probabilities times the signed distance to the boundary.

  .. math::
     \mathcal{L}_B = \frac{1}{\sum_x w_x} \sum_x w_x \,
       \frac{\sum_{c} \lambda_c\, p_c(x)\, \phi_{G_c}(x)}{\sum_c \lambda_c}

  with :math:`p_c` the softmax (multiclass) or sigmoid (binary/multilabel) probabilities,
  :math:`\phi_{G_c}` the signed distance map of the ground truth of class ``c``
  (:func:`seg_jax.losses.signed_distance_map`: positive outside the object, 0 on its boundary
  pixels, negative inside), :math:`w_x` the pixel weights and :math:`\lambda_c` the class
  weights. Up to a factor 2 and a term that does not depend on the prediction it is the paper's
  integral of the distance to the true boundary over the region between the predicted and the
  true boundaries; minimising it puts probability inside the objects and removes it outside.

  The loss can be negative: the perfect prediction minimises it, where it equals the sum of the
  (non-positive) map over the object pixels divided by the number of kept pixels. It gives no
  signal on its own for images whose ground truth has no boundary, so the paper uses it together
  with a region loss, e.g. ``combine({'dice': 1.0, 'boundary': 0.01})``, the boundary weight
  increased during training. Classes absent from an image, or filling all of it, have a zero
  map and contribute 0 (the reference implementation's convention for absent classes).

  Conventions: the maps come from the labels as :func:`seg_jax.losses._common.prepare` reads them
  (soft labels thresholded at 0.5; integer labels that are ignored or out of range count as class
  0, i.e. background, when the maps are built), and are computed per image and class with the
  exact JAX distance transform inside the loss (cost on its own: see
  :mod:`seg_jax.losses.distance`). Ignored pixels (``mask`` 0, ``ignore_index``, out-of-range
  labels) add nothing to the sum and are not counted in the mean. As in the reference code, the
  per-pixel value is the mean over the supervised classes (``idc``), i.e. foreground only by
  default in multiclass mode.

  Args:
    logits: ``(batch, *spatial, channels)`` scores, 1-3 spatial dims.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'``; ``None`` = binary for 1 channel, else
      multiclass.
    from_logits: ``False`` if ``logits`` are probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights (0 = ignore).
    ignore_index: label value to ignore (integer class maps only).
    reduction: ``'mean'`` (weighted mean over kept pixels of the batch), ``'sum'``, or
      ``'none'`` (``(batch,)`` per-example means, 0 for an example with no kept pixel).
    axis_name: mapped axis name under ``shard_map``/``pmap``: the sums behind the mean are
      ``psum``-ed so the loss equals the single-device value on the global batch (the maps are per
      image, so need no communication).
    include_background: in multiclass mode, whether channel 0 (background) is supervised too
      (default False, as the paper's ``idc=[1]``); no effect in binary/multilabel modes.
    class_weights: optional ``(channels,)`` weights :math:`\lambda_c` of the class mean.
    distance_maps: optional precomputed signed maps of ``logits.shape``, e.g.
      ``signed_distance_map(one_hot_labels)`` made by the data pipeline; ``None`` computes them
      from ``labels`` inside the loss. They carry no gradient; non-finite entries are read as 0
      (no boundary), so an ``inf`` from a mask without background cannot give NaN.
    sampling: voxel spacing for the maps computed here (see
      :func:`seg_jax.losses.distance_transform_edt`); must be ``None`` with ``distance_maps``.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed, "Boundary loss for highly
    unbalanced segmentation", MIDL 2019; Medical Image Analysis 67:101851, 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import boundary_loss
    >>> logits = jnp.zeros((1, 6, 1))  # p = 0.5 everywhere
    >>> labels = jnp.array([[0, 0, 1, 1, 1, 0]])  # signed map [2, 1, 0, -1, 0, 1]
    >>> round(float(boundary_loss(logits, labels)), 6)  # mean of 0.5 * map
    0.25
  """
  name = "boundary"
  check_reduction(reduction, loss=name)
  check_flag("include_background", include_background, loss=name)
  if distance_maps is not None and sampling is not None:
    raise ValueError(
      f"{name}: sampling={sampling!r} is only used to compute the distance maps; with "
      "precomputed distance_maps pass sampling=None (use the spacing when making the maps)."
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
  sel, lam = _channels(x, include_background, class_weights, loss=name)
  if distance_maps is None:
    phi = signed_distance_map(x.targets[..., sel], sampling=sampling)
  else:
    phi = _given_maps(distance_maps, np.shape(logits), sel, loss=name)
  p = probabilities(x)[..., sel]
  values = _class_average(p * phi, lam)
  return reduce_pixels(values, x.weights, reduction=reduction, axis_name=axis_name)


@register("hausdorff_dt", targets={"distance_maps": "boundary_distance"})
def hausdorff_dt_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  include_background: bool = False,
  class_weights=None,
  alpha: float = 2.0,
  distance_maps: jax.Array | None = None,
  sampling=None,
) -> jax.Array:
  r"""Hausdorff distance loss, distance-transform form (Karimi & Salcudean, ``HD_DT``).

  .. math::
     \mathcal{L}_{HD\text{-}DT} = \frac{1}{\sum_x w_x} \sum_x w_x \,
       \frac{\sum_c \lambda_c\, (p_c(x) - g_c(x))^2 \,
       \big(d_{G_c}(x)^\alpha + d_{P_c}(x)^\alpha\big)}{\sum_c \lambda_c}

  with :math:`p_c` the softmax/sigmoid probabilities, :math:`g_c` the (one-hot or soft) targets,
  :math:`d_{G_c}` the unsigned distance to the boundary of the ground truth of class ``c`` and
  :math:`d_{P_c}` that of the predicted segmentation ``p_c > 0.5``
  (:func:`seg_jax.losses.distance.boundary_distance_map`: each pixel's distance to the nearest
  pixel on the other side of the boundary), :math:`w_x` the pixel weights and :math:`\lambda_c`
  the class weights. Errors far from either boundary weigh most, which targets the largest
  boundary deviations (the Hausdorff distance).

  Conventions: :math:`d_P` is computed from the thresholded prediction under
  ``jax.lax.stop_gradient``, as in the paper and its public implementations (the distance
  transform is not differentiable): the gradient flows only through :math:`(p - g)^2`. A class
  absent from the ground truth (or the prediction), or filling the whole image, has no boundary
  and a zero map (MONAI's convention), so an image without any boundary gives 0. The ground-truth
  maps come from the labels as :func:`seg_jax.losses._common.prepare` reads them (soft labels
  thresholded at 0.5; ignored or out-of-range integer labels count as class 0 when the maps are
  built); ignored pixels add nothing to the sum and are not counted in the mean. Values scale
  with distance**alpha, so they can be large on big images; the loss is usually combined with a
  region loss.

  Args:
    logits: ``(batch, *spatial, channels)`` scores, 1-3 spatial dims.
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'``; ``None`` = binary for 1 channel, else
      multiclass.
    from_logits: ``False`` if ``logits`` are probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights (0 = ignore).
    ignore_index: label value to ignore (integer class maps only).
    reduction: ``'mean'`` (weighted mean over kept pixels of the batch), ``'sum'``, or
      ``'none'`` (``(batch,)`` per-example means, 0 for an example with no kept pixel).
    axis_name: mapped axis name under ``shard_map``/``pmap`` (``psum`` of the sums behind the
      mean; the maps are per image).
    include_background: in multiclass mode, whether channel 0 (background) is included (default
      False, as MONAI's ``HausdorffDTLoss``); no effect in binary/multilabel modes.
    class_weights: optional ``(channels,)`` weights :math:`\lambda_c` of the class mean.
    alpha: exponent of the distances, > 0 (the paper's 2.0).
    distance_maps: optional precomputed ground-truth maps :math:`d_G` of ``logits.shape`` (the
      non-negative distances themselves, not raised to ``alpha``), e.g.
      ``boundary_distance_map(one_hot_labels)``; ``None`` computes them from ``labels``. The
      prediction's maps are always computed inside the loss. Negative or non-finite entries are
      read as 0 (no boundary), so an ``inf`` from a mask without background cannot give NaN.
    sampling: voxel spacing for the maps computed here (see
      :func:`seg_jax.losses.distance_transform_edt`); with ``distance_maps`` it still applies to
      :math:`d_P`, so make the given maps with the same spacing.

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    Karimi, Salcudean, "Reducing the Hausdorff distance in medical image segmentation with
    convolutional neural networks", IEEE Transactions on Medical Imaging 39(2):499-513, 2020
    (arXiv:1904.10030, 2019), Eq. (8).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import hausdorff_dt_loss
    >>> logits = jnp.zeros((1, 6, 1))  # p = 0.5: nothing predicted, so d_P = 0
    >>> labels = jnp.array([[0, 0, 1, 1, 1, 0]])  # d_G = [2, 1, 1, 2, 1, 1]
    >>> round(float(hausdorff_dt_loss(logits, labels)), 6)  # mean of 0.25 * d_G**2
    0.5
  """
  name = "hausdorff_dt"
  check_reduction(reduction, loss=name)
  check_flag("include_background", include_background, loss=name)
  try:
    alpha_value = float(alpha)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise TypeError(f"{name}: alpha must be a concrete number > 0, got {alpha!r}.") from e
  if not (np.isfinite(alpha_value) and alpha_value > 0):
    raise ValueError(f"{name}: alpha must be finite and > 0, got alpha={alpha!r}.")
  x = prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=name,
  )
  sel, lam = _channels(x, include_background, class_weights, loss=name)
  g = x.targets[..., sel]
  p = probabilities(x)[..., sel]
  pred = jax.lax.stop_gradient(p)
  if distance_maps is None:
    # Ground-truth and prediction maps in one batched distance transform.
    both = boundary_distance_map(jnp.concatenate([g, pred]), sampling=sampling)
    d_gt, d_pred = both[: g.shape[0]], both[g.shape[0] :]
  else:
    d_gt = _given_maps(distance_maps, np.shape(logits), sel, loss=name, nonnegative=True)
    d_pred = boundary_distance_map(pred, sampling=sampling)
  weight = jnp.power(d_gt, alpha_value) + jnp.power(d_pred, alpha_value)
  values = _class_average((p - g) ** 2 * weight, lam)
  return reduce_pixels(values, x.weights, reduction=reduction, axis_name=axis_name)
