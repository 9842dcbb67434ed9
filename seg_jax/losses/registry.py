"""The loss registry: configs choose a loss by name.

``register(name)`` adds a loss; ``get(name, **options)`` returns it with those options bound
(unknown names and options are errors that list the valid ones); ``names()`` lists the registry.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
  """Decorator adding a loss function to the registry under ``name``."""

  def decorator(fn: Callable) -> Callable:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"loss {name!r} is already registered to {_REGISTRY[name].__name__}.")
    _REGISTRY[name] = fn
    return fn

  return decorator


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
  sig = inspect.signature(lookup(name))
  return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


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
