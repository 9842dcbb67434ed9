"""Tests of topk_cross_entropy and the dice_topk preset (seg_jax/losses/topk.py, compound.py).

Values are checked against a float64 NumPy reference that sorts the per-pixel cross-entropy
(tests/np_ref.py ``pixel_ce``, ``top_fraction_mean``), written from nnU-Net's TopKLoss formula;
the selection under shard_map is checked by the contract tests (tests/test_losses_contract.py).
"""

import functools

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax import losses


def ref_topk(logits, labels, *, mode, k=10.0, mask=None, ignore_index=None, per_image=False):
  c = logits.shape[-1]
  ce = np_ref.pixel_ce(logits, labels, mode)
  if np.ndim(labels) < np.ndim(logits):
    w = np_ref.pixel_weights(labels, c, mask, ignore_index, binary=mode == "binary")
  else:
    w = np.ones(ce.shape) if mask is None else np.asarray(mask, np.float64)
  if not per_image:
    return np_ref.top_fraction_mean(ce, w, k / 100)
  vals = [np_ref.top_fraction_mean(ce[b], w[b], k / 100) for b in range(ce.shape[0])]
  kept = [w[b].sum() > 0 for b in range(ce.shape[0])]
  return float(np.mean([v for v, ok in zip(vals, kept, strict=True) if ok]))


@functools.cache
def _jit(**opts):
  return jax.jit(functools.partial(losses.topk_cross_entropy, **opts))


CASES = [
  # (spatial, channels, mode, options)
  ((7,), 3, "multiclass", {"k": 10.0}),
  ((6, 5), 3, "multiclass", {"k": 30.0, "per_image": True}),
  ((3, 4, 3), 4, "multiclass", {"k": 10.0}),
  ((6, 5), 1, "binary", {"k": 20.0}),
  ((6, 5), 2, "multilabel", {"k": 15.0, "per_image": True}),
]


@pytest.mark.parametrize("spatial, c, mode, opts", CASES)
def test_matches_sorting_reference(rng, spatial, c, mode, opts):
  logits = (3.0 * rng.standard_normal((3, *spatial, c))).astype(np.float32)
  if mode == "multilabel":
    labels = (rng.random(logits.shape) > 0.5).astype(np.float32)
  else:
    labels = rng.integers(0, max(c, 2), size=logits.shape[:-1]).astype(np.int32)
  mask = (rng.random(logits.shape[:-1]) > 0.3).astype(np.float32)
  for m in (None, mask):
    got = _jit(mode=mode, **opts)(logits, labels, mask=m)
    want = ref_topk(logits, labels, mode=mode, mask=m, **opts)
    np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-6)


def test_by_hand_fractional_threshold():
  # Per-pixel CE -log(p) for p = 0.9, 0.8, 0.6, 0.2; k = 37.5% of 4 pixels = 1.5 pixels:
  # the hardest (0.2) fully, the next (0.6) with half its weight.
  probs = jnp.array([[0.9, 0.8, 0.6, 0.2]])[..., None]
  labels = jnp.ones((1, 4), jnp.int32)
  got = losses.topk_cross_entropy(probs, labels, from_logits=False, k=37.5)
  want = -(np.log(0.2) + 0.5 * np.log(0.6)) / 1.5
  np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_ties_share_the_remainder():
  # Four equal values: any 2 of them give the same mean; the selection splits the weight.
  logits = jnp.zeros((1, 4, 2))
  labels = jnp.zeros((1, 4), jnp.int32)
  got = losses.topk_cross_entropy(logits, labels, k=50.0)
  np.testing.assert_allclose(float(got), np.log(2.0), rtol=1e-6)
  grad = jax.grad(lambda x: losses.topk_cross_entropy(x, labels, k=50.0))(logits)
  # Each pixel carries half of its share: d/dx0 of -log softmax = p0 - 1 = -1/2, times 1/2 / 2.
  np.testing.assert_allclose(np.asarray(grad[0, :, 0]), -0.125, rtol=1e-6)


def test_k_100_is_cross_entropy(rng):
  logits, labels = np_ref.random_case(rng, (6, 5), 3)
  mask = (rng.random(labels.shape) > 0.4).astype(np.float32)
  got = losses.topk_cross_entropy(logits, labels, k=100.0, mask=mask)
  np.testing.assert_allclose(float(got), float(losses.cross_entropy(logits, labels, mask=mask)))


def test_ignored_pixels_are_never_selected(rng):
  logits, labels = np_ref.random_case(rng, (6, 5), 3, scale=1.0)
  # Ignored pixels get the worst logits: selecting any of them would raise the loss.
  labels[0, :2] = 255
  bad = labels == 255
  logits[bad] = np.array([-50.0, 50.0, -50.0])
  want = ref_topk(logits, labels, mode="multiclass", ignore_index=255)
  fn = _jit(ignore_index=255)
  np.testing.assert_allclose(float(fn(logits, labels)), want, rtol=2e-5)
  # The same with a mask instead, and the gradient is 0 on ignored pixels.
  mask = (~bad).astype(np.float32)
  clean = np.where(bad, 0, labels)
  grad = jax.grad(lambda x: losses.topk_cross_entropy(x, clean, mask=mask))(logits)
  np.testing.assert_allclose(float(losses.topk_cross_entropy(logits, clean, mask=mask)), want)
  assert np.all(np.asarray(grad)[bad] == 0)


def test_gradient_is_that_of_the_mean_over_the_selection(rng):
  logits, labels = np_ref.random_case(rng, (8, 5), 3)
  g = jax.grad(lambda x: losses.topk_cross_entropy(x, labels, k=10.0))(logits)
  ce = np_ref.pixel_ce(logits, labels, "multiclass")
  top = ce >= np.sort(ce.ravel())[-8]  # 10% of 80 pixels: the 8 largest (no ties here)
  p = np_ref.softmax(logits)
  want = (p - np_ref.one_hot(labels, 3)) * top[..., None] / 8.0
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-7)


def test_reduction_none_and_sum_per_image(rng):
  logits, labels = np_ref.random_case(rng, (6, 5), 3, batch=3)
  none = losses.topk_cross_entropy(logits, labels, per_image=True, reduction="none")
  want = [ref_topk(logits[b : b + 1], labels[b : b + 1], mode="multiclass") for b in range(3)]
  np.testing.assert_allclose(np.asarray(none), want, rtol=2e-5)
  total = losses.topk_cross_entropy(logits, labels, per_image=True, reduction="sum")
  np.testing.assert_allclose(float(total), sum(want), rtol=2e-5)


def test_empty_and_all_ignored_give_zero(rng):
  logits, labels = np_ref.random_case(rng, (4, 4), 3)
  zero = np.zeros(labels.shape, np.float32)
  assert float(losses.topk_cross_entropy(logits, labels, mask=zero)) == 0.0


@pytest.mark.parametrize(
  "opts, match",
  [
    ({"k": 0.0}, "k must be a finite number > 0"),
    ({"k": 150.0}, r"k is a percentage in \(0, 100\]"),
    ({"k": "ten"}, "k must be a number"),
    ({"reduction": "none"}, "reduction='none' needs per_image=True"),
    ({"class_weights": [1.0, 2.0]}, r"class_weights must have shape \(3,\)"),
    ({"label_smoothing": 2.0}, "label_smoothing"),
  ],
)
def test_bad_options_raise(opts, match):
  logits, labels = jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 4, 4), jnp.int32)
  with pytest.raises((ValueError, TypeError), match=match):
    losses.topk_cross_entropy(logits, labels, **opts)


def test_dice_topk_is_dice_plus_topk(rng):
  logits, labels = np_ref.random_case(rng, (6, 5), 3)
  mask = (rng.random(labels.shape) > 0.3).astype(np.float32)
  opts = {"include_background": False, "mask": mask}
  got = losses.dice_topk_loss(logits, labels, topk_weight=0.5, **opts)
  # Dice from the float64 formula, top-k from the sorting reference.
  p, g = np_ref.softmax(logits)[..., 1:], np_ref.one_hot(labels, 3)[..., 1:]
  w = mask[..., None].astype(np.float64)
  dice = 1 - np.mean(
    (2 * (w * p * g).sum((0, 1, 2)) + 1e-5)
    / ((w * p).sum((0, 1, 2)) + (w * g).sum((0, 1, 2)) + 1e-5)
  )
  want = dice + 0.5 * ref_topk(logits, labels, mode="multiclass", mask=mask)
  np.testing.assert_allclose(float(got), want, rtol=2e-5)
