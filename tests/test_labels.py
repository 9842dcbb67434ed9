"""check_labels (eager validation of integer class maps) and what such labels do inside a loss."""

import jax
import numpy as np
import pytest

from seg_jax import losses


def test_valid_labels_pass():
  losses.check_labels(np.array([[0, 1, 2], [2, 1, 0]]), 3)
  losses.check_labels(np.array([0, 1, 255]), 2, ignore_index=255)
  losses.check_labels(np.array([True, False]), 2)  # A boolean binary mask.
  losses.check_labels(np.zeros((0,), np.int32), 2)  # Nothing to check.


def test_out_of_range_values_are_listed_with_the_shape():
  labels = np.array([[0, 3, 1], [-1, 7, 3]], np.int64)
  with pytest.raises(ValueError) as err:
    losses.check_labels(labels, 3)
  message = str(err.value)
  assert "(2, 3)" in message and "[0, 3)" in message
  assert "-1, 3, 7" in message


def test_ignore_index_is_allowed_but_only_that_value():
  with pytest.raises(ValueError, match=r"value\(s\) 254 outside \[0, 2\) or ignore_index=255"):
    losses.check_labels(np.array([0, 1, 255, 254]), 2, ignore_index=255)


def test_float_labels_are_a_type_error():
  with pytest.raises(TypeError, match="must be integers, got dtype float32"):
    losses.check_labels(np.array([0.0, 1.0], np.float32), 2)


def test_many_bad_values_are_shortened():
  with pytest.raises(ValueError, match=r"10, 11, 12, 13, 14, 15, 16, 17, 18, 19 \.\.\."):
    losses.check_labels(np.arange(10, 40), 2)


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal", "lovasz"])
def test_out_of_range_labels_inside_a_loss_are_ignored_not_nan(name):
  # Inside jit the check cannot raise: such pixels get weight 0, exactly like a mask of 0.
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 4, 4)).astype(np.int32)
  bad = labels.copy()
  bad[0, 0, :2] = [7, -3]
  mask = np.ones((2, 4, 4), np.float32)
  mask[0, 0, :2] = 0
  fn = losses.lookup(name)
  value, grad = jax.jit(jax.value_and_grad(lambda x, y: fn(x, y)))(logits, bad)
  masked = jax.jit(lambda x, y, m: fn(x, y, mask=m))(logits, labels, mask)
  assert np.isfinite(value) and np.isfinite(grad).all()
  np.testing.assert_allclose(value, masked, rtol=1e-6)
  assert np.all(np.asarray(grad)[0, 0, :2] == 0)


def test_negative_or_nan_mask_weights_count_as_ignored():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 4, 4)).astype(np.int32)
  mask = np.ones((2, 4, 4), np.float32)
  odd = mask.copy()
  odd[1, 1, 1], odd[1, 2, 2] = -5.0, np.nan
  mask[1, 1, 1] = mask[1, 2, 2] = 0.0
  for name in ("cross_entropy", "dice"):
    fn = jax.jit(losses.lookup(name))
    got = fn(logits, labels, mask=odd)
    np.testing.assert_allclose(got, fn(logits, labels, mask=mask), rtol=1e-6)
