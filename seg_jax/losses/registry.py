"""The loss registry: configs choose a loss by name.

``register(name)`` adds a loss; ``get(name, **options)`` returns it with those options bound
(unknown names and options are errors that list the valid ones); ``names()`` lists the registry.

**Per-example targets.** A loss may declare, with ``register(name, targets={option: kind})``,
keyword options that take a per-example target derived from the labels alone (a skeleton, a
distance map): the target does not change during training, so a data pipeline can compute it
once per example on the host and the trainer pass it as ``option``; without it the loss computes
its own in ``jit``. ``targets(name)`` returns the declaration; ``kind`` names what the option
expects (see :data:`TARGET_KINDS`), and :mod:`seg_jax.data.targets` computes each kind.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}
_TARGETS: dict[str, dict[str, str]] = {}

# What each kind of per-example target holds (the option's format, made from the labels).
TARGET_KINDS = {
  "tubed_skeleton": "int class map (batch, *spatial): the class of each pixel of the dilated "
  "skeleton of the foreground, 0 elsewhere (Kirchhoff et al. 2024)",
  "signed_distance": "float (batch, *spatial, channels): signed distance to each channel's "
  "ground-truth boundary, as seg_jax.losses.signed_distance_map",
  "boundary_distance": "float (batch, *spatial, channels): unsigned distance to each channel's "
  "ground-truth boundary, as seg_jax.losses.boundary_distance_map",
}


def register(name: str, *, targets: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
  """Decorator adding a loss function to the registry under ``name``.

  ``targets``: ``{option: kind}`` for the options that take a per-example target (module
  docstring); each ``kind`` one of :data:`TARGET_KINDS`.
  """
  targets = dict(targets or {})
  for option, kind in targets.items():
    if kind not in TARGET_KINDS:
      raise ValueError(f"loss {name!r}: target {option!r} has unknown kind {kind!r}.")

  def decorator(fn: Callable) -> Callable:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"loss {name!r} is already registered to {_REGISTRY[name].__name__}.")
    missing = sorted(set(targets) - set(_keyword_options(fn)))
    if missing:
      raise ValueError(f"loss {name!r} declares targets {missing} that are not its options.")
    _REGISTRY[name] = fn
    _TARGETS[name] = targets
    return fn

  return decorator


def _keyword_options(fn: Callable) -> list[str]:
  sig = inspect.signature(fn)
  return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def targets(name: str) -> dict[str, str]:
  """``{option: kind}``: the per-example targets loss ``name`` can take (module docstring).

  Example:
    >>> from seg_jax import losses
    >>> losses.targets("skeleton_recall")
    {'skeleton': 'tubed_skeleton'}
  """
  lookup(name)
  return dict(_TARGETS[name])


def names() -> list[str]:
  """Sorted names of every registered loss."""
  return sorted(_REGISTRY)


def lookup(name: str) -> Callable:
  """The registered loss function ``name`` (options unbound); clear error if unknown."""
  if name not in _REGISTRY:
    close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"Unknown loss {name!r}.{hint} Registered losses: {', '.join(names())}.")
  return _REGISTRY[name]


def options(name: str) -> list[str]:
  """The keyword options that loss ``name`` accepts."""
  return _keyword_options(lookup(name))


def get(name: str, **opts) -> Callable:
  """Returns loss ``name`` with ``opts`` bound as keyword options.

  Example:
    >>> from seg_jax import losses
    >>> loss_fn = losses.get("focal", gamma=2.0)

  Raises:
    KeyError: ``name`` is not registered (the message lists the registry).
    TypeError: an option the loss does not take (the message lists the ones it does).
  """
  fn = lookup(name)
  valid = options(name)
  unknown = sorted(set(opts) - set(valid))
  if unknown:
    raise TypeError(
      f"Loss {name!r} has no option(s) {', '.join(map(repr, unknown))}; its options are: "
      f"{', '.join(valid)}."
    )
  bound = functools.partial(fn, **opts)
  functools.update_wrapper(bound, fn)
  return bound
