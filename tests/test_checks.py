"""losses.checked: value checks of loss inputs that raise with and without jit.

Every registry loss is covered by tests/test_losses_contract.py (NaN logits, labels 255, negative
mask weights); here are the other checks and modes, the message format, and the ways the error
is raised (eager, jit, vmap, grad, inside ``checkified`` and ``shard_map``), on ``dice`` and a
few others at one small shape.
"""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.experimental import checkify
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import losses

SHAPE = (2, 4, 4, 3)  # 32 pixels, 96 logits.
ERRORS = (checkify.JaxRuntimeError, jax.errors.JaxRuntimeError)


def _inputs(seed=0, shape=SHAPE):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal(shape).astype(np.float32)
  labels = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
  return logits, labels


def _set(array, value, count=1):
  out = np.array(array)
  out.reshape(-1)[:count] = value
  return out


def _labels_255():
  x, y = _inputs()
  return "dice", {}, (x, _set(y, 255, 2)), {}


def _minus_one_besides_ignore_index():
  x, y = _inputs()
  y = _set(y, 255, 3)
  y[1, 0, 0] = -1
  return "cross_entropy", {"ignore_index": 255}, (x, y), {}


def _binary_label_2():
  x, y = _inputs(shape=(2, 4, 4, 1))
  return "focal", {}, (x, _set(y % 2, 2, 5)), {}


def _dense_label_above_1():
  x, y = _inputs()
  return "jaccard", {}, (x, _set(jax.nn.one_hot(y, 3), 1.5)), {}


def _logit_inf():
  x, y = _inputs()
  return "tversky", {}, (_set(x, np.inf), y), {}


def _probability_above_1():
  x, y = _inputs()
  return "dice", {"from_logits": False}, (_set(jax.nn.softmax(x), 1.25), y), {}


def _mask_nan():
  x, y = _inputs()
  return "lovasz", {}, (x, y), {"mask": _set(np.ones(SHAPE[:-1], np.float32), np.nan, 4)}


BAD = (
  (
    "labels_255",
    _labels_255,
    "dice: labels hold 255, valid range [0, 3) (ignore_index=None; 2 of 32 pixels are outside it)",
  ),
  (
    "labels_besides_ignore_index",
    _minus_one_besides_ignore_index,
    "cross_entropy: labels hold -1, valid range [0, 3) (ignore_index=255; 1 of 32 pixels",
  ),
  (
    "binary_labels",
    _binary_label_2,
    "focal: labels hold 2, valid range [0, 2) (ignore_index=None, binary mode: 0 or 1; 5 of 32",
  ),
  (
    "dense_labels",
    _dense_label_above_1,
    "jaccard: labels hold 1.5, valid range [0, 1] (dense labels; 1 of 96 entries",
  ),
  ("logits", _logit_inf, "tversky: logits hold inf, valid values are finite (1 of 96 entries"),
  (
    "probabilities",
    _probability_above_1,
    "dice: logits (probabilities, from_logits=False) hold 1.25, valid range [0, 1] (1 of 96",
  ),
  (
    "mask",
    _mask_nan,
    "lovasz: mask holds nan, valid weights are finite and >= 0 (4 of 32 pixels are not)",
  ),
)


class CheckedTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*BAD)
  def test_bad_values_raise_naming_the_value_and_the_range(self, make, message):
    name, options, args, kwargs = make()
    fn = self.variant(losses.checked(losses.get(name, **options)))
    with self.assertRaisesRegex(ERRORS, re.escape(message)):
      jax.block_until_ready(fn(*args, **kwargs))

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_valid_inputs_give_the_plain_value_and_gradient(self):
    # Labels equal to ignore_index and mask weights of 0 are valid.
    x, y = _inputs(1)
    y = _set(y, 255, 3)
    mask = _set(np.ones(SHAPE[:-1], np.float32), 0.0, 5)
    plain = losses.get("dice_ce", ignore_index=255)
    got = self.variant(jax.value_and_grad(losses.checked(plain)))(x, y, mask=mask)
    want = jax.value_and_grad(plain)(x, y, mask=mask)
    chex.assert_trees_all_close(got, want, rtol=1e-6)

  def test_vmap_and_grad_raise_from_jit(self):
    x, y = _inputs(2)
    fn = losses.checked(losses.get("dice"))
    bad = np.stack([y, _set(y, 7)])
    with self.assertRaisesRegex(ERRORS, re.escape("labels hold 7, valid range [0, 3)")):
      jax.block_until_ready(jax.jit(jax.vmap(fn))(np.stack([x, x]), bad))
    with self.assertRaisesRegex(ERRORS, re.escape("logits hold nan")):
      jax.block_until_ready(jax.jit(jax.grad(fn))(_set(x, np.nan), y))

  def test_wrappers_of_losses_are_checked(self):
    # deep_supervision calls the loss once per weighted output: a NaN in the second output is
    # found (the coarsest has weight 0 by default and is not computed).
    x, y = _inputs(3, shape=(2, 8, 8, 3))
    middle = _set(x[:, ::2, ::2], np.nan)
    fn = losses.checked(losses.deep_supervision(losses.get("dice")))
    with self.assertRaisesRegex(ERRORS, re.escape("dice: logits hold nan")):
      fn([x, middle, x[:, ::4, ::4]], y)
    combined = losses.checked(losses.combine({"focal": 1.0, "jaccard": 0.5}))
    with self.assertRaisesRegex(ERRORS, re.escape("labels hold 3, valid range [0, 3)")):
      combined(x, _set(y, 3))

  def test_checkified_step_in_shard_map_throws_the_plain_message(self):
    # The trainer's form: checked losses inside shard_map inside checkified; err.throw() on the
    # host gives the check's own message (no callback traceback).
    mesh = Mesh(np.array(jax.devices()), ("data",))
    fn = losses.checked(losses.get("cross_entropy"))
    step = jax.jit(
      losses.checkified(
        jax.shard_map(
          functools.partial(fn, axis_name="data"),
          mesh=mesh,
          in_specs=(P("data"), P("data")),
          out_specs=P(),
        )
      )
    )
    x, y = _inputs(4, shape=(8, 4, 4, 3))
    err, value = step(x, y)
    err.throw()  # Valid inputs: no error, the plain value.
    np.testing.assert_allclose(value, losses.cross_entropy(x, y), rtol=1e-6)
    err, _ = step(x, _set(y, -3))
    with self.assertRaises(checkify.JaxRuntimeError) as info:
      err.throw()
    self.assertRegex(str(info.exception), r"^cross_entropy: labels hold -3, valid range \[0, 3\)")

  def test_not_callable_is_an_error(self):
    with self.assertRaisesRegex(TypeError, "loss_fn must be callable"):
      losses.checked("dice")

  def test_plain_losses_still_take_bad_values_silently(self):
    # The unchecked contract: out-of-range labels and negative/NaN weights count as ignored
    # pixels (the checked form exists to make them loud).
    x, y = _inputs(5)
    mask = np.ones(SHAPE[:-1], np.float32)
    mask[0, 0, 0] = -1.0
    mask[1, 0, 0] = np.nan
    kept = mask.copy()
    kept[0, 0, 0] = kept[1, 0, 0] = 0.0
    with_bad = losses.dice_loss(x, _set(y, 255, 2), mask=mask)
    ignored = losses.dice_loss(x, _set(y, 255, 2), mask=kept, ignore_index=255)
    np.testing.assert_allclose(with_bad, ignored, rtol=1e-6)
    self.assertTrue(np.isfinite(with_bad) and float(jnp.abs(with_bad)) > 0)
