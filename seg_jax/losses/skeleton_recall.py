r"""Skeleton Recall loss for thin tubular structures (Kirchhoff et al., ECCV 2024).

The loss is the soft recall of the prediction on the *tubed skeleton* of the ground truth: the
skeleton of the binarised foreground, dilated into a thin tube, each of its pixels carrying the
class of the ground truth there. The tubed skeleton depends on the labels only, so the paper
computes it once per example on the CPU (``skimage.morphology.skeletonize``, then two binary
dilations with the cross-shaped footprint, then multiplied by the label map) and the loss itself
is one weighted sum per class: a fraction of clDice's cost, and multi-class.

In this package the precomputed target is passed as ``skeleton`` (the training pipeline makes it
with :func:`seg_jax.data.targets.tubed_skeleton`, the paper's recipe); without it the loss builds
an approximation inside ``jit`` from the labels (:func:`tubed_skeleton`, see there for how the two
differ).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.losses._common import (
  Inputs,
  _psum,
  check_class_vector,
  check_flag,
  check_number,
  check_reduction,
  class_mean,
  prepare,
  probabilities,
  reduce_images,
  require,
  safe_divide,
)
from seg_jax.losses.cldice import _pool, soft_skeleton
from seg_jax.losses.registry import register

_NAME = "skeleton_recall"


def _dilate_cross(x: jax.Array, spatial: tuple[int, ...], domain: jax.Array | None) -> jax.Array:
  """Binary/soft dilation by the cross (the pixel and its axis neighbours) within ``domain``."""
  if domain is not None:
    x = jnp.where(domain, x, -jnp.inf)
  out = _pool(x, spatial[0], "max")
  for a in spatial[1:]:
    out = jnp.maximum(out, _pool(x, a, "max"))
  return out if domain is None else jnp.where(domain, out, 0.0)


def tubed_skeleton(
  inputs: Inputs, *, num_iter: int = 5, tube: int = 2, domain: jax.Array | None = None
) -> jax.Array:
  r"""The in-``jit`` tubed skeleton of the targets of ``inputs``, float32 ``logits.shape``.

  The targets are binarised (``> 0.5``); in multiclass mode the foreground (channels ``1..C-1``
  together) is skeletonized as one mask, as in the paper, and channel 0 is left empty; in binary
  and multilabel mode each channel is skeletonized on its own. The skeleton is
  :func:`seg_jax.losses.soft_skeleton` (``num_iter`` iterations), which for a 0/1 mask is 0/1;
  it is dilated ``tube`` times by the cross-shaped footprint and multiplied by each channel's
  binarised target, so every tube pixel keeps the class of the ground truth under it.

  How it differs from the host skeleton (:func:`seg_jax.data.targets.tubed_skeleton`, the
  paper's ``skimage.morphology.skeletonize``): this is a morphological skeleton (the union of
  the residues of openings of the iterated erosions, Lantuéjoul's formula with the cross as
  erosion and the box as dilation), not a topology-preserving thinning. It is thicker (up to 2
  pixels on even widths), it may break where the structure narrows or branches, and parts
  thicker than about ``2 * num_iter + 1`` pixels are not thinned down to a line. On thin
  structures the two tubes are close; the host one is the paper's target.

  Args:
    inputs: from :func:`seg_jax.losses._common.prepare`.
    num_iter: erosion steps of the soft skeleton.
    tube: number of cross dilations (2 as in the paper).
    domain: optional boolean ``(batch, *spatial, 1)``: pixels outside it lie outside the image
      for the morphology and hold 0.

  Returns:
    float32 ``(batch, *spatial, channels)`` with values in ``{0, 1}``.
  """
  hard = (inputs.targets > 0.5).astype(jnp.float32)
  if inputs.mode == "multiclass":
    fg = hard[..., 1:].max(-1, keepdims=True)
  else:
    fg = hard
  spatial = tuple(range(1, fg.ndim - 1))
  skel = soft_skeleton(fg, num_iter=num_iter, domain=domain)
  for _ in range(tube):
    skel = _dilate_cross(skel, spatial, domain)
  skel = skel * hard  # Broadcasts the foreground tube over the channels in multiclass mode.
  if inputs.mode == "multiclass":
    skel = skel.at[..., 0].set(0.0)
  return jax.lax.stop_gradient(skel)


def _given_skeleton(skeleton, inputs: Inputs, logits_shape) -> jax.Array:
  """The precomputed ``skeleton`` as float32 per-channel targets ``logits_shape``."""
  shape = tuple(np.shape(skeleton))
  lshape = tuple(logits_shape)
  dtype = jnp.result_type(skeleton)
  if shape == lshape[:-1]:
    if inputs.mode == "multilabel":
      raise ValueError(
        f"{_NAME}: mode='multilabel' needs a dense skeleton of shape {lshape} (one 0/1 map per "
        f"channel), got an integer class map of shape {shape}."
      )
    if dtype != jnp.bool_:
      require(
        chex.assert_type,
        skeleton,
        int,
        message=f"{_NAME}: a skeleton of shape {shape} is read as a class map and must be "
        f"integers, got dtype {dtype}.",
        error=TypeError,
      )
    s = jnp.asarray(skeleton).astype(jnp.int32)
    if inputs.mode == "binary":
      out = (s == 1)[..., None].astype(jnp.float32)
    else:
      out = jax.nn.one_hot(s, lshape[-1], dtype=jnp.float32)
  elif shape == lshape:
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
      raise TypeError(f"{_NAME}: skeleton must hold real numbers, got dtype {dtype}.")
    out = jnp.asarray(skeleton, jnp.float32)
  else:
    raise ValueError(
      f"{_NAME}: skeleton must be an integer class map of shape {lshape[:-1]} (the labels' "
      f"shape) or dense per-channel maps of shape {lshape} (the logits' shape); got skeleton of "
      f"shape {shape} for logits of shape {lshape}."
    )
  return jax.lax.stop_gradient(out)


@register(_NAME, targets={"skeleton": "tubed_skeleton"})
def skeleton_recall_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  class_weights: jax.Array | None = None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  skeleton: jax.Array | None = None,
  num_iter: int = 5,
  tube: int = 2,
) -> jax.Array:
  r"""Skeleton Recall loss: one minus the soft recall of the prediction on the tubed skeleton.

  With :math:`p_c` the predicted probabilities of class :math:`c`, :math:`S_c` its tubed
  skeleton (the pixels of the dilated skeleton of the ground-truth foreground where the ground
  truth is :math:`c`), :math:`w` the pixel weights and sums over the pixels of an image
  (``per_image``) or of the batch:

  .. math::

    R_c = \frac{\sum_x w_x\, p_c(x)\, S_c(x) + s}{\sum_x w_x\, S_c(x) + s},\qquad
    \mathcal{L} = 1 - \frac{\sum_c \lambda_c R_c}{\sum_c \lambda_c}

  over the foreground classes (every channel in binary/multilabel mode, channels ``1..C-1`` in
  multiclass mode), :math:`\lambda_c` the class weights. The paper's loss is
  :math:`-\frac{1}{|C|}\sum_c R_c` (nnU-Net's ``SoftSkeletonRecallLoss``); :math:`1 - \cdot` has
  the same gradient and is 0 at the optimum. It only rewards covering the skeleton, so the paper
  adds it to Dice + cross-entropy (``dice_skeleton_recall``).

  Conventions:

  * ``skeleton``: the tubed skeleton precomputed by the data pipeline
    (:func:`seg_jax.data.targets.tubed_skeleton`: skimage's skeletonize of the binarised
    foreground, two cross dilations, times the label map), given as an integer class map of the
    labels' shape (class of each tube pixel, 0 elsewhere; binary mode reads the value 1), or as
    dense 0/1 maps of ``logits.shape`` (needed in multilabel mode). ``None`` builds it in ``jit``
    from the labels with :func:`tubed_skeleton`, a morphological approximation (see there); only
    then are ``num_iter`` and ``tube`` used. It carries no gradient.
  * Background: never a class of the mean in multiclass mode (nnU-Net's implementation refuses
    ``do_bg=True``: the background's skeleton is not a thin structure).
  * ``smooth=1e-5`` as in nnU-Net's trainer and the other region losses. A class with an empty
    tube has recall :math:`s/s = 1` and loss 0 (with ``smooth=0``, 0/0 counts as recall 1);
    ``ignore_empty`` leaves such classes out of the mean instead.
  * Pooled (default ``per_image=False``, nnU-Net's batch statistics): sums over the batch and the
    ``axis_name`` devices (``psum``); the skeleton is always per image.
  * Ignored pixels (mask 0, ``ignore_index``, invalid labels) add nothing to either sum, and are
    outside the image for the in-``jit`` morphology. Continuous mask values weigh the sums.

  Args:
    logits: ``(batch, *spatial, channels)`` logits (probabilities if ``from_logits=False``).
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or ``None`` (from the channel count).
    from_logits: ``False`` if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value of ignored pixels (integer class maps only).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis name(s) inside ``shard_map``/``pmap``: pooled sums are ``psum``-ed.
    class_weights: optional ``(channels,)`` weights :math:`\lambda_c` of the class mean.
    per_image: recall per image then averaged (``True``) or pooled over the batch.
    smooth: the constant :math:`s` of numerator and denominator.
    ignore_empty: leave classes with an empty (kept) tube out of the class mean.
    skeleton: optional precomputed tubed skeleton (see Conventions).
    num_iter: soft-skeleton iterations of the in-``jit`` skeleton (a positive int).
    tube: cross dilations of the in-``jit`` skeleton (an int >= 0; the paper's 2).

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    Y. Kirchhoff, M. R. Rokuss, S. Roy, B. Kovacs, C. Ulrich, T. Wald, M. Zenk, P. Vollmuth,
    J. Kleesiek, F. Isensee, K. Maier-Hein. "Skeleton Recall Loss for Connectivity Conserving and
    Resource Efficient Segmentation of Thin Tubular Structures", ECCV 2024 (arXiv:2404.03010).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import skeleton_recall_loss
    >>> labels = jnp.zeros((1, 9, 9), jnp.int32).at[0, 4, :].set(1)  # a horizontal line
    >>> logits = 20.0 * (2.0 * labels[..., None] - 1.0)
    >>> float(skeleton_recall_loss(logits, labels)) < 1e-4
    True
  """
  check_reduction(reduction, loss=_NAME, per_image=per_image)
  check_flag("ignore_empty", ignore_empty, loss=_NAME)
  check_number("smooth", smooth, loss=_NAME)
  for option, value, low in (("num_iter", num_iter, 1), ("tube", tube, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{_NAME}: {option} must be an int >= {low}, got {value!r}.")
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
  w = x.weights[..., None]
  if skeleton is None:
    domain = None if mask is None and x.class_map is None else w > 0
    tube_map = tubed_skeleton(x, num_iter=num_iter, tube=tube, domain=domain)
  else:
    tube_map = _given_skeleton(skeleton, x, np.shape(logits))
  p = probabilities(x)

  axes = x.spatial_axes if per_image else (0, *x.spatial_axes)

  def total(t):
    s = (w * t).sum(axes)
    return s if per_image else _psum(s, axis_name)

  s_sum = total(tube_map)
  recall = safe_divide(total(p * tube_map) + smooth, s_sum + smooth, empty=1.0)
  loss, counted = class_mean(
    1.0 - recall,
    s_sum,
    mode=x.mode,
    include_background=False,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  return reduce_images(
    loss, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
