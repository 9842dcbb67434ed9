r"""clDice: a topology-preserving loss for tubular structures (Shit et al., CVPR 2021).

The soft skeleton of a (soft) mask :math:`I` is built from iterated soft morphology: soft
erosion is a min filter over the cross-shaped neighbourhood (the pixel and its :math:`2d`
axis neighbours), soft dilation a max filter over the full :math:`3^d` box, opening
:math:`\mathrm{open}(I) = \mathrm{dilate}(\mathrm{erode}(I))`, and

.. math::

  S_0 = \mathrm{relu}(I - \mathrm{open}(I)),\quad
  I_k = \mathrm{erode}^k(I),\quad
  \delta_k = \mathrm{relu}(I_k - \mathrm{open}(I_k)),\quad
  S_k = S_{k-1} + \mathrm{relu}(\delta_k - S_{k-1} \delta_k),

for :math:`k = 1 \dots K` (``num_iter``); the soft skeleton is :math:`S_K`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from seg_jax.losses._common import (
  _psum,
  check_class_vector,
  check_region_options,
  check_unit_interval,
  class_mean,
  prepare,
  probabilities,
  reduce_images,
  safe_divide,
)
from seg_jax.losses.registry import register

_NAME = "cldice"


def _along(ndim: int, axis: int, value, rest=1) -> tuple:
  """A per-dimension tuple holding ``value`` at ``axis`` and ``rest`` elsewhere."""
  return tuple(value if a == axis else rest for a in range(ndim))


def _pool_value(x: jax.Array, axis: int, op: str) -> jax.Array:
  """Stride-1 min or max over a window of 3 along ``axis`` (the other axes untouched).

  Padding holds the identity of the operation (``+inf`` for min, ``-inf`` for max), so pixels
  outside the image never win: the border is handled as in the reference's padded max-pooling.
  """
  n = x.ndim
  if not isinstance(axis, int) or not 0 <= axis < n:
    # A tuple here once made the window 1 along every axis: a silent no-op pool.
    raise TypeError(f"_pool: axis must be one int in [0, {n}), got {axis!r}")
  if op not in ("min", "max"):
    raise ValueError(f"_pool: op must be 'min' or 'max', got {op!r}")
  init, reducer = (jnp.inf, lax.min) if op == "min" else (-jnp.inf, lax.max)
  return lax.reduce_window(
    x,
    jnp.asarray(init, x.dtype),
    reducer,
    _along(n, axis, 3),
    (1,) * n,
    _along(n, axis, (1, 1), (0, 0)),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool(x: jax.Array, axis: int, op: str) -> jax.Array:
  """:func:`_pool_value` with a cheaper gradient (same values, same gradient).

  The gradient of ``reduce_window`` min/max is XLA's ``select_and_scatter``, slow on CPU
  (about 10x the pool itself). Here the forward pass keeps, for every output, the offset of its
  winner within its window (0, 1, 2: the element before, itself, after), and the backward pass
  sends each cotangent to its winner with one summing ``reduce_window`` (:func:`_route`). Ties
  follow ``select_and_scatter``: the first element of the window wins, padding included (a
  cotangent sent to the padding is dropped).
  """
  return _pool_value(x, axis, op)


def _pool_fwd(x: jax.Array, axis: int, op: str):
  out = _pool_value(x, axis, op)
  init = jnp.inf if op == "min" else -jnp.inf
  # before[i] = x[i - 1], the padding (identity) at i = 0: one pad with a negative high side.
  before = lax.pad(x, jnp.asarray(init, x.dtype), _along(x.ndim, axis, (1, -1, 0), (0, 0, 0)))
  winner = jnp.where(before == out, 0, jnp.where(x == out, 1, 2)).astype(jnp.int8)
  return out, winner


def _route(ct: jax.Array, winner: jax.Array, axis: int) -> jax.Array:
  r"""Sends each output's cotangent to its window's winner: the transpose of the pooling.

  With :math:`E_{j,k} = c_j [w_j = k]` (the cotangent of output :math:`j` if its winner is at
  offset :math:`k - 1`), the gradient is :math:`g_i = E_{i+1,0} + E_{i,1} + E_{i-1,2}`. Laid out
  with :math:`k` interleaved along ``axis`` (flat index :math:`3j + k`), these three terms sit
  at :math:`3i - 1, 3i + 1, 3i + 3`: a window of 3 with dilation 2 and stride 3, one summing
  ``reduce_window``. Shifted copies (pads and slices) would compute the same but XLA CPU fuses
  them across the skeleton's levels, each fusion recomputing the previous ones; the
  ``reduce_window`` stores its result. The sum runs in ``select_and_scatter``'s order.
  """
  n = ct.ndim
  k = lax.broadcasted_iota(jnp.int8, (3,) + (1,) * (n - axis - 1), 0)
  zero = jnp.zeros((), ct.dtype)
  e = jnp.where(jnp.expand_dims(winner, axis + 1) == k, jnp.expand_dims(ct, axis + 1), zero)
  shape = list(ct.shape)
  shape[axis] *= 3
  return lax.reduce_window(
    e.reshape(shape),
    zero,
    lax.add,
    _along(n, axis, 3),
    _along(n, axis, 3),
    _along(n, axis, (1, 1), (0, 0)),
    window_dilation=_along(n, axis, 2),
  )


def _pool_bwd(axis: int, op: str, winner: jax.Array, ct: jax.Array):
  del op
  return (_route(ct, winner, axis),)


_pool.defvjp(_pool_fwd, _pool_bwd)


def _erode(x: jax.Array, spatial: tuple[int, ...], domain: jax.Array | None) -> jax.Array:
  """Soft erosion: min over the cross (the pixel and its axis neighbours) within ``domain``."""
  if domain is not None:
    x = jnp.where(domain, x, jnp.inf)
  out = _pool(x, spatial[0], "min")
  for a in spatial[1:]:
    out = jnp.minimum(out, _pool(x, a, "min"))
  return out if domain is None else jnp.where(domain, out, 0.0)


def _dilate(x: jax.Array, spatial: tuple[int, ...], domain: jax.Array | None) -> jax.Array:
  """Soft dilation: max over the full 3^d box within ``domain`` (separable)."""
  if domain is not None:
    x = jnp.where(domain, x, -jnp.inf)
  for a in spatial:
    x = _pool(x, a, "max")
  return x if domain is None else jnp.where(domain, x, 0.0)


def soft_skeleton(x: jax.Array, *, num_iter: int = 3, domain: jax.Array | None = None) -> jax.Array:
  r"""Soft skeleton of channels-last soft masks ``x`` ``(batch, *spatial, channels)``.

  Iterated soft erosion/opening as in the module docstring (Shit et al. 2021, Algorithm 1).

  Args:
    x: values in ``[0, 1]``, 1-3 spatial dims.
    num_iter: number of erosion steps :math:`K`; structures thicker than about ``2 K + 1``
      pixels are not thinned to a full skeleton.
    domain: optional boolean ``(batch, *spatial, 1)`` or ``x.shape``: pixels outside it are
      treated as lying outside the image (they never win a min or max) and hold 0.

  Returns:
    The soft skeleton, same shape as ``x``.
  """
  spatial = tuple(range(1, x.ndim - 1))
  if domain is not None:
    x = jnp.where(domain, x, 0.0)

  # open(x) = dilate(erode(x)), and the erosion inside each opening is the next iterate.
  eroded = _erode(x, spatial, domain)
  skel = jax.nn.relu(x - _dilate(eroded, spatial, domain))
  for _ in range(num_iter):
    x = eroded
    eroded = _erode(x, spatial, domain)
    delta = jax.nn.relu(x - _dilate(eroded, spatial, domain))
    skel = skel + jax.nn.relu(delta - skel * delta)
  return skel


@register(_NAME)
def cldice_loss(
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
  alpha: float = 0.5,
  num_iter: int = 3,
) -> jax.Array:
  r"""Soft clDice loss, combined with soft Dice as in the paper (``alpha``).

  With :math:`V_P` the predicted probabilities, :math:`V_L` the labels of a class, their soft
  skeletons :math:`S_P, S_L` (:func:`soft_skeleton`) and sums :math:`|\cdot|` over the kept
  pixels (weighted by the mask) of an image or of the batch:

  .. math::

    T_{prec} = \frac{|S_P \circ V_L| + s}{|S_P| + s},\quad
    T_{sens} = \frac{|S_L \circ V_P| + s}{|S_L| + s},\quad
    \mathrm{clDice} = \frac{2\, T_{prec} T_{sens}}{T_{prec} + T_{sens}},

  .. math::

    \mathcal{L}_c = (1 - \alpha)\Big(1 - \frac{2 |V_P \circ V_L| + s}{|V_P| + |V_L| + s}\Big)
      + \alpha\,(1 - \mathrm{clDice}),

  averaged over the classes (``class_weights``, ``include_background``, ``ignore_empty`` as
  in every region loss).

  Conventions:

  * ``alpha=0.5`` (default) is the paper's combined loss ``soft_dice_cldice`` (default of the
    authors' code); ``alpha=1.0`` gives pure clDice, ``alpha=0.0`` soft Dice (equal to
    :func:`seg_jax.losses.dice_loss` with the same options). The paper advises the combination:
    clDice alone does not constrain the volume.
  * ``num_iter=3`` skeleton iterations (the authors' default); use at least the largest
    half-thickness of the structures in pixels (e.g. 10 or more for thick vessels).
  * ``smooth=1e-5`` as in the other region losses (the authors' code uses 1.0). An empty
    skeleton gives :math:`T = s/s = 1`; with ``smooth=0`` the 0/0 ratios are 1 and a 0/0
    clDice is 0. An empty ground truth class thus gives loss ~0 for an empty prediction and ~1
    otherwise, as for Dice.
  * Classes: binary (sigmoid, one channel), multilabel (sigmoid per channel) or multiclass
    (softmax; every channel is skeletonized, channel 0 left out of the mean with
    ``include_background=False``, as the reference's ``exclude_background``).
  * Pooled (default ``per_image=False``): the sums run over the whole batch (and the
    ``axis_name`` devices, ``psum``-ed); skeletons are always per image.
  * Ignored pixels (mask 0, ``ignore_index``, invalid labels) are outside the image for the
    morphology (they never win an erosion or dilation and hold 0 in both skeletons) and are
    left out of every sum. Continuous mask values weigh the sums; any value > 0 is inside the
    image for the morphology.
  * Dense soft labels are skeletonized as given.
  * The pools' gradient is a custom VJP (the same gradient as XLA's ``select_and_scatter``,
    several times faster on CPU): reverse mode (``grad``, ``vjp``) only, no ``jax.jvp``.

  Args:
    logits: ``(batch, *spatial, channels)`` logits (probabilities if ``from_logits=False``).
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or ``None`` (from the channel count).
    from_logits: ``False`` if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` pixel weights, 0 = ignore.
    ignore_index: label value of ignored pixels (integer class maps only).
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` (``(batch,)``, needs ``per_image=True``).
    axis_name: mapped axis name(s) inside ``shard_map``/``pmap``: pooled sums are ``psum``-ed.
    include_background: in multiclass mode, ``False`` leaves channel 0 out of the class mean.
    class_weights: optional ``(channels,)`` weights of the class mean.
    per_image: statistics per image then averaged (``True``) or pooled over the batch.
    smooth: the constant :math:`s` added to numerators and denominators.
    ignore_empty: leave classes with empty (kept) ground truth out of the class mean.
    alpha: weight of clDice against soft Dice, in ``[0, 1]``.
    num_iter: soft-skeleton iterations :math:`K` (a positive int).

  Returns:
    float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  References:
    S. Shit, J. C. Paetzold, A. Sekuboyina, I. Ezhov, A. Unger, A. Zhylka, J. P. W. Pluim,
    U. Bauer, B. H. Menze. "clDice - a Novel Topology-Preserving Loss Function for Tubular
    Structure Segmentation", CVPR 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import cldice_loss
    >>> labels = jnp.zeros((1, 7, 7), jnp.int32).at[0, 3, :].set(1)  # a horizontal line
    >>> logits = 20.0 * (2.0 * labels[..., None] - 1.0)
    >>> float(cldice_loss(logits, labels)) < 1e-4
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
  check_unit_interval("alpha", alpha, loss=_NAME)
  if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
    raise ValueError(f"{_NAME}: num_iter must be a positive int, got {num_iter!r}.")
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
  p, g = probabilities(x), x.targets
  w = x.weights[..., None]
  domain = None if mask is None and x.class_map is None else w > 0

  axes = x.spatial_axes if per_image else (0, *x.spatial_axes)

  def total(t):
    s = (w * t).sum(axes)
    return s if per_image else _psum(s, axis_name)

  inter, p_sum, g_sum = total(p * g), total(p), total(g)
  dice = 1.0 - safe_divide(2.0 * inter + smooth, p_sum + g_sum + smooth, empty=1.0)
  values = (1.0 - alpha) * dice
  # A concrete alpha of 0 skips the skeletons; a traced alpha (a schedule) always computes them.
  if isinstance(alpha, jax.core.Tracer) or alpha > 0:
    skel_p = soft_skeleton(p, num_iter=num_iter, domain=domain)
    skel_g = soft_skeleton(g, num_iter=num_iter, domain=domain)
    t_prec = safe_divide(total(skel_p * g) + smooth, total(skel_p) + smooth, empty=1.0)
    t_sens = safe_divide(total(skel_g * p) + smooth, total(skel_g) + smooth, empty=1.0)
    cl = safe_divide(2.0 * t_prec * t_sens, t_prec + t_sens)
    values = values + alpha * (1.0 - cl)

  loss, counted = class_mean(
    values,
    g_sum,
    mode=x.mode,
    include_background=include_background,
    class_weights=cw,
    ignore_empty=ignore_empty,
  )
  return reduce_images(
    loss, counted, x, per_image=per_image, reduction=reduction, axis_name=axis_name
  )
