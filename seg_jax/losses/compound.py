r"""Compound losses: weighted sums of registry losses, the nnU-Net presets and deep supervision.

* :func:`combine` builds :math:`L = \sum_k w_k L_k` from registry names and weights.
* :func:`dice_ce_loss` (registry ``'dice_ce'``) and :func:`dice_focal_loss` (``'dice_focal'``) are
  the two common presets, with every option of their components as explicit keyword options.
* :func:`deep_supervision` wraps any loss for multi-scale outputs (nnU-Net's deep supervision).

Option routing, the same everywhere in this module: an option goes to every component whose
signature has it (``mode``, ``mask``, ``reduction``, ``axis_name``... go to all of them,
``smooth`` only to the region losses, ``gamma`` only to focal); an option that no component takes
is an error. ``class_weights`` exists in both cross-entropy (a per-class pixel weight) and the
region losses (a weight in the mean over classes), so a shared ``class_weights`` reaches both.
Names that mean different things in different losses (``alpha``: focal's positive-class weight,
Tversky's false-positive weight, clDice's mixing weight, the Hausdorff exponent; ``gamma``;
``distance_maps``) are an error as shared options when they would reach losses of different
meanings: give them per component, ``options={'focal': {'alpha': 0.25}}``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.losses import registry
from seg_jax.losses._common import require
from seg_jax.losses.boundary import boundary_loss, hausdorff_dt_loss
from seg_jax.losses.cross_entropy import cross_entropy
from seg_jax.losses.dice import dice_loss
from seg_jax.losses.focal import focal_loss
from seg_jax.losses.registry import register
from seg_jax.losses.skeleton_recall import skeleton_recall_loss
from seg_jax.losses.topk import topk_cross_entropy


def _keyword_options(fn: Callable) -> tuple[str, ...]:
  sig = inspect.signature(fn)
  return tuple(p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _options_table(components: Mapping[str, Sequence[str]]) -> str:
  return "; ".join(f"{name}: {', '.join(opts)}" for name, opts in components.items())


def _check_weight(value, what: str, *, where: str):
  """A weight: a finite number >= 0 (returned as float), or a traced scalar (used as is)."""
  if isinstance(value, jax.Array | np.ndarray):
    if value.shape != ():
      raise ValueError(f"{where}: {what} must be a scalar, got an array of shape {value.shape}.")
    try:
      value = float(value)
    except jax.errors.ConcretizationTypeError:  # A traced weight (e.g. a schedule inside jit).
      return value
  if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
    raise TypeError(f"{where}: {what} must be a number, got {value!r}.")
  value = float(value)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"{where}: {what} must be a finite number >= 0, got {value!r}.")
  return value


# Option names that mean different things in different losses: for each, the groups of registry
# losses in which it means the same thing. A shared option of such a name that would reach losses
# of two groups is an error (it must be given per component, with ``options``), e.g. ``alpha`` is
# focal's positive-class weight but Tversky's false-positive weight.
_MEANINGS: dict[str, tuple[frozenset[str], ...]] = {
  "alpha": (
    frozenset({"focal", "dice_focal"}),  # positive-class / per-class weight
    frozenset({"tversky", "focal_tversky"}),  # weight of the false positives
    frozenset({"cldice"}),  # weight of clDice against soft Dice
    frozenset({"hausdorff_dt", "dice_hausdorff"}),  # exponent of the distances
  ),
  "gamma": (
    frozenset({"focal", "dice_focal"}),  # focusing parameter
    frozenset({"focal_tversky"}),  # exponent of 1 - TI
    frozenset({"unified_focal"}),  # background suppression / foreground enhancement
  ),
  "distance_maps": (
    frozenset({"boundary", "dice_boundary"}),  # signed distance maps
    frozenset({"hausdorff_dt", "dice_hausdorff"}),  # unsigned ground-truth distances
  ),
}


def _meaning(option: str, name: str) -> int | str:
  """The group in which ``option`` of loss ``name`` has its meaning: its index in
  :data:`_MEANINGS`, or the loss name itself for a loss in no group (a meaning of its own)."""
  for i, group in enumerate(_MEANINGS.get(option, ())):
    if name in group:
      return i
  return name


def _route(
  opts: Mapping, components: Mapping[str, Sequence[str]], *, where: str
) -> dict[str, dict]:
  """Splits ``opts`` among ``components`` (name -> accepted options).

  Raises TypeError for an option that no component takes, and for one that would reach
  components in which it means different things (:data:`_MEANINGS`).
  """
  unknown = sorted(k for k in opts if not any(k in accepted for accepted in components.values()))
  if unknown:
    raise TypeError(
      f"{where}: no component takes option(s) {', '.join(map(repr, unknown))}. Options by "
      f"component: {_options_table(components)}."
    )
  for option in opts:
    if option not in _MEANINGS:
      continue
    receivers = [name for name, accepted in components.items() if option in accepted]
    if len({_meaning(option, name) for name in receivers}) > 1:
      raise TypeError(
        f"{where}: option {option!r} means different things in components "
        f"{', '.join(map(repr, receivers))}; give it to each component separately with "
        f"options={{name: {{{option!r}: value}}}}."
      )
  return {
    name: {k: v for k, v in opts.items() if k in accepted} for name, accepted in components.items()
  }


def _weighted_sum(terms, logits, labels, *, where):
  """``sum(w * fn(logits, labels, **kw))`` over ``terms`` = [(weight, fn, kw)], skipping w == 0."""
  total = None
  for weight, fn, kwargs in terms:
    if isinstance(weight, float) and weight == 0.0:
      continue
    value = fn(logits, labels, **kwargs)
    value = value if isinstance(weight, float) and weight == 1.0 else weight * value
    total = value if total is None else total + value
  if total is None:
    raise ValueError(f"{where}: every weight is 0; nothing to compute.")
  return total


def combine(
  weights: Mapping[str, float],
  *,
  options: Mapping[str, Mapping] | None = None,
  **shared,
) -> Callable[..., jax.Array]:
  r"""Weighted sum of registry losses, :math:`L = \sum_k w_k\, L_k(\text{logits}, \text{labels})`.

  Each component is the registry loss ``name`` called with its own options. ``shared`` options
  go to every component whose signature has them (e.g. ``mode``, ``reduction`` to all; ``smooth``
  to the region losses only), ``options[name]`` adds or overrides options for one component.
  Keyword arguments given per call are routed the same way (per-call values override bound
  ones), so the result has the standard loss signature.

  Weights are numbers >= 0 (a weight of exactly 0 skips the component: it is not computed) or
  scalar JAX arrays (used as given, e.g. a weight schedule passed into a jitted step). With
  ``reduction='none'`` every component must give ``(batch,)`` values, so region losses need
  ``per_image=True``.

  Args:
    weights: ``{registry name: weight}``, e.g. ``{'dice': 1.0, 'cross_entropy': 1.0}``.
    options: per-component options, ``{name: {option: value}}``; overrides ``shared``.
    **shared: options for every component that accepts them.

  Returns:
    ``loss(logits, labels, *, mask=None, axis_name=None, **per_call_options) -> jax.Array``, with
    attribute ``components``: ``{name: (weight, bound options)}``.

  Raises:
    KeyError: an unknown loss name (the message lists the registry).
    TypeError: an option that no component takes, or ``options[name]`` with an option ``name``
      does not take (the message lists which components take which options).
    ValueError: empty ``weights``, a negative or non-finite weight, or ``options`` for a name not
      in ``weights``.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax import losses
    >>> loss_fn = losses.combine({'dice': 1.0, 'focal': 0.5}, include_background=False,
    ...                          options={'focal': {'gamma': 3.0}})
    >>> logits, labels = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8), jnp.int32)
    >>> loss_fn(logits, labels).shape
    ()
  """
  where = "combine"
  if not isinstance(weights, Mapping):
    raise TypeError(f"{where}: weights must be a mapping {{loss name: weight}}, got {weights!r}.")
  if not weights:
    raise ValueError(
      f"{where}: weights is empty; registered losses: {', '.join(registry.names())}."
    )
  fns = {name: registry.lookup(name) for name in weights}
  ws = {name: _check_weight(w, f"weight of {name!r}", where=where) for name, w in weights.items()}
  if all(isinstance(w, float) and w == 0.0 for w in ws.values()):
    raise ValueError(f"{where}: every weight is 0 in {dict(weights)}; nothing to compute.")
  accepted = {name: _keyword_options(fn) for name, fn in fns.items()}

  options = {} if options is None else options
  if not isinstance(options, Mapping):
    raise TypeError(f"{where}: options must be a mapping {{loss name: {{option: value}}}}.")
  for name, opts in options.items():
    if name not in weights:
      raise ValueError(
        f"{where}: options given for {name!r}, which is not a component; components: "
        f"{', '.join(weights)}."
      )
    if not isinstance(opts, Mapping):
      raise TypeError(f"{where}: options[{name!r}] must be a mapping of options, got {opts!r}.")
    bad = sorted(set(opts) - set(accepted[name]))
    if bad:
      raise TypeError(
        f"{where}: loss {name!r} has no option(s) {', '.join(map(repr, bad))}; its options are: "
        f"{', '.join(accepted[name])}."
      )

  routed = _route(shared, accepted, where=where)
  bound = {name: {**routed[name], **dict(options.get(name, {}))} for name in weights}

  def combined(logits, labels, *, mask=None, axis_name=None, **kwargs):
    per_call = dict(kwargs)
    if mask is not None:
      per_call["mask"] = mask
    if axis_name is not None:
      per_call["axis_name"] = axis_name
    call_routed = _route(per_call, accepted, where=where)
    terms = [(ws[n], fns[n], {**bound[n], **call_routed[n]}) for n in weights]
    return _weighted_sum(terms, logits, labels, where=where)

  desc = " + ".join(f"{w!r}*{name}" for name, w in ws.items())
  combined.__name__ = "combined_loss"
  combined.__qualname__ = "combined_loss"
  combined.__doc__ = f"Compound loss {desc} (built by seg_jax.losses.combine)."
  combined.components = {name: (ws[name], dict(bound[name])) for name in weights}
  return combined


_STANDARD_DOC = r"""
    logits: ``(batch, *spatial, channels)`` logits (probabilities if ``from_logits=False``).
    labels: integer class map ``(batch, *spatial)`` or dense labels of ``logits.shape``.
    mode, from_logits, mask, ignore_index, reduction, axis_name: the standard options (see
      :mod:`seg_jax.losses._common`), given to both components. With ``reduction='none'`` the
      dice term needs ``per_image=True``."""


@register("dice_ce")
def dice_ce_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  ce_weight: float = 1.0,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  squared: bool = False,
  log: bool = False,
  soft_labels: bool = False,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Dice + cross-entropy, nnU-Net's default loss: ``dice_weight*dice + ce_weight*CE``.

    .. math::
      L = w_\text{dice}\Big(1 - \frac{1}{|K|}\sum_{c\in K}
          \frac{2\sum_i p_{ic} g_{ic} + s}{\sum_i p_{ic} + \sum_i g_{ic} + s}\Big)
        + w_\text{ce}\,\frac{-\sum_i m_i \sum_c g_{ic}\log p_{ic}}{\sum_i m_i}

    i.e. :func:`seg_jax.losses.dice_loss` plus :func:`seg_jax.losses.cross_entropy` with the same
    inputs. Each option below goes to the component(s) that have it: the region options
    (``include_background``, ``per_image``, ``smooth``, ``ignore_empty``, ``squared``, ``log``) to
    dice, ``label_smoothing`` to cross-entropy, ``class_weights`` to both (a per-class weight of the
    dice class mean and a per-class pixel weight of CE).

    Convention: the defaults are those of the components. nnU-Net (Isensee et al. 2021) uses
    ``include_background=False`` (``do_bg=False``), ``smooth=1e-5``, ``per_image=False`` when its
    plan chooses batch dice, and weights 1 and 1; pass ``include_background=False`` to match it
    exactly (nnU-Net reports ``-dice`` rather than ``1 - dice``, the same up to a constant).

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      ce_weight: weight of the cross-entropy term (>= 0; 0 skips it).
      include_background, per_image, smooth, ignore_empty, squared, log, soft_labels: dice options,
        see :func:`seg_jax.losses.dice_loss`.
      class_weights: optional ``(channels,)`` per-class weights, given to both terms.
      label_smoothing: cross-entropy label smoothing, see :func:`seg_jax.losses.cross_entropy`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'``.

    References:
      Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
      segmentation", Nature Methods 18, 203-211 (2021).

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> float(losses.dice_ce_loss(logits, labels, include_background=False)) > 0
      True
  """
  opts = {
    "mode": mode,
    "from_logits": from_logits,
    "mask": mask,
    "ignore_index": ignore_index,
    "reduction": reduction,
    "axis_name": axis_name,
    "include_background": include_background,
    "class_weights": class_weights,
    "per_image": per_image,
    "smooth": smooth,
    "ignore_empty": ignore_empty,
    "squared": squared,
    "log": log,
    "soft_labels": soft_labels,
    "label_smoothing": label_smoothing,
  }
  return _preset(
    "dice_ce",
    logits,
    labels,
    {"dice_weight": (dice_weight, dice_loss), "ce_weight": (ce_weight, cross_entropy)},
    opts,
  )


@register("dice_focal")
def dice_focal_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  focal_weight: float = 1.0,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  squared: bool = False,
  log: bool = False,
  soft_labels: bool = False,
  gamma: float = 2.0,
  alpha=None,
) -> jax.Array:
  r"""Dice + focal: ``dice_weight*dice + focal_weight*focal`` (Zhu et al. 2019).

    .. math::
      L = w_\text{dice}\,L_\text{dice}
        + w_\text{focal}\,\frac{\sum_i m_i\,\big(-\alpha_{t}(1-p_{t})^\gamma\log p_{t}\big)_i}
          {\sum_i m_i}

    i.e. :func:`seg_jax.losses.dice_loss` plus :func:`seg_jax.losses.focal_loss` with the same
    inputs (sigmoid focal for binary/multilabel, softmax focal for multiclass). Options go to the
    component(s) that have them: region options to dice, ``gamma`` and ``alpha`` to focal.

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      focal_weight: weight of the focal term (>= 0; 0 skips it).
      include_background, per_image, smooth, ignore_empty, squared, log, soft_labels: dice options,
        see :func:`seg_jax.losses.dice_loss`.
      class_weights: optional ``(channels,)`` per-class weights for the dice class mean.
      gamma, alpha: focal options, see :func:`seg_jax.losses.focal_loss`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'``.

    References:
      Zhu et al., "AnatomyNet: Deep learning for fast and fully automated whole-volume segmentation
      of head and neck anatomy", Medical Physics 46(2), 576-589 (2019).
      Lin et al., "Focal loss for dense object detection", ICCV 2017.

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> losses.get('dice_focal', gamma=3.0)(logits, labels).shape
      ()
  """
  opts = {
    "mode": mode,
    "from_logits": from_logits,
    "mask": mask,
    "ignore_index": ignore_index,
    "reduction": reduction,
    "axis_name": axis_name,
    "include_background": include_background,
    "class_weights": class_weights,
    "per_image": per_image,
    "smooth": smooth,
    "ignore_empty": ignore_empty,
    "squared": squared,
    "log": log,
    "soft_labels": soft_labels,
    "gamma": gamma,
    "alpha": alpha,
  }
  return _preset(
    "dice_focal",
    logits,
    labels,
    {"dice_weight": (dice_weight, dice_loss), "focal_weight": (focal_weight, focal_loss)},
    opts,
  )


@register("dice_topk")
def dice_topk_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  topk_weight: float = 1.0,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  squared: bool = False,
  log: bool = False,
  soft_labels: bool = False,
  k: float = 10.0,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Dice + top-k cross-entropy (nnU-Net's ``DC_and_topk_loss``): ``w_dice*dice + w_topk*TopK``.

    .. math::
      L = w_\text{dice}\,L_\text{dice} + w_\text{topk}\,\frac{1}{K}\sum_{i \in \text{top }K}
          \ell^\text{CE}_i, \qquad K = \tfrac{k}{100}\,\#\text{kept pixels},

    i.e. :func:`seg_jax.losses.dice_loss` plus :func:`seg_jax.losses.topk_cross_entropy` with the
    same inputs; DiceTopK10 is among the most robust losses of Ma et al.'s loss odyssey. Options
    go to the component(s) that have them: the dice options (``include_background``, ``smooth``,
    ``ignore_empty``, ``squared``, ``log``) to dice, ``k`` and ``label_smoothing`` to top-k,
    ``per_image`` and ``class_weights`` to both (per image, both terms are means over images, so
    ``reduction='none'`` gives their sum per image).

    Convention: the defaults are those of the components; nnU-Net's ``nnUNetTrainerDiceTopK10Loss``
    uses ``include_background=False`` (``do_bg=False``), ``smooth=1e-5``, batch dice and ``k=10``
    with weights 1 and 1.

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      topk_weight: weight of the top-k term (>= 0; 0 skips it).
      include_background, smooth, ignore_empty, squared, log, soft_labels: dice options, see
        :func:`seg_jax.losses.dice_loss`.
      per_image: statistics per image (dice) and top-k per image, or (False) over the batch.
      class_weights: optional ``(channels,)`` per-class weights, given to both terms.
      k, label_smoothing: top-k options, see :func:`seg_jax.losses.topk_cross_entropy`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'`` (needs ``per_image=True``).

    References:
      Ma et al., "Loss odyssey in medical image segmentation", Medical Image Analysis 71 (2021).
      Isensee et al., "nnU-Net", Nature Methods 18, 203-211 (2021)
      (``nnunetv2/training/loss/compound_losses.py``).

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> losses.dice_topk_loss(logits, labels, include_background=False).shape
      ()
  """
  opts = {k_: v for k_, v in locals().items() if k_ not in ("logits", "labels")}
  for weight in ("dice_weight", "topk_weight"):
    opts.pop(weight)
  return _preset(
    "dice_topk",
    logits,
    labels,
    {"dice_weight": (dice_weight, dice_loss), "topk_weight": (topk_weight, topk_cross_entropy)},
    opts,
  )


# Options of the dice + distance presets: those every component gets, and dice's own.
_STANDARD_OPTIONS = (
  "mode",
  "from_logits",
  "mask",
  "ignore_index",
  "reduction",
  "axis_name",
  "class_weights",
)
_DICE_REGION_OPTIONS = (
  "include_background",
  "per_image",
  "smooth",
  "ignore_empty",
  "soft_labels",
)


def _dice_distance(
  where: str,
  distance_fn: Callable[..., jax.Array],
  weight_names: tuple[str, str],
  logits,
  labels,
  opts: dict,
) -> jax.Array:
  """``w_dice * dice + w_dist * distance_fn`` with the preset's options ``opts``.

  Every component gets ``_STANDARD_OPTIONS``; dice also ``_DICE_REGION_OPTIONS``; the distance
  loss every other option of ``opts`` except the weights. The distance loss keeps its own
  ``include_background`` default (foreground only).
  """
  standard = {k: opts[k] for k in _STANDARD_OPTIONS}
  dice_opts = {k: opts[k] for k in _DICE_REGION_OPTIONS}
  skip = {*_STANDARD_OPTIONS, *_DICE_REGION_OPTIONS, *weight_names}
  distance_opts = {k: v for k, v in opts.items() if k not in skip}
  terms = [
    (
      _check_weight(opts[weight_names[0]], weight_names[0], where=where),
      dice_loss,
      standard | dice_opts,
    ),
    (
      _check_weight(opts[weight_names[1]], weight_names[1], where=where),
      distance_fn,
      standard | distance_opts,
    ),
  ]
  return _weighted_sum(terms, logits, labels, where=where)


@register("dice_boundary", targets={"distance_maps": "signed_distance"})
def dice_boundary_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  boundary_weight: float = 0.01,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  soft_labels: bool = False,
  distance_maps: jax.Array | None = None,
  sampling=None,
) -> jax.Array:
  r"""Dice + boundary loss, Kervadec et al.'s region + boundary compound.

    .. math::
      L = w_\text{dice}\,L_\text{dice} + w_B\,\frac{1}{\sum_x m_x}\sum_x m_x\,
          \frac{\sum_{c \ne 0} \lambda_c\,p_c(x)\,\phi_{G_c}(x)}{\sum_{c \ne 0}\lambda_c}

    i.e. :func:`seg_jax.losses.dice_loss` plus ``boundary_weight`` times
    :func:`seg_jax.losses.boundary_loss` (:math:`\phi_G` the signed distance map, negative
    inside the object). The paper always uses the boundary term together with a region loss,
    which carries training while the prediction is still far from the true boundaries.

    Convention: the region options (``include_background``, ``per_image``, ``smooth``,
    ``ignore_empty``) go to dice; the boundary term uses the foreground classes only, as the
    paper's ``idc=[1]`` (in binary/multilabel mode every channel); ``class_weights`` go to both;
    ``distance_maps`` and ``sampling`` to the boundary term. The paper raises the boundary weight
    during training (from 0.01, by 0.01 per epoch); this preset keeps a fixed weight, default
    0.01: the distances are in pixels, so the boundary term's values and gradients are one to two
    orders of magnitude larger than those of Dice. For a schedule, call
    ``losses.combine({'dice': 1.0, 'boundary': w})`` with ``w`` a traced scalar inside the step.

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      boundary_weight: weight of the boundary term (>= 0; 0 skips it).
      include_background, per_image, smooth, ignore_empty, soft_labels: dice options, see
        :func:`seg_jax.losses.dice_loss`.
      class_weights: optional ``(channels,)`` per-class weights, given to both terms.
      distance_maps, sampling: boundary options, see :func:`seg_jax.losses.boundary_loss`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'`` (needs ``per_image=True``).

    References:
      Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019; Medical
      Image Analysis 67 (2021).

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> losses.dice_boundary_loss(logits, labels).shape
      ()
  """
  opts = {k: v for k, v in locals().items() if k not in ("logits", "labels")}
  return _dice_distance(
    "dice_boundary", boundary_loss, ("dice_weight", "boundary_weight"), logits, labels, opts
  )


@register("dice_hausdorff", targets={"distance_maps": "boundary_distance"})
def dice_hausdorff_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  hausdorff_weight: float = 0.01,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  soft_labels: bool = False,
  alpha: float = 2.0,
  distance_maps: jax.Array | None = None,
  sampling=None,
) -> jax.Array:
  r"""Dice + Hausdorff distance-transform loss, Karimi & Salcudean's compound.

    .. math::
      L = w_\text{dice}\,L_\text{dice} + w_{HD}\,\frac{1}{\sum_x m_x}\sum_x m_x\,
          \frac{\sum_{c \ne 0}\lambda_c\,(p_c - g_c)^2\,(d_{G_c}^\alpha + d_{P_c}^\alpha)}
          {\sum_{c \ne 0}\lambda_c}

    i.e. :func:`seg_jax.losses.dice_loss` plus ``hausdorff_weight`` times
    :func:`seg_jax.losses.hausdorff_dt_loss`. The paper trains with
    :math:`L_{HD} + \lambda L_{DSC}`, balancing the two terms so that neither dominates.

    Convention: region options go to dice; the Hausdorff term uses the foreground classes only
    (in binary/multilabel mode every channel), as MONAI's ``HausdorffDTLoss`` default;
    ``class_weights`` go to both; ``alpha``, ``distance_maps`` and ``sampling`` to the Hausdorff
    term. Default ``hausdorff_weight=0.01``: with ``alpha=2`` the term is in squared pixels, about
    two orders of magnitude above Dice early in training (on 64 x 64 images); a fixed weight
    keeps it from dominating.

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      hausdorff_weight: weight of the Hausdorff term (>= 0; 0 skips it).
      include_background, per_image, smooth, ignore_empty, soft_labels: dice options, see
        :func:`seg_jax.losses.dice_loss`.
      class_weights: optional ``(channels,)`` per-class weights, given to both terms.
      alpha, distance_maps, sampling: Hausdorff options, see
        :func:`seg_jax.losses.hausdorff_dt_loss`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'`` (needs ``per_image=True``).

    References:
      Karimi & Salcudean, "Reducing the Hausdorff distance in medical image segmentation with
      convolutional neural networks", IEEE TMI 39(2), 2020.

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> losses.dice_hausdorff_loss(logits, labels).shape
      ()
  """
  opts = {k: v for k, v in locals().items() if k not in ("logits", "labels")}
  return _dice_distance(
    "dice_hausdorff", hausdorff_dt_loss, ("dice_weight", "hausdorff_weight"), logits, labels, opts
  )


@register("dice_skeleton_recall", targets={"skeleton": "tubed_skeleton"})
def dice_skeleton_recall_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  mode: str | None = None,
  from_logits: bool = True,
  mask: jax.Array | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
  axis_name=None,
  dice_weight: float = 1.0,
  ce_weight: float = 1.0,
  skeleton_recall_weight: float = 1.0,
  include_background: bool = True,
  class_weights=None,
  per_image: bool = False,
  smooth: float = 1e-5,
  ignore_empty: bool = False,
  soft_labels: bool = False,
  label_smoothing: float = 0.0,
  skeleton: jax.Array | None = None,
  num_iter: int = 5,
  tube: int = 2,
) -> jax.Array:
  r"""Dice + cross-entropy + Skeleton Recall, the paper's training loss (nnU-Net trainer).

    .. math::
      L = w_\text{dice}\,L_\text{dice} + w_\text{ce}\,L_\text{CE} + w_\text{SR}\,
          \Big(1 - \frac{1}{|K|}\sum_{c\in K}
          \frac{\sum_x w_x p_c(x) S_c(x) + s}{\sum_x w_x S_c(x) + s}\Big)

    i.e. :func:`seg_jax.losses.dice_loss` + :func:`seg_jax.losses.cross_entropy` +
    :func:`seg_jax.losses.skeleton_recall_loss` (:math:`S_c` the tubed skeleton of class
    :math:`c`, :math:`K` the foreground classes). Weights 1, 1, 1 are those of the authors'
    ``nnUNetTrainerSkeletonRecall`` (``weight_ce = weight_dice = weight_srec = 1``); the paper
    reports this compound, Skeleton Recall alone does not constrain the volume.

    Convention: ``include_background`` goes to dice only (the skeleton term is foreground only;
    nnU-Net's trainer also uses ``do_bg=False`` for dice: pass ``include_background=False`` to
    match it); ``per_image``, ``smooth``, ``ignore_empty`` to dice and the skeleton term;
    ``class_weights`` to all three; ``soft_labels`` to dice; ``label_smoothing`` to
    cross-entropy; ``skeleton``, ``num_iter``, ``tube`` to the skeleton term.

    Args:
  {standard}
      dice_weight: weight of the dice term (>= 0; 0 skips it).
      ce_weight: weight of the cross-entropy term (>= 0; 0 skips it).
      skeleton_recall_weight: weight of the Skeleton Recall term (>= 0; 0 skips it).
      include_background: dice option, see :func:`seg_jax.losses.dice_loss`.
      class_weights: optional ``(channels,)`` per-class weights, given to every term.
      per_image, smooth, ignore_empty: options of dice and of the skeleton term.
      soft_labels: dice option (the semimetric intersection for soft labels), see
        :func:`seg_jax.losses.dice_loss`.
      label_smoothing: cross-entropy label smoothing, see :func:`seg_jax.losses.cross_entropy`.
      skeleton, num_iter, tube: see :func:`seg_jax.losses.skeleton_recall_loss`.

    Returns:
      float32 scalar, or ``(batch,)`` with ``reduction='none'`` (needs ``per_image=True``).

    References:
      Kirchhoff et al., "Skeleton Recall Loss for Connectivity Conserving and Resource Efficient
      Segmentation of Thin Tubular Structures", ECCV 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> from seg_jax import losses
      >>> logits, labels = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8), jnp.int32)
      >>> losses.dice_skeleton_recall_loss(logits, labels).shape
      ()
  """
  opts = {
    k: v
    for k, v in locals().items()
    if k not in ("logits", "labels", "dice_weight", "ce_weight", "skeleton_recall_weight")
  }
  return _preset(
    "dice_skeleton_recall",
    logits,
    labels,
    {
      "dice_weight": (dice_weight, dice_loss),
      "ce_weight": (ce_weight, cross_entropy),
      "skeleton_recall_weight": (skeleton_recall_weight, skeleton_recall_loss),
    },
    opts,
  )


dice_ce_loss.__doc__ = dice_ce_loss.__doc__.replace("{standard}", _STANDARD_DOC.strip("\n"))
dice_boundary_loss.__doc__ = dice_boundary_loss.__doc__.replace(
  "{standard}", _STANDARD_DOC.strip("\n")
)
dice_hausdorff_loss.__doc__ = dice_hausdorff_loss.__doc__.replace(
  "{standard}", _STANDARD_DOC.strip("\n")
)
dice_focal_loss.__doc__ = dice_focal_loss.__doc__.replace("{standard}", _STANDARD_DOC.strip("\n"))
dice_topk_loss.__doc__ = dice_topk_loss.__doc__.replace("{standard}", _STANDARD_DOC.strip("\n"))
dice_skeleton_recall_loss.__doc__ = dice_skeleton_recall_loss.__doc__.replace(
  "{standard}", _STANDARD_DOC.strip("\n")
)


def _preset(where, logits, labels, parts, opts):
  """Routes ``opts`` to the component functions of ``parts`` {weight name: (weight, fn)}."""
  accepted = {fn.__name__: _keyword_options(fn) for _, fn in parts.values()}
  routed = _route(opts, accepted, where=where)
  terms = [
    (_check_weight(w, wname, where=where), fn, routed[fn.__name__])
    for wname, (w, fn) in parts.items()
  ]
  return _weighted_sum(terms, logits, labels, where=where)


def _spatial_factors(full, coarse, *, index, where):
  factors = []
  for n, m in zip(full, coarse, strict=True):
    if m > n or n % m:
      raise ValueError(
        f"{where}: outputs[{index}] has spatial shape {tuple(coarse)}, which does not divide the "
        f"labels' spatial shape {tuple(full)} (each labels dim must be an integer multiple)."
      )
    factors.append(n // m)
  return tuple(factors)


def _stride_sample(x, factors):
  """``x[:, ::f1, ::f2, ...]`` over the spatial axes following the batch axis."""
  return x[(slice(None), *(slice(None, None, f) for f in factors))]


def _block_sum(x, factors, *, channels: bool):
  """Sums ``x`` ``(batch, *spatial[, C])`` over non-overlapping blocks of size ``factors``."""
  b = x.shape[0]
  spatial = x.shape[1 : 1 + len(factors)]
  shape, axes = [b], []
  for k, (n, f) in enumerate(zip(spatial, factors, strict=True)):
    shape += [n // f, f]
    axes.append(2 + 2 * k)
  if channels:
    shape.append(x.shape[-1])
  return x.reshape(shape).sum(tuple(axes))


def _downsample(labels, mask, factors, *, dense: bool):
  """Labels (and mask) at the resolution of one output; see :func:`deep_supervision`."""
  if all(f == 1 for f in factors):
    return labels, mask
  if not dense:
    return _stride_sample(labels, factors), None if mask is None else _stride_sample(mask, factors)
  size = math.prod(factors)
  y = jnp.asarray(labels, jnp.float32)
  if mask is None:
    return _block_sum(y, factors, channels=True) / size, None
  m = jnp.asarray(mask, jnp.float32)
  kept = _block_sum(m, factors, channels=False)
  ysum = _block_sum(y * m[..., None], factors, channels=True)
  # Where a block keeps no pixel its weight is 0; its (unused) target is the plain block mean.
  plain = _block_sum(y, factors, channels=True) / size
  ok = (kept > 0)[..., None]
  y_ds = jnp.where(ok, ysum / jnp.where(ok, kept[..., None], 1.0), plain)
  return y_ds, kept / size


def deep_supervision(
  loss_fn: Callable[..., jax.Array], weights: Sequence[float] | None = None
) -> Callable[..., jax.Array]:
  r"""Wraps ``loss_fn`` for multi-scale outputs: :math:`L = \sum_i w_i\,L(o_i, \downarrow_i y)`.

  ``outputs`` are logits at decreasing resolution, finest first, each ``(batch, *spatial_i, C)``
  whose spatial dims divide the labels' spatial dims by integer factors :math:`f_i`. The labels
  are brought to each output's resolution:

  * integer class maps by strided nearest sampling, ``labels[:, ::f1, ::f2, ...]`` (the first
    pixel of each block, as PyTorch's ``'nearest'`` interpolation and nnU-Net's order-0
    downsampling of segmentations pick); ``ignore_index`` values carry over and ``mask`` is
    sampled the same way;
  * dense one-hot/soft labels by average pooling over each block, giving soft targets (the
    fraction of each class); with a ``mask``, the targets are averaged over the kept pixels of
    the block and the mask becomes the fraction of the block that is kept.

  Labels (and ``mask``) may instead be given as sequences, one per output, already at each
  output's resolution (as nnU-Net's data loader produces them); they are then used as given.

  Default weights are nnU-Net's :math:`w_i = 2^{-i} / \sum_j 2^{-j}` (halving per level,
  normalised to sum 1). nnU-Net v2 additionally sets the coarsest output's weight to 0 before
  normalising; pass ``weights`` explicitly for that. Explicit weights are used as given (not
  normalised); a weight of 0 skips that output.

  Args:
    loss_fn: a loss ``(logits, labels, **options) -> jax.Array`` (e.g. ``losses.get('dice_ce')``).
    weights: one number >= 0 per output, or ``None`` for the default.

  Returns:
    ``fn(outputs, labels, *, mask=None, per_output=None, **options)``: ``outputs`` a sequence of
    logits, finest first; other keyword options are passed to ``loss_fn`` unchanged at every
    scale (so a per-pixel option other than ``mask`` must not depend on the resolution);
    ``per_output`` gives options per output, ``{option: [value for each output]}``, a ``None``
    value leaving the option out at that output (e.g. a precomputed ``skeleton`` per scale).

  Raises:
    ValueError: no outputs, outputs whose rank, batch or channels differ, a spatial shape that
      does not divide the labels', ``weights`` of the wrong length or with a negative value.

  References:
    Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
    segmentation", Nature Methods 18, 203-211 (2021).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax import losses
    >>> ds_loss = losses.deep_supervision(losses.get('dice_ce'))
    >>> outputs = [jnp.zeros((2, 16, 16, 3)), jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 4, 4, 3))]
    >>> ds_loss(outputs, jnp.zeros((2, 16, 16), jnp.int32)).shape
    ()
  """
  where = "deep_supervision"
  if not callable(loss_fn):
    raise TypeError(f"{where}: loss_fn must be callable, got {loss_fn!r}.")
  if weights is not None:
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence | np.ndarray):
      raise TypeError(f"{where}: weights must be a sequence of numbers, got {weights!r}.")
    weights = tuple(_check_weight(w, f"weights[{i}]", where=where) for i, w in enumerate(weights))
    if not weights:
      raise ValueError(f"{where}: weights is empty.")
    if all(isinstance(w, float) and w == 0.0 for w in weights):
      raise ValueError(f"{where}: every weight is 0 in {weights}; nothing to compute.")

  def fn(outputs, labels, *, mask=None, per_output=None, **kwargs):
    if isinstance(outputs, jax.Array | np.ndarray) or not isinstance(outputs, Sequence):
      raise TypeError(
        f"{where}: outputs must be a sequence (list/tuple) of logits, finest first, got "
        f"{type(outputs).__name__}."
      )
    n = len(outputs)
    if n == 0:
      raise ValueError(f"{where}: outputs is empty.")
    if weights is None:
      w = np.array([2.0**-i for i in range(n)])
      ws = tuple(float(x) for x in w / w.sum())
    else:
      if len(weights) != n:
        raise ValueError(
          f"{where}: {len(weights)} weights for {n} outputs; give one weight per output."
        )
      ws = weights
    shapes = [tuple(np.shape(o)) for o in outputs]
    first = shapes[0]
    for i, s in enumerate(shapes):
      message = (
        f"{where}: outputs[{i}] has shape {s} but outputs[0] has shape {first}; all outputs "
        "need the same rank, batch and channels."
      )
      require(chex.assert_rank, outputs[i], len(first), message=message)
      for axis in (0, -1):
        require(chex.assert_axis_dimension, outputs[i], axis, first[axis], message=message)
    if len(first) < 3:
      raise ValueError(
        f"{where}: outputs must be (batch, *spatial, channels), got outputs[0] of shape {first}."
      )

    per_scale = isinstance(labels, list | tuple)
    if per_scale:
      if len(labels) != n:
        raise ValueError(f"{where}: {len(labels)} label maps for {n} outputs.")
      masks = [None] * n if mask is None else mask
      if not isinstance(masks, list | tuple) or len(masks) != n:
        raise ValueError(
          f"{where}: with per-output labels, mask must be None or a sequence of {n} masks."
        )
      scaled = list(zip(labels, masks, strict=True))
    else:
      yshape = tuple(np.shape(labels))
      d = len(first) - 2
      if len(yshape) not in (d + 1, d + 2) or yshape[0] != first[0]:
        raise ValueError(
          f"{where}: labels must be an integer class map (batch, *spatial) or dense labels "
          f"(batch, *spatial, channels) with {d} spatial dims and batch {first[0]} like outputs, "
          f"got labels of shape {yshape} for outputs[0] of shape {first}."
        )
      dense = len(yshape) == d + 2
      if mask is not None:
        require(
          chex.assert_shape,
          mask,
          yshape[: d + 1],
          message=f"{where}: mask must have the labels' (batch, *spatial) shape "
          f"{yshape[: d + 1]}, got mask of shape {tuple(np.shape(mask))}.",
        )
      full = yshape[1 : d + 1]
      scaled = []
      for i, s in enumerate(shapes):
        factors = _spatial_factors(full, s[1:-1], index=i, where=where)
        scaled.append(_downsample(labels, mask, factors, dense=dense))

    per_output = {} if per_output is None else dict(per_output)
    for option, values in per_output.items():
      if not isinstance(values, list | tuple) or len(values) != n:
        raise ValueError(
          f"{where}: per_output[{option!r}] must be a list of {n} values (one per output)."
        )
      if option in kwargs or option == "mask":
        raise ValueError(f"{where}: option {option!r} given both per output and for all.")

    total = None
    for i in range(n):
      if isinstance(ws[i], float) and ws[i] == 0.0:
        continue
      y, m = scaled[i]
      extra = {} if m is None else {"mask": m}
      extra |= {k: v[i] for k, v in per_output.items() if v[i] is not None}
      value = ws[i] * loss_fn(outputs[i], y, **extra, **kwargs)
      total = value if total is None else total + value
    return total

  fn.__name__ = f"deep_supervision_{getattr(loss_fn, '__name__', 'loss')}"
  fn.__doc__ = f"Deep supervision of {getattr(loss_fn, '__name__', 'loss')} (weights {weights})."
  return fn
