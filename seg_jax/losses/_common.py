"""Shared machinery of every loss: input checks, label conversion, pixel weights, reductions.

Every loss in :mod:`seg_jax.losses` goes through :func:`prepare`, so the conventions below hold
for all of them:

* Layout is channels-last: ``logits`` is ``(batch, *spatial, channels)`` with 1, 2 or 3 spatial
  dims. ``labels`` is an integer class map ``(batch, *spatial)`` or dense one-hot/soft labels of
  exactly ``logits.shape``. Nothing is broadcast: any other shape is an error at trace time.
* ``mode`` is ``'binary'`` (one channel, sigmoid), ``'multiclass'`` (softmax over channels) or
  ``'multilabel'`` (independent sigmoid per channel); ``None`` picks binary for one channel and
  multiclass otherwise.
* Pixel weights are ``mask`` (``(batch, *spatial)``, weights >= 0, 0 = ignore; a negative or NaN
  weight counts as 0) times the validity of integer labels: a pixel whose label equals
  ``ignore_index``, or lies outside the valid range (``[0, channels)`` for multiclass, ``{0, 1}``
  for binary), has weight 0 and contributes nothing. Such values are not errors of the plain
  losses (a value check inside ``jit`` costs a transfer to the host); the same loss wrapped by
  :func:`seg_jax.losses.checked` raises on them, from inside ``jit`` too (see
  :func:`value_checks`), and :func:`seg_jax.losses.check_labels` validates labels eagerly.
* Non-finite logits give a NaN loss (never a finite value, in particular not the optimum).
* Shapes and dtypes are checked at trace time with chex assertions (:func:`require`), whose
  messages name the argument and the shapes; ``chex.disable_asserts()`` turns them off.
* Computation is in float32 whatever the input dtype (bfloat16/float16 inputs give float32
  results).
* ``axis_name``: inside ``shard_map``/``pmap`` the sums behind every batch-level statistic are
  ``psum``-ed over that axis, so the loss equals the single-device value on the global batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

MODES = ("binary", "multiclass", "multilabel")
REDUCTIONS = ("mean", "sum", "none")

_UNCHECKED = object()  # Default of options that a check leaves alone.

# Probabilities given with ``from_logits=False`` are clipped to [EPS, 1 - EPS] before any log.
EPS = 1e-7


class Inputs(NamedTuple):
  """Canonical float32 view of a loss call, produced by :func:`prepare`.

  Attributes:
    mode: the resolved mode, one of ``MODES``.
    scores: float32 ``(batch, *spatial, channels)``: logits if ``from_logits`` else probabilities.
    from_logits: whether ``scores`` are logits.
    targets: float32 ``(batch, *spatial, channels)`` one-hot or soft targets.
    weights: float32 ``(batch, *spatial)`` pixel weights (mask x label validity).
    class_map: int32 ``(batch, *spatial)`` class indices when integer labels were given (invalid
      entries clamped into range, their weight is 0), else ``None``.
  """

  mode: str
  scores: jax.Array
  from_logits: bool
  targets: jax.Array
  weights: jax.Array
  class_map: jax.Array | None

  @property
  def num_classes(self) -> int:
    return self.scores.shape[-1]

  @property
  def spatial_axes(self) -> tuple[int, ...]:
    """Axes of the spatial dims of a ``(batch, *spatial)`` array."""
    return tuple(range(1, self.weights.ndim))


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _as_array(x):
  """``x`` as something chex reads as one array (chex takes a list for several arrays)."""
  return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def require(assertion: Callable, x, *args, message: str, error: type = ValueError) -> None:
  """Runs the chex shape/type ``assertion(x, *args)`` at trace time, raising ``error``.

  The message is chex's (what was expected of "input 0") followed by ``message`` in brackets,
  which names the loss, the argument and both shapes: chex cannot name the argument, nor say
  which shape it is compared with. ``error`` keeps the exception types of the contract
  (``ValueError`` for shapes, ``TypeError`` for dtypes) instead of chex's ``AssertionError``.
  """
  assertion(_as_array(x), *args, custom_message=message, exception_type=error)


def check_choice(name: str, value, choices: Sequence, *, loss: str) -> None:
  """Raises ValueError naming ``name`` if ``value`` is not one of ``choices``."""
  if value not in choices:
    raise ValueError(f"{loss}: {name}={value!r} is not one of {tuple(choices)}.")


def check_reduction(reduction: str, *, loss: str, per_image: bool | None = None) -> None:
  """Checks ``reduction`` (and, for region losses, ``per_image``) before anything is computed."""
  check_choice("reduction", reduction, REDUCTIONS, loss=loss)
  if per_image is None:
    return
  if not isinstance(per_image, bool | np.bool_):
    raise TypeError(f"{loss}: per_image must be True or False, got {per_image!r}.")
  if reduction == "none" and not per_image:
    raise ValueError(
      f"{loss}: reduction='none' needs per_image=True; pooled (batch) statistics give one value "
      "for the whole batch."
    )


def check_flag(name: str, value, *, loss: str) -> None:
  """Raises TypeError naming ``name`` unless ``value`` is a Python/NumPy bool."""
  if not isinstance(value, bool | np.bool_):
    raise TypeError(f"{loss}: {name} must be True or False, got {value!r}.")


def check_number(
  name: str, value, *, loss: str, minimum: float = 0.0, strict: bool = False
) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is a finite number ``>= minimum``.

  ``strict`` asks for ``> minimum``. Traced scalars are accepted unchecked (their value is not
  known at trace time); anything that is not a scalar raises.
  """
  if isinstance(value, jax.core.Tracer):
    require(
      chex.assert_rank,
      value,
      0,
      message=f"{loss}: {name} must be a scalar, got shape {np.shape(value)}.",
    )
    return
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{loss}: {name} must be a number, got {value!r}.") from None
  bad = not np.isfinite(v) or (v <= minimum if strict else v < minimum)
  if bad:
    rel = ">" if strict else ">="
    raise ValueError(f"{loss}: {name} must be a finite number {rel} {minimum}, got {value!r}.")


def check_unit_interval(name: str, value, *, loss: str) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is a number in ``[0, 1]``.

  Traced scalars are accepted unchecked (as in :func:`check_number`).
  """
  check_number(name, value, loss=loss)
  if not isinstance(value, jax.core.Tracer) and float(value) > 1.0:
    raise ValueError(f"{loss}: {name} must be in [0, 1], got {value!r}.")


def check_region_options(
  *,
  loss: str,
  reduction: str,
  per_image,
  include_background,
  ignore_empty=_UNCHECKED,
  smooth=_UNCHECKED,
) -> None:
  """Validates the options every region loss takes (before any computation).

  ``ignore_empty`` and ``smooth`` are checked when given (a loss without them leaves them out).
  """
  check_reduction(reduction, loss=loss, per_image=per_image)
  check_flag("include_background", include_background, loss=loss)
  if ignore_empty is not _UNCHECKED:
    check_flag("ignore_empty", ignore_empty, loss=loss)
  if smooth is not _UNCHECKED:
    check_number("smooth", smooth, loss=loss)


def resolve_mode(
  mode: str | None, num_channels: int, *, loss: str, shape: tuple[int, ...] | None = None
) -> str:
  """Returns the mode to use for ``num_channels`` output channels, checking that it fits.

  ``shape`` (of the logits), when given, is named in the error.
  """
  if mode is None:
    return "binary" if num_channels == 1 else "multiclass"
  check_choice("mode", mode, MODES, loss=loss)
  of = f" (logits of shape {shape})" if shape is not None else ""
  if mode == "binary" and num_channels != 1:
    raise ValueError(
      f"{loss}: mode='binary' needs logits with 1 channel, got {num_channels} channels{of}; use "
      "mode='multilabel' for independent sigmoid channels or 'multiclass' for softmax."
    )
  if mode == "multiclass" and num_channels < 2:
    raise ValueError(
      f"{loss}: mode='multiclass' needs at least 2 channels, got {num_channels}{of}; a single "
      "channel is mode='binary'."
    )
  return mode


def check_class_vector(name: str, value, num_channels: int, *, loss: str) -> jax.Array | None:
  """Returns a per-class vector as float32 ``(num_channels,)``, or raises naming ``name``."""
  if value is None:
    return None
  arr = jnp.asarray(value, jnp.float32)
  require(
    chex.assert_shape,
    arr,
    (num_channels,),
    message=f"{loss}: {name} must have shape ({num_channels},) (one value per channel of "
    f"logits), got shape {tuple(arr.shape)}.",
  )
  if not isinstance(arr, jax.core.Tracer):
    host = np.asarray(arr)
    if not np.all(np.isfinite(host) & (host >= 0)):
      raise ValueError(f"{loss}: {name} must be finite and >= 0, got {host.tolist()}.")
  return arr


# --------------------------------------------------------------------------------------------
# Value checks (checked mode).

_CHECKING = threading.local()


class ValueCheck(NamedTuple):
  """One value check of a loss call, recorded by :func:`prepare` under :func:`value_checks`.

  Attributes:
    message: the error message; ``{value}`` and ``{count}`` are filled in from ``stats``.
    stats: ``() -> (count, value)``: the number of offending entries (int32 scalar; the check
      passes when 0) and an offending entry (NaN if there is one, else the largest).
    passed: ``() -> (count, value)`` of a passed check, without reading the array (of the same
      types as ``stats``', also inside ``shard_map``, where they vary over the devices).
    if_not_finite: compute ``stats`` only when the loss value is not finite (else the check
      passes): used for the logits, since every loss returns NaN for non-finite logits.
  """

  message: str
  stats: Callable[[], tuple[jax.Array, jax.Array]]
  passed: Callable[[], tuple[jax.Array, jax.Array]]
  if_not_finite: bool = False


@contextlib.contextmanager
def value_checks() -> Iterator[list[ValueCheck]]:
  """While active, :func:`prepare` records checks of the input *values* (labels in range, finite
  logits, finite non-negative mask weights) in the list this yields, as :class:`ValueCheck`;
  :func:`seg_jax.losses.checked` turns them into ``checkify`` checks after the loss ran.

  The finiteness of the logits is read from the loss value first, and the logits are scanned
  only if it is not finite: scanning them in the same program as the loss made a jitted dice
  loss 4-5x slower at (8, 256, 256, 4) on XLA CPU (XLA fuses the two passes badly; measured),
  while a scan under ``lax.cond`` costs nothing when it is not taken. Active per thread, for the
  tracing inside the ``with`` block.
  """
  previous = getattr(_CHECKING, "records", None)
  records: list[ValueCheck] = []
  _CHECKING.records = records
  try:
    yield records
  finally:
    _CHECKING.records = previous


def value_checks_active() -> bool:
  """Whether :func:`value_checks` is active in this thread."""
  return getattr(_CHECKING, "records", None) is not None


def _record(bad_fn: Callable, values, message: str, *, if_not_finite: bool = False) -> None:
  """Records the check that ``bad_fn(values)`` is nowhere set (see :class:`ValueCheck`).

  Plain reductions (a sum and a max), no argmax: a variadic reduction is several times slower
  on XLA CPU.
  """
  values = jax.lax.stop_gradient(jnp.asarray(values))
  if jnp.issubdtype(values.dtype, jnp.floating):
    lowest = -jnp.inf
  else:
    lowest = jnp.iinfo(values.dtype).min

  def stats():
    bad = bad_fn(values)
    # max propagates NaN: a NaN entry is the one reported.
    return bad.sum(dtype=jnp.int32), jnp.max(jnp.where(bad, values, lowest))

  def passed():
    # Built from one entry (not constants) so that they vary like stats' inside shard_map.
    first = values.reshape(-1)[0]
    return jnp.where(True, 0, first).astype(jnp.int32), jnp.where(True, lowest, first)

  _CHECKING.records.append(ValueCheck(message, stats, passed, if_not_finite))


def _check_values(logits, labels, mask, *, kind, upper, from_logits, ignore_index, loss) -> None:
  """Records the value checks of :func:`value_checks` for one loss call (shapes checked)."""
  x = jnp.asarray(logits)
  n = f"of {x.size} entries"
  if from_logits:
    msg = f"{loss}: logits hold {{value}}, valid values are finite ({{count}} {n} are not)"
    _record(lambda v: ~jnp.isfinite(v), x, msg, if_not_finite=True)
  else:
    msg = (
      f"{loss}: logits (probabilities, from_logits=False) hold {{value}}, valid range [0, 1] "
      f"({{count}} {n} are outside it)"
    )
    _record(_outside_unit_interval, x, msg)
  y = jnp.asarray(labels)
  if kind == "index":
    y = y.astype(jnp.int32) if y.dtype == jnp.bool_ else y

    def bad_label(v):
      bad = (v < 0) | (v >= upper)
      return bad if ignore_index is None else bad & (v != ignore_index)

    binary = ", binary mode: 0 or 1" if upper == 2 else ""
    msg = (
      f"{loss}: labels hold {{value}}, valid range [0, {upper}) (ignore_index={ignore_index}"
      f"{binary}; {{count}} of {y.size} pixels are outside it)"
    )
    _record(bad_label, y, msg)
  else:
    msg = (
      f"{loss}: labels hold {{value}}, valid range [0, 1] (dense labels; {{count}} of {y.size} "
      "entries are outside it)"
    )
    _record(_outside_unit_interval, y, msg)
  if mask is not None:
    msg = (
      f"{loss}: mask holds {{value}}, valid weights are finite and >= 0 ({{count}} of "
      f"{np.size(mask)} pixels are not)"
    )
    _record(lambda v: ~(jnp.isfinite(v) & (v >= 0)), mask, msg)


def _outside_unit_interval(v: jax.Array) -> jax.Array:
  return ~((v >= 0) & (v <= 1))  # NaN too.


def prepare(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None,
  from_logits: bool,
  mask: jax.Array | None,
  ignore_index: int | None,
  loss: str,
) -> Inputs:
  """Checks a loss call's inputs at trace time and returns their canonical float32 form.

  Args:
    logits: ``(batch, *spatial, channels)`` scores, 1-3 spatial dims.
    labels: integer ``(batch, *spatial)`` class map, or dense ``logits.shape`` targets.
    mode: ``'binary'``, ``'multiclass'``, ``'multilabel'`` or ``None`` (from channel count).
    from_logits: ``False`` if ``logits`` already hold probabilities.
    mask: optional ``(batch, *spatial)`` weights >= 0, 0 = ignore (negative or NaN entries count
      as 0).
    ignore_index: label value to ignore (integer class maps only).
    loss: name of the calling loss, used in error messages.

  Returns:
    An :class:`Inputs`.

  Raises:
    ValueError / TypeError: naming the argument and the shapes, dtypes or values at fault.
  """
  lshape, yshape = _shape(logits), _shape(labels)
  require(
    chex.assert_rank,
    logits,
    {3, 4, 5},
    message=f"{loss}: logits must be (batch, *spatial, channels) with 1-3 spatial dims (rank "
    f"3-5), got shape {lshape} (rank {len(lshape)}).",
  )
  require(
    chex.assert_type,
    logits,
    float,
    message=f"{loss}: logits must be floating point, got dtype {jnp.result_type(logits)}.",
    error=TypeError,
  )
  for axis in range(len(lshape)):
    require(
      chex.assert_axis_dimension_gt,
      logits,
      axis,
      0,
      message=f"{loss}: logits has an empty dimension, shape {lshape}.",
    )
  num_channels = lshape[-1]
  mode = resolve_mode(mode, num_channels, loss=loss, shape=lshape)
  check_flag("from_logits", from_logits, loss=loss)
  if ignore_index is not None and (
    isinstance(ignore_index, bool | np.bool_) or not isinstance(ignore_index, int | np.integer)
  ):
    raise TypeError(f"{loss}: ignore_index must be an int or None, got {ignore_index!r}.")
  label_dtype = jnp.result_type(labels)

  # Not a chex assertion: labels may have either of two shapes, and chex's assert_shape takes
  # alternatives per dimension only (it would accept mixtures of the two).
  if yshape == lshape[:-1]:
    kind = "index"
  elif yshape == lshape:
    kind = "dense"
  else:
    raise ValueError(
      f"{loss}: labels must be an integer class map of shape {lshape[:-1]} (logits shape without "
      f"the channel axis) or dense labels of shape {lshape} (same as logits); got labels of "
      f"shape {yshape} for logits of shape {lshape}."
    )

  if kind == "index" and label_dtype != jnp.bool_:  # chex reads bool as no integer type.
    require(
      chex.assert_type,
      labels,
      int,
      message=f"{loss}: labels of shape {yshape} are read as a class map and must be integers, "
      f"got dtype {label_dtype}. For float masks of a one-channel output pass labels[..., None] "
      f"(shape {lshape}); otherwise cast class maps with labels.astype(jnp.int32).",
      error=TypeError,
    )
  if kind == "index" and mode == "multilabel":
    raise ValueError(
      f"{loss}: mode='multilabel' needs dense labels of shape {lshape} (one 0/1 target per "
      f"channel), got an integer class map of shape {yshape}."
    )
  if ignore_index is not None and kind == "dense":
    raise ValueError(
      f"{loss}: ignore_index={ignore_index} applies to integer class maps of shape "
      f"{lshape[:-1]}, but labels are dense with shape {yshape}; use mask to ignore pixels."
    )
  if mask is not None:
    require(
      chex.assert_shape,
      mask,
      lshape[:-1],
      message=f"{loss}: mask must have shape {lshape[:-1]} (batch, *spatial) to match logits of "
      f"shape {lshape}, got mask of shape {_shape(mask)}.",
    )
  if value_checks_active():
    _check_values(
      logits,
      labels,
      mask,
      kind=kind,
      upper=2 if mode == "binary" else num_channels,
      from_logits=from_logits,
      ignore_index=ignore_index,
      loss=loss,
    )

  scores = jnp.asarray(logits, jnp.float32)
  if not from_logits:
    scores = jnp.clip(scores, EPS, 1.0 - EPS)

  if mask is None:
    weights = jnp.ones(lshape[:-1], jnp.float32)
  else:
    # Weights are >= 0 by contract; negative or NaN entries (which cannot raise under jit) count
    # as 0, i.e. ignored, rather than turning the loss negative or NaN.
    weights = jnp.asarray(mask, jnp.float32)
    weights = jnp.where(weights > 0, weights, 0.0)
  if kind == "index":
    y = jnp.asarray(labels).astype(jnp.int32)
    upper = 2 if mode == "binary" else num_channels
    valid = (y >= 0) & (y < upper)
    if ignore_index is not None:
      valid &= y != ignore_index
    weights = weights * valid.astype(jnp.float32)
    class_map = jnp.where(valid, y, 0)
    if mode == "binary":
      targets = class_map[..., None].astype(jnp.float32)
    else:
      targets = jax.nn.one_hot(class_map, num_channels, dtype=jnp.float32)
  else:
    targets = jnp.asarray(labels, jnp.float32)
    class_map = None
  return Inputs(mode, scores, from_logits, targets, weights, class_map)


def probabilities(inputs: Inputs) -> jax.Array:
  """Float32 probabilities: softmax (multiclass) or sigmoid (binary/multilabel) of the logits."""
  if not inputs.from_logits:
    return inputs.scores
  if inputs.mode == "multiclass":
    return jax.nn.softmax(inputs.scores, axis=-1)
  return jax.nn.sigmoid(inputs.scores)


def log_probabilities(inputs: Inputs) -> tuple[jax.Array, jax.Array | None]:
  """Returns ``(log p, log(1 - p))``; the second is ``None`` in multiclass mode.

  Computed stably from logits (``log_softmax`` / ``log_sigmoid``), finite for logits of any size.
  """
  s = inputs.scores
  if inputs.mode == "multiclass":
    if inputs.from_logits:
      return jax.nn.log_softmax(s, axis=-1), None
    return jnp.log(s), None
  if inputs.from_logits:
    return jax.nn.log_sigmoid(s), jax.nn.log_sigmoid(-s)
  return jnp.log(s), jnp.log1p(-s)


def _psum(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def safe_divide(num: jax.Array, den: jax.Array, empty: float = 0.0) -> jax.Array:
  """``num / den`` where ``den > 0``, else ``empty``; gradients stay finite.

  A NaN ``den`` is divided, not replaced: the result is NaN, so non-finite logits give a NaN
  loss rather than the ``empty`` value (which for the overlap scores is the optimum, 1).
  """
  # Not ``den > 0``: NaN > 0 is False, and that test turned a NaN loss into a perfect score.
  ok = ~(den <= 0)
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty)


def reduce_pixels(
  values: jax.Array,
  weights: jax.Array,
  *,
  reduction: str,
  axis_name=None,
  norm: jax.Array | None = None,
) -> jax.Array:
  """Reduces a per-pixel loss ``(batch, *spatial)`` with pixel ``weights``.

  ``'mean'`` is the weighted mean over kept pixels of the (global, with ``axis_name``) batch:
  ``sum(w * values) / sum(norm)``, ``norm`` defaulting to ``w``; 0 when nothing is kept.
  ``'sum'`` is ``sum(w * values)``. ``'none'`` gives per-example means ``(batch,)`` (0 for an
  example with no kept pixel); their ``norm``-weighted average equals ``'mean'``.
  """
  norm = weights if norm is None else norm
  weighted = values * weights
  if reduction == "none":
    axes = tuple(range(1, values.ndim))
    return safe_divide(weighted.sum(axes), norm.sum(axes))
  total = _psum(weighted.sum(), axis_name)
  if reduction == "sum":
    return total
  return safe_divide(total, _psum(norm.sum(), axis_name))


def region_sums(
  inputs: Inputs,
  probs: jax.Array,
  *,
  per_image: bool,
  axis_name=None,
  squared: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted overlap statistics ``(intersection, pred_sum, target_sum)`` per class.

  ``intersection = sum(w p g)``, ``pred_sum = sum(w p)``, ``target_sum = sum(w g)`` over the
  spatial axes, giving ``(batch, C)`` with ``per_image``, else also over the batch (and the
  ``axis_name`` devices), giving ``(C,)``. ``squared`` uses ``p**2`` and ``g**2`` in the sums
  (Milletari's V-Net denominator). False positives are ``pred_sum - intersection`` and false
  negatives ``target_sum - intersection`` in the non-squared form.
  """
  g = inputs.targets
  w = inputs.weights[..., None]
  terms = (w * probs * g, w * (probs * probs if squared else probs), w * (g * g if squared else g))
  return pixel_sums(terms, inputs, per_image=per_image, axis_name=axis_name)


def pixel_sums(terms, inputs: Inputs, *, per_image: bool, axis_name=None) -> tuple:
  """Sums of ``(batch, *spatial, C)`` arrays over the pixels: ``(batch, C)`` each with
  ``per_image``, else ``(C,)`` over the batch, ``psum``-ed over ``axis_name``."""
  axes = inputs.spatial_axes if per_image else (0, *inputs.spatial_axes)
  sums = tuple(t.sum(axes) for t in terms)
  if per_image or axis_name is None:
    return sums
  return jax.lax.psum(sums, axis_name)


def class_mean(
  values: jax.Array,
  target_sum: jax.Array,
  *,
  mode: str,
  include_background: bool,
  class_weights: jax.Array | None,
  ignore_empty: bool,
) -> tuple[jax.Array, jax.Array]:
  """Weighted mean over the class axis of ``values`` ``(..., C)``.

  Class ``c`` has weight ``class_weights[c]`` (1 by default), 0 for the background channel 0 in
  multiclass mode when ``include_background`` is False, and 0 where ``target_sum`` is 0 when
  ``ignore_empty``. Returns ``(mean, counted)``: ``counted`` is 1.0 where any class had weight
  (else ``mean`` is 0 and the entry should be left out of a mean over images).
  """
  c = values.shape[-1]
  w = jnp.ones((c,), jnp.float32) if class_weights is None else class_weights
  if mode == "multiclass" and not include_background:
    w = w.at[0].set(0.0)
  w = jnp.broadcast_to(w, values.shape)
  if ignore_empty:
    w = w * (target_sum > 0)
  den = w.sum(-1)
  return safe_divide((w * values).sum(-1), den), (den > 0).astype(jnp.float32)


def reduce_images(
  values: jax.Array,
  counted: jax.Array,
  inputs: Inputs,
  *,
  per_image: bool,
  reduction: str,
  axis_name=None,
) -> jax.Array:
  """Reduces region-loss values: ``(batch,)`` with ``per_image``, else a pooled scalar.

  An entry counts when ``counted`` is 1 (some class was counted, see :func:`class_mean`) and it
  has at least one kept pixel (an all-ignored image, or with pooled statistics an all-ignored
  global batch, gives 0 and drops out). Per image, ``'mean'`` averages over the images that count
  across the ``axis_name`` devices, ``'sum'`` adds them, ``'none'`` returns them. Pooled
  statistics already give one value for the batch, returned for ``'mean'`` and ``'sum'``.
  """
  if not per_image:
    kept = _psum(inputs.weights.sum(), axis_name) > 0
    return values * counted * kept.astype(jnp.float32)
  values = values * counted * image_has_pixels(inputs)
  counted = counted * image_has_pixels(inputs)
  if reduction == "none":
    return values
  total = _psum(values.sum(), axis_name)
  if reduction == "sum":
    return total
  return safe_divide(total, _psum(counted.sum(), axis_name))


def image_has_pixels(inputs: Inputs) -> jax.Array:
  """1.0 for each image with at least one kept pixel, ``(batch,)``."""
  return (inputs.weights.sum(inputs.spatial_axes) > 0).astype(jnp.float32)
