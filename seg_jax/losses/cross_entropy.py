r"""Pixel-wise cross-entropy losses: sigmoid binary cross-entropy and softmax cross-entropy.

Both follow the conventions of :mod:`seg_jax.losses._common` (channels-last layout, modes, masks,
``ignore_index``, reductions, ``axis_name``). The per-pixel value is computed stably from logits
(no ``log(sigmoid(x))`` or ``log(softmax(x))`` of rounded probabilities), so value and gradient
are finite for logits of any size.

Speed notes (XLA on CPU; see ``benchmarks/losses.py``): XLA vectorises element-wise loops along
the last axis and reduces a short last axis slowly, so work on the channel axis of
``(batch, *spatial, C)`` arrays is laid out explicitly (:class:`_Channels`): softmax channels are
written out one ``(batch, *spatial)`` slice at a time (the true-class logit picked with a chain of
``where(class_map == c, ...)`` rather than a one-hot product), independent sigmoid channels are
processed as one flat ``(batch, spatial_size * C)`` array, and a single channel is split off
behind an optimisation barrier. Two kinds of element-wise work are told apart (jax 0.10 on
CPU): the sigmoid cross-entropy from logits (``abs``, ``exp``, ``log1p``, a few products) is plain
arithmetic that XLA fuses into its reduction kernel, one loop over the logits
(:func:`sigmoid_ce_from_logits`); work with sigmoids, powers or branches runs several times slower
in that kernel, so there ``log1p`` is replaced by an exact ``log``-based form and the element-wise
results end in a ``select``, which keeps them in XLA's element-wise loops. All layouts and both
forms compute the same formulas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from seg_jax.losses import _common
from seg_jax.losses.registry import register

# Softmax channel counts up to which channel work is written out per channel (module docstring).
_UNROLL_MAX = 16


# --------------------------------------------------------------------------------------------
# Per-channel views.
# --------------------------------------------------------------------------------------------


class _Channels:
  """Operations over the channel axis of ``(batch, *spatial, C)`` arrays, in one of three layouts.

  * ``'unrolled'`` (softmax with ``C <= _UNROLL_MAX``, and one sigmoid channel): an array is a
    tuple of ``C`` arrays of shape ``(batch, *spatial)``, a per-class vector a tuple of scalars.
  * ``'vector'`` (softmax with more channels): arrays stay ``(batch, *spatial, C)``; per-pixel
    arrays get a trailing axis, per-class vectors broadcast against the last axis.
  * ``'flat'`` (several sigmoid channels, which never interact): arrays are viewed as
    ``(batch, spatial_size * C)`` and per-pixel arrays and per-class vectors are broadcast to that
    view, so that element-wise work runs along a long contiguous axis.

  XLA on CPU vectorises element-wise loops along the last axis, so work on a short channel axis
  (or on a trailing axis of size 1) runs several times slower than the same work on a long one.
  """

  def __init__(self, shape: tuple[int, ...], layout: str | None = None):
    self.shape = tuple(shape)
    self.c = self.shape[-1]
    if layout is None:
      layout = "unrolled" if self.c <= _UNROLL_MAX else "vector"
    self.layout = layout
    self.unrolled = layout == "unrolled"

  @classmethod
  def sigmoid(cls, shape: tuple[int, ...]) -> _Channels:
    """The layout for independent per-channel (sigmoid) losses."""
    return cls(shape, "unrolled" if shape[-1] == 1 else "flat")

  def _flat(self, a: jax.Array) -> jax.Array:
    return jnp.broadcast_to(a, self.shape).reshape(self.shape[0], -1)

  def split(self, a: jax.Array):
    """A ``(batch, *spatial, C)`` array in this view."""
    if self.layout == "vector":
      return a
    # The barriers keep XLA from moving the slice/reshape after the element-wise work, which
    # would then run on the short channel axis again.
    if self.layout == "flat":
      return lax.optimization_barrier(a.reshape(self.shape[0], -1))
    if self.c == 1:
      return (lax.optimization_barrier(a[..., 0]),)
    return tuple(a[..., i] for i in range(self.c))

  def vec(self, v: jax.Array):
    """A per-class ``(C,)`` vector in this view."""
    if self.layout == "flat":
      return self._flat(v)
    return tuple(v[i] for i in range(self.c)) if self.unrolled else v

  def px(self, p: jax.Array) -> jax.Array:
    """A per-pixel ``(batch, *spatial)`` array, ready to combine with per-channel values."""
    if self.layout == "flat":
      return self._flat(p[..., None])
    return p if self.unrolled else p[..., None]

  def is_class(self, class_map: jax.Array):
    """Boolean one-hot of ``class_map`` in this view."""
    if self.unrolled:
      return tuple(class_map == i for i in range(self.c))
    onehot = class_map[..., None] == jnp.arange(self.c)
    return onehot.reshape(self.shape[0], -1) if self.layout == "flat" else onehot

  def map(self, fn: Callable, *args):
    """Applies ``fn`` per channel; tuple arguments are per-channel, others are shared."""
    if not self.unrolled:
      return fn(*args)
    return tuple(fn(*(a[i] if isinstance(a, tuple) else a for a in args)) for i in range(self.c))

  # Channel reductions (softmax layouts only).

  def sum(self, xs) -> jax.Array:
    return functools.reduce(jnp.add, xs) if self.unrolled else xs.sum(-1)

  def max(self, xs) -> jax.Array:
    return functools.reduce(jnp.maximum, xs) if self.unrolled else xs.max(-1)

  def pick(self, xs, class_map: jax.Array) -> jax.Array:
    """``xs[..., class_map]`` per pixel (class_map already clamped into range)."""
    if self.unrolled:
      out = xs[0]
      for i in range(1, self.c):
        out = jnp.where(class_map == i, xs[i], out)
      return jnp.broadcast_to(out, class_map.shape)
    if xs.ndim == 1:  # a per-class vector
      return xs[class_map]
    return jnp.take_along_axis(xs, class_map[..., None], axis=-1)[..., 0]

  def sum_except(self, xs, class_map: jax.Array) -> jax.Array:
    """``sum_{c != class_map} xs[..., c]`` per pixel, without subtracting."""
    if self.unrolled:
      return functools.reduce(
        jnp.add, [jnp.where(class_map == i, 0.0, xs[i]) for i in range(self.c)]
      )
    return jnp.where(class_map[..., None] == jnp.arange(self.c), 0.0, xs).sum(-1)


# --------------------------------------------------------------------------------------------
# Option checks.
# --------------------------------------------------------------------------------------------


def _concrete(value) -> np.ndarray | None:
  """``value`` as a float64 NumPy array, or ``None`` if it is traced (not known at trace time)."""
  try:
    return np.asarray(value, dtype=np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_range(name: str, value, lo: float, hi: float | None, *, loss: str) -> None:
  """Raises ValueError naming ``name`` unless all values are in ``[lo, hi]`` (traced: no check)."""
  arr = _concrete(value)
  if arr is None:
    return
  if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < lo):
    bad = True
  else:
    bad = hi is not None and bool(np.any(arr > hi))
  if bad:
    span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    raise ValueError(f"{loss}: {name} must be finite and {span}, got {value!r}.")


def _is_zero(value) -> bool:
  """True if ``value`` is known at trace time to be exactly 0."""
  arr = _concrete(value)
  return arr is not None and arr.ndim == 0 and float(arr) == 0.0


def _check_scalar_or_vector(name: str, value, num_channels: int, *, loss: str) -> jax.Array:
  """A scalar or ``(C,)`` option as a float32 ``(C,)`` vector, or raises naming ``name``."""
  arr = jnp.asarray(value, jnp.float32)
  if arr.ndim == 0:
    return jnp.broadcast_to(arr, (num_channels,))
  if arr.shape != (num_channels,):
    raise ValueError(
      f"{loss}: {name} must be a scalar or have shape ({num_channels},) (one value per channel "
      f"of logits), got shape {tuple(arr.shape)}."
    )
  return arr


def _check_label_smoothing(label_smoothing, *, loss: str) -> None:
  if np.ndim(label_smoothing) != 0:
    raise ValueError(
      f"{loss}: label_smoothing must be a scalar in [0, 1], got shape {np.shape(label_smoothing)}."
    )
  _check_range("label_smoothing", label_smoothing, 0.0, 1.0, loss=loss)


# --------------------------------------------------------------------------------------------
# Shared per-channel terms (also used by focal_loss).
# --------------------------------------------------------------------------------------------


def _log1p_small(e: jax.Array) -> jax.Array:
  """``log1p(e)`` for ``e`` in ``[0, 1]`` to float32 precision (within 3 ulp), without ``log1p``.

  ``u = 1 + e`` is rounded; its rounding error ``d = e - (u - 1)`` is exact (Sterbenz), and
  ``log1p(e) = log(u) + d / u + O(d^2)``; as ``|d| <= 2^-24`` and ``e / (1 + e) <= 1/2``, using
  ``d`` for ``d / u`` changes the result by less than one ulp. XLA's ``log1p`` is several times
  slower than ``log`` on CPU (it dominated the loss time). ``u - sign(u)`` stands for ``u - 1``
  (``sign(u) == 1``) so that XLA's algebraic simplifier does not fold ``(1 + e) - 1`` into ``e``.
  The derivative is exact: ``1/u + 1 - 1``.
  """
  u = 1.0 + e
  return jnp.log(u) + (e - (u - jnp.sign(u)))


def sigmoid_apply(inputs: _common.Inputs, ch: _Channels, fn: Callable, *args):
  r"""Evaluates ``fn(nls, nlc, p, q, *args)`` per channel for the sigmoid modes.

  ``nls = -log s``, ``nlc = -log(1 - s)``, ``p = s`` and ``q = 1 - s`` with ``s = sigmoid(x)``;
  ``args`` are per-channel values in the layout of ``ch`` (or ``None``/shared values).

  From logits ``x``, with ``e = exp(-|x|)`` and ``soft = log1p(e)``: for ``x >= 0``,
  ``nls = soft``, ``nlc = soft + x``, ``p = 1/(1+e)``, ``q = e/(1+e)``; for ``x < 0``,
  ``nls = soft - x``, ``nlc = soft``, ``p = e/(1+e)``, ``q = 1/(1+e)``. All are finite for any
  ``x`` and cost one ``exp`` and one ``log`` per element (and a reciprocal for ``p``, ``q``);
  ``|x|`` has derivative +1 at 0, which makes every derivative exact at ``x = 0`` too. ``fn`` is
  evaluated on both sign branches and the result selected, so each element ends in a ``select``:
  that keeps XLA on CPU from splitting the work between its element-wise loop and its (slower)
  reduction kernel.

  From probabilities (already clipped to ``[EPS, 1-EPS]``): ``-log s``, ``-log1p(-s)``, ``s``,
  ``1 - s``.
  """
  xs = ch.split(inputs.scores)
  if not inputs.from_logits:
    return ch.map(lambda s_, *a: fn(-jnp.log(s_), -jnp.log1p(-s_), s_, 1.0 - s_, *a), xs, *args)

  def one(x, *a):
    pos = x >= 0
    ax = jnp.where(pos, x, -x)
    e = jnp.exp(-ax)
    soft = _log1p_small(e)
    r = 1.0 / (1.0 + e)  # removed by XLA when fn does not use p and q
    er = e * r
    return jnp.where(pos, fn(soft, soft + x, r, er, *a), fn(soft - x, soft, er, r, *a))

  return ch.map(one, xs, *args)


def sigmoid_targets(inputs: _common.Inputs, ch: _Channels, label_smoothing=0.0):
  """Per-channel targets for the sigmoid modes: ``(hard, y)``.

  ``hard`` is a boolean one-hot view when labels are an integer map (binary: ``class_map == 1``;
  multiclass one-vs-rest: ``class_map == c``), else ``None``; ``y`` is the float target after label
  smoothing ``y (1 - ls) + ls / 2``, or ``None`` for hard targets without smoothing (callers then
  select with ``hard`` instead of multiplying).
  """
  ls = label_smoothing
  if inputs.class_map is not None:
    if inputs.mode == "binary":
      hard = (inputs.class_map == 1,)  # one channel, always written out
    else:
      hard = ch.is_class(inputs.class_map)
    if _is_zero(ls):
      return hard, None
    return hard, ch.map(lambda h: jnp.where(h, 1.0 - 0.5 * ls, 0.5 * ls), hard)
  y = ch.split(inputs.targets)
  if not _is_zero(ls):
    y = ch.map(lambda t: t * (1.0 - ls) + 0.5 * ls, y)
  return None, y


def sigmoid_ce(nls, nlc, hard, y, pos_weight=None):
  """One channel's ``pos_weight * y * (-log s) + (1 - y) * (-log(1 - s))``.

  Hard targets (``y is None``) select between the two terms.
  """
  pos = nls if pos_weight is None else pos_weight * nls
  if y is None:
    return jnp.where(hard, pos, nlc)
  return y * pos + (1.0 - y) * nlc


class SoftmaxTerms(NamedTuple):
  """Per-channel ``z`` and ``e = exp(z)``, per-pixel ``lse`` and ``s = sum_c e_c`` (see below)."""

  z: tuple | jax.Array
  e: tuple | jax.Array
  lse: jax.Array | None
  s: jax.Array | None


def softmax_terms(inputs: _common.Inputs, ch: _Channels) -> SoftmaxTerms:
  r"""Per-channel shifted logits and the per-pixel log normaliser, for multiclass mode.

  From logits: ``z_c = x_c - max_c x_c``, ``e_c = exp(z_c)``, ``s = sum_c e_c >= 1`` and
  ``lse = log s``, so ``-log p_c = lse - z_c >= 0`` and ``p_c = e_c / s`` (the max is a constant
  for differentiation: the value does not depend on it). From probabilities: ``z_c = log p_c``,
  ``e_c = p_c``, and ``lse``, ``s`` are ``None`` (0 and 1).
  """
  xs = ch.split(inputs.scores)
  if not inputs.from_logits:
    return SoftmaxTerms(ch.map(jnp.log, xs), xs, None, None)
  m = lax.stop_gradient(ch.max(xs))
  zs = ch.map(lambda x, m_: x - m_, xs, ch.px(m))
  es = ch.map(jnp.exp, zs)
  total = ch.sum(es)
  return SoftmaxTerms(zs, es, jnp.log(total), total)


def softmax_nll_true(inputs: _common.Inputs, ch: _Channels, t: SoftmaxTerms) -> jax.Array:
  """``-log p_t`` of the true class ``t = class_map`` per pixel."""
  zt = ch.pick(t.z, inputs.class_map)
  return -zt if t.lse is None else t.lse - zt


def softmax_nll_all(ch: _Channels, t: SoftmaxTerms):
  """Per-channel ``-log p_c``."""
  if t.lse is None:
    return ch.map(jnp.negative, t.z)
  return ch.map(lambda z, l_: l_ - z, t.z, ch.px(t.lse))


def reduce_pixel_values(
  values, weights, *, reduction, axis_name, norm=None, zero_ignored: bool = True
) -> jax.Array:
  """:func:`_common.reduce_pixels` of per-pixel values, zeroed first where the weight is 0.

  The value is unchanged (ignored pixels contribute exactly 0 anyway). On CPU the ``select`` keeps
  XLA from moving the per-pixel arithmetic into its reduction kernel, where some transcendental
  functions (the sigmoid, powers) run several times slower than in its element-wise loops.
  ``zero_ignored=False`` leaves it out, for values whose arithmetic runs fast there (``abs``,
  ``exp``, ``log1p``, products: the sigmoid cross-entropy from logits).
  """
  if zero_ignored:
    values = jnp.where(weights > 0, values, 0.0)
  return _common.reduce_pixels(values, weights, reduction=reduction, axis_name=axis_name, norm=norm)


def reduce_channel_values(
  per_channel, ch: _Channels, weights, *, reduction, axis_name, zero_ignored: bool = True
):
  """Reduces per-channel values of a sigmoid loss: their channel mean, reduced over pixels.

  Equal to :func:`reduce_pixel_values` of ``mean_c per_channel[..., c]``; in the flat layout every
  element carries its pixel's weight, so no reduction over the short channel axis is needed.
  """
  kw = {"reduction": reduction, "axis_name": axis_name, "zero_ignored": zero_ignored}
  if ch.unrolled:
    values = ch.sum(per_channel) * (1.0 / ch.c)
    return reduce_pixel_values(values, weights, **kw)
  # Flat layout: values (batch, spatial_size * C) with their pixel's weight; the normaliser is the
  # pixel weights' sum, and the channel mean's 1/C is applied to the result.
  total = reduce_pixel_values(
    per_channel, ch.px(weights), norm=weights.reshape(weights.shape[0], -1), **kw
  )
  return total * (1.0 / ch.c)


def sigmoid_ce_from_logits(x, hard, y, pos_weight=None, weight=None):
  """One channel's sigmoid cross-entropy from logits ``x``, without branches or selects.

  ``pos_weight * t * (-log s) + (1 - t) * (-log(1 - s))`` times ``weight``, with ``s =
  sigmoid(x)`` and the target ``t = y``, or ``hard`` as 0/1 when ``y`` is None. See
  :func:`_sigmoid_ce_elementwise` for the formula and its derivative.
  """
  t = hard.astype(jnp.float32) if y is None else y
  one = jnp.float32(1.0)
  return _sigmoid_ce_elementwise(
    x, t, one if pos_weight is None else pos_weight, one if weight is None else weight
  )


def _sigmoid_ce_terms(x):
  """``(-log s, -log(1 - s))`` for ``s = sigmoid(x)``, as plain arithmetic.

  With ``a = |x|``: ``(a - x) / 2 + log1p(exp(-a))`` and ``(a + x) / 2 + log1p(exp(-a))``, sums
  of non-negative terms in which ``(a - x) / 2`` and ``(a + x) / 2`` are exactly ``max(-x, 0)``
  and ``max(x, 0)`` in floating point: no cancellation, finite for any finite ``x``.
  """
  a = jnp.abs(x)
  soft = jnp.log1p(jnp.exp(-a))
  return 0.5 * (a - x) + soft, 0.5 * (a + x) + soft


@jax.custom_jvp
def _sigmoid_ce_elementwise(x, t, pos_weight, weight):
  """``weight * (pos_weight * t * (-log s) + (1 - t) * (-log(1 - s)))`` element-wise.

  The value is plain arithmetic (``abs``, ``exp``, ``log1p``, products), which XLA on CPU fuses
  into its reduction kernel: one loop over the logits. The derivative is given in closed form
  (a custom JVP): ``d/dx = weight * ((1 - t) s - pos_weight t (1 - s))``, exact at ``x = 0``
  too, evaluated in XLA's element-wise loops; differentiating the formula instead gave a
  gradient 2-4x slower (measured at both benchmark shapes). Targets and weights have their
  derivatives as well.
  """
  nls, nlc = _sigmoid_ce_terms(x)
  return weight * (pos_weight * t * nls + (1.0 - t) * nlc)


def _sigmoid_ce_elementwise_jvp(primals, tangents):
  x, t, pw, w = primals
  nls, nlc = _sigmoid_ce_terms(x)
  unweighted = pw * t * nls + (1.0 - t) * nlc
  out = w * unweighted
  # Symbolic zeros: only the inputs that carry a tangent (usually just x) cost any work.
  terms = []
  dx, dt, dpw, dw = tangents
  if not isinstance(dx, SymbolicZero):
    s = jax.nn.sigmoid(x)
    terms.append(w * ((1.0 - t) * s - pw * t * (1.0 - s)) * dx)
  if not isinstance(dt, SymbolicZero):
    terms.append(w * (pw * nls - nlc) * dt)
  if not isinstance(dpw, SymbolicZero):
    terms.append(w * t * nls * dpw)
  if not isinstance(dw, SymbolicZero):
    terms.append(unweighted * dw)
  return out, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)


_sigmoid_ce_elementwise.defjvp(_sigmoid_ce_elementwise_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------------------------


def _sigmoid_loss(
  inputs: _common.Inputs,
  *,
  pos_weight,
  label_smoothing,
  channel_weights,
  reduction,
  axis_name,
) -> jax.Array:
  """Sigmoid BCE averaged over channels per pixel, reduced over pixels."""
  ch = _Channels.sigmoid(inputs.scores.shape)
  hard, y = sigmoid_targets(inputs, ch, label_smoothing)
  pw = None if pos_weight is None else ch.vec(pos_weight)
  if inputs.from_logits:
    cw = None if channel_weights is None else ch.vec(channel_weights)
    per_channel = ch.map(sigmoid_ce_from_logits, ch.split(inputs.scores), hard, y, pw, cw)
    return reduce_channel_values(
      per_channel,
      ch,
      inputs.weights,
      reduction=reduction,
      axis_name=axis_name,
      zero_ignored=False,
    )
  if channel_weights is None:

    def fn(nls, nlc, p, q, hard_, y_, pw_):
      return sigmoid_ce(nls, nlc, hard_, y_, pw_)

    per_channel = sigmoid_apply(inputs, ch, fn, hard, y, pw)
  else:

    def fn(nls, nlc, p, q, hard_, y_, pw_, v_):
      return v_ * sigmoid_ce(nls, nlc, hard_, y_, pw_)

    per_channel = sigmoid_apply(inputs, ch, fn, hard, y, pw, ch.vec(channel_weights))
  return reduce_channel_values(
    per_channel, ch, inputs.weights, reduction=reduction, axis_name=axis_name
  )


@register("binary_cross_entropy")
def binary_cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  pos_weight=None,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Sigmoid binary cross-entropy, per channel, averaged over channels and pixels.

  Every channel ``c`` is an independent sigmoid ``s_c = sigmoid(x_c)``. With pixel weights ``w_i``
  (``mask`` times label validity) and ``C`` channels:

  .. math::

    \ell_i = \frac{1}{C} \sum_c -\big[\, \mathrm{pw}_c\, y_{ic} \log s_{ic}
             + (1 - y_{ic}) \log(1 - s_{ic}) \big], \qquad
    \mathcal{L}_{\text{mean}} = \frac{\sum_i w_i \ell_i}{\sum_i w_i}.

  Convention: channels are **averaged** per pixel (not summed), so the value equals the mean over
  all elements of ``torch.nn.BCEWithLogitsLoss`` / ``optax.sigmoid_binary_cross_entropy`` when no
  pixel is masked; on one channel it is exactly their mean. ``-log s`` and ``-log(1 - s)`` are
  computed from logits as ``softplus(-x)`` and ``softplus(x)``: finite value and gradient for
  logits of any size.

  ``mode`` only decides how ``labels`` are read (the loss is always a sigmoid per channel):

  * ``'binary'`` (one channel): an integer ``{0, 1}`` map ``(batch, *spatial)`` (other values are
    ignored pixels) or dense ``(batch, *spatial, 1)`` targets in ``[0, 1]``.
  * ``'multilabel'``: dense ``logits.shape`` targets, one independent 0/1 (or soft) target per
    channel.
  * ``'multiclass'``: an integer class map, read as one-hot targets: each channel is a one-vs-rest
    sigmoid problem (dense labels are read as in ``'multilabel'``).
  * ``None`` (default): ``'binary'`` for one channel; otherwise ``'multilabel'`` for dense labels
    and ``'multiclass'`` (one-hot, one-vs-rest) for an integer class map.

  Label smoothing follows Keras and PyTorch (``BCEWithLogits`` users): ``y -> y (1 - ls) + ls/2``,
  i.e. each sigmoid channel is a two-class problem smoothed towards 1/2.

  Args:
    logits: ``(batch, *spatial, C)`` logits (probabilities if ``from_logits=False``), 1-3 spatial
      dims.
    labels: integer ``(batch, *spatial)`` map or dense ``logits.shape`` targets, see ``mode``.
    mode: how labels are read, see above.
    from_logits: ``False`` if ``logits`` are probabilities (clipped to ``[1e-7, 1 - 1e-7]``).
    mask: optional ``(batch, *spatial)`` pixel weights; 0 ignores a pixel.
    ignore_index: integer label value whose pixels are ignored (integer maps only). Labels outside
      the valid range are ignored too (never NaN); validate data with
      :func:`seg_jax.losses.check_labels`.
    reduction: ``'mean'`` (weighted mean over kept pixels of the batch, 0 if none is kept),
      ``'sum'`` (weighted sum of ``ell_i``), or ``'none'`` (``(batch,)`` per-example means, 0 for
      an example without kept pixels).
    axis_name: mapped axis name inside ``shard_map``/``pmap``; the sums behind the mean are
      ``psum``-ed so the value equals the single-device value on the global batch.
    pos_weight: weight ``pw`` of the positive term, a scalar or one per channel ``(C,)``; values
      ``> 1`` raise recall (as PyTorch's ``pos_weight``). ``None`` means 1.
    label_smoothing: ``ls`` in ``[0, 1]``, see above.

  Returns:
    A float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  Raises:
    ValueError / TypeError: bad shapes, dtypes or option values (named in the message).

  References:
    Goodfellow, Bengio, Courville, *Deep Learning*, MIT Press 2016, Sec. 6.2.2 (sigmoid
    cross-entropy). Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
    CVPR 2016 (label smoothing).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import binary_cross_entropy
    >>> logits = jnp.log(jnp.array([9.0]).reshape(1, 1, 1))  # sigmoid = 0.9
    >>> round(float(binary_cross_entropy(logits, jnp.ones((1, 1), jnp.int32))), 5)  # -log 0.9
    0.10536
  """
  loss = "binary_cross_entropy"
  _common.check_reduction(reduction, loss=loss)
  _check_label_smoothing(label_smoothing, loss=loss)
  lshape = np.shape(logits)
  if mode is None and len(lshape) >= 1 and lshape[-1] > 1:
    mode = "multiclass" if np.shape(labels) == lshape[:-1] else "multilabel"
  x = _common.prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=loss,
  )
  if pos_weight is not None:
    _check_range("pos_weight", pos_weight, 0.0, None, loss=loss)
    pos_weight = _check_scalar_or_vector("pos_weight", pos_weight, x.num_classes, loss=loss)
  return _sigmoid_loss(
    x,
    pos_weight=pos_weight,
    label_smoothing=label_smoothing,
    channel_weights=None,
    reduction=reduction,
    axis_name=axis_name,
  )


@register("cross_entropy")
def cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  class_weights=None,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Softmax cross-entropy (multiclass); sigmoid cross-entropy in binary/multilabel mode.

  Multiclass mode, with ``p = softmax(x)`` over the ``C`` channels, targets ``y`` (one-hot of an
  integer map, or dense/soft), pixel weights ``w_i`` (``mask`` times label validity) and class
  weights ``v_c``:

  .. math::

    \tilde y_{ic} = (1 - \epsilon)\, y_{ic} + \epsilon / C, \qquad
    \ell_i = -\sum_c v_c\, \tilde y_{ic} \log p_{ic}, \qquad
    \mathcal{L}_{\text{mean}} = \frac{\sum_i w_i \ell_i}{\sum_i w_i \sum_c v_c y_{ic}}.

  Conventions:

  * Class weights follow PyTorch's ``CrossEntropyLoss(weight=...)``: the mean divides by the total
    weight of the true classes, so for one-hot labels it is torch's weighted mean (with label
    smoothing too: the normaliser uses the unsmoothed targets, as torch). For soft labels the same
    normaliser ``sum_c v_c y_c`` is used (torch divides by the pixel count there instead). Without
    ``class_weights`` the mean is over kept pixels.
  * Label smoothing follows optax and PyTorch: ``y -> (1 - eps) y + eps / C``.
  * ``-log p`` is computed as ``logsumexp(x) - x_c`` (finite for logits of any size).

  Binary and multilabel mode: the sigmoid cross-entropy of :func:`binary_cross_entropy` (so a
  ``'cross_entropy'`` config also works on one-channel binary data). There ``class_weights``
  (shape ``(C,)``) scale each channel's term, as the ``weight`` of
  ``torch.nn.BCEWithLogitsLoss``, without renormalising, and label smoothing uses the two-class
  form ``y (1 - eps) + eps / 2`` of each sigmoid.

  Args:
    logits: ``(batch, *spatial, C)`` logits (probabilities if ``from_logits=False``), 1-3 spatial
      dims.
    labels: integer ``(batch, *spatial)`` class map, or dense ``logits.shape`` targets (one-hot or
      soft; in multiclass mode each pixel's targets should sum to 1).
    mode: ``'multiclass'`` (softmax), ``'binary'`` or ``'multilabel'`` (sigmoid); ``None`` picks
      binary for one channel, multiclass otherwise.
    from_logits: ``False`` if ``logits`` are probabilities (clipped to ``[1e-7, 1 - 1e-7]``, not
      renormalised).
    mask: optional ``(batch, *spatial)`` pixel weights; 0 ignores a pixel.
    ignore_index: integer label value whose pixels are ignored (integer maps only). Labels outside
      ``[0, C)`` are ignored too (never NaN); validate data with
      :func:`seg_jax.losses.check_labels`.
    reduction: ``'mean'`` (see above; 0 if nothing is kept), ``'sum'`` (``sum_i w_i ell_i``), or
      ``'none'`` (``(batch,)``: each example's sum divided by its own normaliser, 0 for an example
      with none).
    axis_name: mapped axis name inside ``shard_map``/``pmap``; numerator and normaliser are
      ``psum``-ed so the value equals the single-device value on the global batch.
    class_weights: optional ``(C,)`` non-negative class weights ``v``.
    label_smoothing: ``eps`` in ``[0, 1]``.

  Returns:
    A float32 scalar, or ``(batch,)`` for ``reduction='none'``.

  Raises:
    ValueError / TypeError: bad shapes, dtypes or option values (named in the message).

  References:
    Goodfellow, Bengio, Courville, *Deep Learning*, MIT Press 2016, Sec. 6.2.2. Szegedy et al.,
    "Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (label smoothing).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import cross_entropy
    >>> probs = jnp.array([0.1, 0.7, 0.2]).reshape(1, 1, 3)
    >>> labels = jnp.array([[1]])
    >>> round(float(cross_entropy(jnp.log(probs), labels)), 5)  # -log 0.7
    0.35667
  """
  loss = "cross_entropy"
  _common.check_reduction(reduction, loss=loss)
  x, v = prepare_ce(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    class_weights=class_weights,
    label_smoothing=label_smoothing,
    loss=loss,
  )
  if x.mode != "multiclass":
    return _sigmoid_loss(
      x,
      pos_weight=None,
      label_smoothing=label_smoothing,
      channel_weights=v,
      reduction=reduction,
      axis_name=axis_name,
    )

  values, norm = softmax_ce_values(x, v, label_smoothing)
  return reduce_pixel_values(values, x.weights, reduction=reduction, axis_name=axis_name, norm=norm)


def prepare_ce(
  logits, labels, *, mode, from_logits, mask, ignore_index, class_weights, label_smoothing, loss
) -> tuple[_common.Inputs, jax.Array | None]:
  """Checks a cross-entropy call (label smoothing, class weights) and prepares its inputs.

  Returns:
    ``(inputs, v)``: the :class:`~seg_jax.losses._common.Inputs` and the class weights as a
    float32 ``(C,)`` vector, or ``None``.
  """
  _check_label_smoothing(label_smoothing, loss=loss)
  x = _common.prepare(
    logits,
    labels,
    mode=mode,
    from_logits=from_logits,
    mask=mask,
    ignore_index=ignore_index,
    loss=loss,
  )
  if class_weights is not None:
    _check_range("class_weights", class_weights, 0.0, None, loss=loss)
  return x, _common.check_class_vector("class_weights", class_weights, x.num_classes, loss=loss)


def softmax_ce_values(
  x: _common.Inputs, v: jax.Array | None, label_smoothing
) -> tuple[jax.Array, jax.Array | None]:
  """Per-pixel softmax cross-entropy ``ell_i`` (multiclass mode) and the normaliser of its mean.

  ``ell_i = -sum_c v_c y~_ic log p_ic`` as in :func:`cross_entropy` (``v`` the class weights or
  ``None``, ``label_smoothing`` the smoothing ``eps``), ``(batch, *spatial)``; the normaliser is
  ``w_i sum_c v_c y_ic`` with class weights, else ``None`` (the pixel weights).
  """
  ch = _Channels(x.scores.shape)
  eps = label_smoothing
  smooth = not _is_zero(eps)
  terms = softmax_terms(x, ch)
  norm = None
  if x.class_map is not None:
    values = softmax_nll_true(x, ch, terms)
    if v is not None:
      vt = ch.pick(ch.vec(v), x.class_map)
      values = vt * values
      norm = x.weights * vt
    if smooth:
      nll_all = softmax_nll_all(ch, terms)
      if v is not None:
        nll_all = ch.map(jnp.multiply, nll_all, ch.vec(v))
      values = (1.0 - eps) * values + (eps / ch.c) * ch.sum(nll_all)
  else:
    y = ch.split(x.targets)
    if v is not None:
      norm = x.weights * ch.sum(ch.map(jnp.multiply, y, ch.vec(v)))
    if smooth:
      y = ch.map(lambda t: (1.0 - eps) * t + eps / ch.c, y)
    per_class = ch.map(jnp.multiply, y, softmax_nll_all(ch, terms))
    if v is not None:
      per_class = ch.map(jnp.multiply, per_class, ch.vec(v))
    values = ch.sum(per_class)
  return values, norm


def sigmoid_ce_values(x: _common.Inputs, channel_weights, label_smoothing) -> jax.Array:
  """Per-pixel sigmoid cross-entropy, the channel mean ``(batch, *spatial)`` (binary/multilabel).

  The per-pixel value of :func:`binary_cross_entropy` (``channel_weights`` scaling each channel's
  term as in :func:`cross_entropy`'s sigmoid modes), before the mean over pixels.
  """
  ch = _Channels(x.scores.shape)  # channels written out (or kept last): one value per pixel
  hard, y = sigmoid_targets(x, ch, label_smoothing)
  cw = None if channel_weights is None else ch.vec(channel_weights)
  if x.from_logits:
    per_channel = ch.map(sigmoid_ce_from_logits, ch.split(x.scores), hard, y, None, cw)
  else:

    def fn(nls, nlc, p, q, hard_, y_, v_):
      ce = sigmoid_ce(nls, nlc, hard_, y_)
      return ce if v_ is None else v_ * ce

    per_channel = sigmoid_apply(x, ch, fn, hard, y, cw)
  return ch.sum(per_channel) * (1.0 / ch.c)
