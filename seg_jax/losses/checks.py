r"""``checked(loss_fn)``: a loss that raises on bad input *values*, from inside ``jit`` too.

The plain losses check shapes and dtypes at trace time but not values: an integer label outside
the classes, a NaN logit or a negative mask weight cannot raise from compiled code without a
transfer to the host, so such pixels are dropped (labels, mask) or give a NaN loss (logits). The
checked form adds checks of the values (computed inside the loss, see
:func:`seg_jax.losses._common.value_checks`, and raised through ``jax.experimental.checkify``):

* integer labels in ``[0, channels)`` (``{0, 1}`` in binary mode), besides ``ignore_index``;
* dense labels in ``[0, 1]``;
* finite logits (probabilities in ``[0, 1]`` with ``from_logits=False``);
* finite mask weights ``>= 0``.

A failed check raises an error whose message names the loss, an offending value (NaN if any,
else the largest), the valid range and how many entries are outside it (counted in the arrays
the loss sees: one device's shard inside ``shard_map``), e.g. ``dice: labels hold 255, valid
range [0, 3) (ignore_index=None; 12 of 128 pixels are outside it)``. Where and as what it is raised:

* called eagerly: at once, ``checkify.JaxRuntimeError`` (a ``ValueError``);
* traced inside :func:`checkified` (``checkify.checkify`` that knows of checked losses, as the
  trainer's checked step is): the error joins that function's error, and ``err.throw()`` on the
  host raises ``checkify.JaxRuntimeError``;
* traced under a plain ``jax.jit`` (or ``grad``, ``vmap``): from the running program, through a
  host callback (``jax.debug.callback``), as ``jax.errors.JaxRuntimeError``, whose message also
  carries the callback's traceback (and JAX logs it). The callback runs on a host device: on a
  GPU or TPU started with ``JAX_PLATFORMS=cuda`` (or ``tpu``) alone, list ``cpu`` too
  (``JAX_PLATFORMS=cuda,cpu``), or the failed check surfaces as ``jax.debug.callback failed to
  find a local CPU device``. :func:`checkified` needs no callback (measured on an H200,
  2026-12-04: the trainer's checked steps ran with ``JAX_PLATFORMS=cuda``).

Non-finite logits are found through the loss value: every registry loss returns NaN for them
(``tests/test_losses_contract.py``), and only a non-finite value makes the checks scan the
logits for the message. A function of losses that hides a NaN loss (``nan_to_num``) hides non-finite
logits from its checked form too.

Cost: the checks read the labels and mask once more and add a host transfer of the error; see the
``(checked)`` rows of ``benchmarks/losses.py``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from seg_jax.losses._common import ValueCheck, value_checks

_FUNCTIONALISED = threading.local()


def _throw(err: checkify.Error) -> None:
  """Host side of the callback: raises the error if a check failed."""
  err.throw()


def _raise(err: checkify.Error) -> None:
  """Raises ``err`` now if it is concrete, else makes the traced program raise it."""
  if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(err)):
    err.throw()
  elif getattr(_FUNCTIONALISED, "on", False):
    checkify.check_error(err)  # Joins the error of the enclosing checkified(...) function.
  else:
    # A plain jit cannot stage check_error (it fails when lowered): raise from a host callback.
    jax.debug.callback(_throw, err)


def checkified(fn: Callable, errors=checkify.user_checks) -> Callable:
  """``checkify.checkify(fn, errors)`` in which :func:`checked` losses join the returned error.

  ``checkified(fn)(*args)`` returns ``(err, out)``; ``err.throw()`` on the host raises a failed
  check with its plain message (no callback traceback). Jit the result, not ``fn``:
  ``jax.jit(checkified(step))``. Used by the trainer for its checked steps.
  """

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    previous = getattr(_FUNCTIONALISED, "on", False)
    _FUNCTIONALISED.on = True
    try:
      return fn(*args, **kwargs)
    finally:
      _FUNCTIONALISED.on = previous

  return checkify.checkify(traced, errors=errors)


def checked(loss_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """``loss_fn`` with value checks that raise, also inside ``jit`` (module docstring).

  Works for any function that computes registry losses (a registry function, one from
  :func:`seg_jax.losses.get` with bound options, :func:`seg_jax.losses.combine` or
  :func:`seg_jax.losses.deep_supervision`): every loss call inside it is checked. Values and
  gradients are those of ``loss_fn``.

  Args:
    loss_fn: ``(logits, labels, **options) -> jax.Array``.

  Returns:
    A function with ``loss_fn``'s signature.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from seg_jax import losses
    >>> loss_fn = jax.jit(losses.checked(losses.get("dice")))
    >>> labels = jnp.full((1, 4, 4), 255)
    >>> try:
    ...   loss_fn(jnp.zeros((1, 4, 4, 3)), labels).block_until_ready()
    ... except Exception as e:
    ...   print("labels hold 255, valid range [0, 3) (ignore_index=None" in str(e))
    True
  """
  if not callable(loss_fn):
    raise TypeError(f"checked: loss_fn must be callable, got {loss_fn!r}.")

  @functools.wraps(loss_fn)
  def fn(*args, **kwargs):
    with value_checks() as records:
      out = loss_fn(*args, **kwargs)
    _raise(_functionalise(records, out))
    return out

  return fn


def _functionalise(records: list[ValueCheck], out) -> checkify.Error:
  """The ``checkify`` error of the recorded checks of a loss call whose value is ``out``.

  Only scalars are checkified; the checks' reductions run in the caller's trace, those marked
  ``if_not_finite`` under a ``lax.cond`` on the finiteness of ``out``.
  """
  leaves = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(out) if jnp.size(v)]
  finite = functools.reduce(jnp.logical_and, leaves, jnp.bool_(True))
  counts, values = [], []
  for record in records:
    if record.if_not_finite:
      count, value = jax.lax.cond(finite, record.passed, record.stats)
    else:
      count, value = record.stats()
    counts.append(count)
    values.append(value)

  def check(counts, values):
    for record, count, value in zip(records, counts, values, strict=True):
      checkify.check(count == 0, record.message, value=value, count=count)

  err, _ = checkify.checkify(check)(counts, values)
  return err
