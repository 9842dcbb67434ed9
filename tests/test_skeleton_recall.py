"""skeleton_recall against a float64 NumPy reference from Kirchhoff et al. (ECCV 2024).

The reference (``np_ref.skeleton_recall``) computes the per-class soft recall on a given tube from
the formula. With a precomputed skeleton the tube is the host one
(:func:`seg_jax.data.targets.tubed_skeleton`, whose own shapes are checked by hand here); without
it, the in-jit tube is rebuilt with scipy (``np_ref.soft_skeleton`` of the binarised foreground,
then ``np_ref.cross_dilate``).
"""

import functools

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax import losses
from seg_jax.data.targets import tubed_skeleton
from seg_jax.losses import skeleton_recall_loss


def _close(a, b, rtol=2e-5, atol=2e-6):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@functools.cache
def _compiled(opts):
  opts = dict(opts)

  def fn(x, y, m, s):
    kw = {**opts, "mask": m}
    if s is not None:
      kw["skeleton"] = s
    pooled = skeleton_recall_loss(x, y, **kw)
    none = skeleton_recall_loss(x, y, **kw, per_image=True, reduction="none")
    mean = skeleton_recall_loss(x, y, **kw, per_image=True)
    return pooled, none, mean

  return jax.jit(fn)


def _run(x, y, mask=None, skeleton=None, **opts):
  mask = np.ones(np.shape(y)[: np.ndim(x) - 1], np.float32) if mask is None else mask
  return _compiled(tuple(sorted(opts.items())))(x, y, mask, skeleton)


def _case(rng, shape, channels):
  labels = np_ref.blobs(rng, shape, channels)
  one_hot = np_ref.one_hot(labels, channels)
  logits = (3.0 * one_hot - 1.5 + 2.0 * rng.standard_normal((*shape, channels))).astype(np.float32)
  return logits, labels


def _host_tubes(labels, num_classes, ignore_index=None):
  return np.stack(
    [tubed_skeleton(y, num_classes=num_classes, ignore_index=ignore_index) for y in labels]
  )


def _check(got, probs, tube, weights, foreground, **kw):
  pooled, none, mean = got
  _close(pooled, np_ref.skeleton_recall(probs, tube, weights, foreground=foreground, **kw))
  _close(
    mean, np_ref.skeleton_recall(probs, tube, weights, foreground=foreground, per_image=True, **kw)
  )
  for i in range(probs.shape[0]):
    want = np_ref.skeleton_recall(
      probs[i : i + 1], tube[i : i + 1], weights[i : i + 1], foreground=foreground, **kw
    )
    _close(none[i], want)


# ---------------------------------------------------------------- host tubed skeleton (by hand)
def test_host_tube_of_a_bar_is_the_bar_away_from_its_ends():
  # A 5-pixel-thick bar: the skeleton is its middle row; two cross dilations reach 2 rows up and
  # down, i.e. the whole bar's height, and are cut to the foreground.
  label = np.zeros((9, 30), np.int32)
  label[2:7, 3:27] = 1
  label[2:7, 15:27] = 2  # the right half is class 2: tube pixels keep the class under them
  tube = tubed_skeleton(label, num_classes=3)
  assert tube.dtype == np.int32 and tube.shape == label.shape
  np.testing.assert_array_equal(tube[:, 8:22], label[:, 8:22])
  assert not tube[label == 0].any()
  # A one-pixel line is its own skeleton, and its tube is itself (cut to the foreground).
  line = np.zeros((7, 12), np.int32)
  line[3, 1:11] = 1
  np.testing.assert_array_equal(tubed_skeleton(line, num_classes=2), line)
  # tube=0 is the skeleton: one pixel per column of the bar's interior.
  skel = tubed_skeleton(label, num_classes=3, tube=0)
  np.testing.assert_array_equal((skel[:, 8:22] > 0).sum(0), np.ones(14))
  assert skel[4, 8:22].all()


def test_host_tube_ignores_ignored_and_out_of_range_labels_and_works_in_3d():
  label = np.zeros((7, 12), np.int32)
  label[3, 1:11] = 1
  label[3, 5] = 255
  tube = tubed_skeleton(label, num_classes=2, ignore_index=255)
  assert tube[3, 5] == 0 and tube[3, 1:5].all() and tube[3, 6:11].all()
  assert not tubed_skeleton(np.full((5, 5), 7), num_classes=2).any()
  vol = np.zeros((5, 6, 12), np.int32)
  vol[2, 3, 1:11] = 1  # a one-voxel line in 3D is its own skeleton
  np.testing.assert_array_equal(tubed_skeleton(vol, num_classes=2), vol)
  vol[1:4, 2:5, 1:11] = 1  # a 3x3 rod: skeleton the centre line, the tube fills the cross-section
  tube = tubed_skeleton(vol, num_classes=2)
  np.testing.assert_array_equal(tube[:, :, 3:9], vol[:, :, 3:9])
  skel = tubed_skeleton(vol, num_classes=2, tube=0)
  assert skel[2, 3, 3:9].all() and skel[:, :, 3:9].sum() == 6


# ---------------------------------------------------------------- loss against the reference
def test_multiclass_2d_with_host_skeleton_mask_ignore_index(rng):
  logits, labels = _case(rng, (3, 12, 10), 3)
  labels[1, 0, :3] = 255
  mask = (rng.random(labels.shape) > 0.1) * rng.uniform(0.5, 1.5, labels.shape)
  mask = mask.astype(np.float32)
  skel = _host_tubes(labels, 3, ignore_index=255)
  assert {1, 2} <= set(np.unique(skel).tolist())  # both classes have tubes
  weights = np_ref.pixel_weights(labels, 3, mask, ignore_index=255)
  tube = np_ref.one_hot(skel, 3)
  probs = np_ref.softmax(logits)
  got = _run(logits, labels, mask, skel, ignore_index=255)
  _check(got, probs, tube, weights, foreground=[1, 2])
  cw = np.array([5.0, 1.0, 3.0], np.float32)
  got = _run(logits, labels, mask, skel, ignore_index=255, smooth=0.0, class_weights=tuple(cw))
  _check(got, probs, tube, weights, foreground=[1, 2], smooth=0.0, class_weights=cw)


def test_binary_2d_and_3d_with_host_skeleton_empty_images(rng):
  for shape in [(3, 14, 12), (2, 6, 7, 8)]:
    labels = np_ref.blobs(rng, shape, 2)
    labels[0] = 0  # an image without foreground: its tube is empty
    logits = (2.0 * rng.standard_normal((*shape, 1))).astype(np.float32)
    skel = _host_tubes(labels, 2)
    tube = (skel == 1)[..., None].astype(np.float64)
    weights = np.ones(shape)
    probs = np_ref.sigmoid(logits)
    for kw in ({}, {"ignore_empty": True}):
      _check(_run(logits, labels, None, skel, **kw), probs, tube, weights, [0], **kw)


def test_multilabel_dense_skeleton(rng):
  shape = (2, 9, 8, 2)
  dense = (rng.random(shape) > 0.5).astype(np.float32)
  tube = (rng.random(shape) > 0.7).astype(np.float32)
  logits = rng.standard_normal(shape).astype(np.float32)
  got = _run(logits, dense, None, tube, mode="multilabel")
  _check(got, np_ref.sigmoid(logits), tube, np.ones(shape[:-1]), foreground=[0, 1])


def _np_in_jit_tube(labels, channels, num_iter, tube, domain):
  """The in-jit tube from its definition: soft skeleton of the binarised foreground (all classes
  together), ``tube`` cross dilations, times each class's mask; background channel empty."""
  out = np.zeros((*labels.shape, channels))
  for i in range(labels.shape[0]):
    fg = ((labels[i] > 0) & domain[i]).astype(np.float64)
    skel = np_ref.soft_skeleton(fg, num_iter, domain[i]) > 0.5
    t = np_ref.cross_dilate(skel, tube, domain[i])
    for c in range(1, channels):
      out[i, ..., c] = t & (labels[i] == c) & domain[i]
  return out


@pytest.mark.parametrize("shape,num_iter,tube", [((2, 12, 11), 5, 2), ((2, 6, 7, 5), 3, 1)])
def test_in_jit_skeleton_matches_its_definition(rng, shape, num_iter, tube):
  logits, labels = _case(rng, shape, 3)
  mask = (rng.random(shape) > 0.1).astype(np.float32)
  domain = mask > 0
  want_tube = _np_in_jit_tube(labels, 3, num_iter, tube, domain)
  assert want_tube.sum() > 0
  got = _run(logits, labels, mask, None, num_iter=num_iter, tube=tube)
  _check(got, np_ref.softmax(logits), want_tube, mask, foreground=[1, 2])


def test_in_jit_and_host_tubes_agree_on_a_thin_line():
  labels = np.zeros((1, 9, 16), np.int32)
  labels[0, 4, 2:14] = 1
  logits = np.zeros((1, 9, 16, 2), np.float32)
  logits[0, 4, 2:8, 1] = 5.0  # the left half of the line is predicted
  a = skeleton_recall_loss(logits, labels)
  b = skeleton_recall_loss(logits, labels, skeleton=_host_tubes(labels, 2))
  _close(a, b)
  p = np_ref.softmax(logits[0, 4, 2:14])[:, 1]
  _close(a, 1.0 - p.mean(), rtol=1e-5)


def test_optimum_gradient_only_on_the_tube_and_no_nan(rng):
  logits, labels = _case(rng, (2, 10, 9), 2)
  binary = logits[..., 1:] - logits[..., :1]
  skel = _host_tubes(labels, 2)
  perfect = 30.0 * (2.0 * (labels[..., None] == 1) - 1.0)
  assert float(skeleton_recall_loss(perfect, labels, skeleton=skel)) < 1e-6
  g = jax.grad(lambda x: skeleton_recall_loss(x, labels, skeleton=skel))(jnp.asarray(binary))
  g = np.asarray(g)[..., 0]
  assert np.all(g[skel == 0] == 0) and np.all(g[skel == 1] < 0)
  extreme = np.where(labels[..., None] == 1, -1e4, 1e4).astype(np.float32)
  assert np.isfinite(float(skeleton_recall_loss(extreme, labels, skeleton=skel)))


def test_dice_skeleton_recall_is_the_weighted_sum_of_its_terms(rng):
  logits, labels = _case(rng, (2, 10, 9), 3)
  skel = _host_tubes(labels, 3)
  got = losses.dice_skeleton_recall_loss(
    logits, labels, skeleton=skel, ce_weight=0.5, skeleton_recall_weight=2.0, smooth=1e-3
  )
  want = (
    losses.dice_loss(logits, labels, smooth=1e-3)
    + 0.5 * losses.cross_entropy(logits, labels)
    + 2.0 * skeleton_recall_loss(logits, labels, skeleton=skel, smooth=1e-3)
  )
  _close(got, want)
  assert losses.targets("dice_skeleton_recall") == {"skeleton": "tubed_skeleton"}


@pytest.mark.parametrize(
  "kw,error,pattern",
  [
    ({"skeleton": np.zeros((2, 5, 5), np.int32)}, ValueError, "skeleton must be an integer"),
    ({"skeleton": np.zeros((2, 6, 5), np.float32)}, TypeError, "class map and must be integers"),
    ({"num_iter": 0}, ValueError, "num_iter must be an int >= 1"),
    ({"tube": -1}, ValueError, "tube must be an int >= 0"),
  ],
)
def test_bad_options_raise_naming_them(kw, error, pattern):
  x, y = jnp.zeros((2, 6, 5, 3)), jnp.zeros((2, 6, 5), jnp.int32)
  with pytest.raises(error, match=pattern):
    jax.eval_shape(lambda a, b: skeleton_recall_loss(a, b, **kw), x, y)


def test_multilabel_needs_a_dense_skeleton():
  x = jnp.zeros((2, 6, 5, 2))
  with pytest.raises(ValueError, match="multilabel.*dense skeleton"):
    skeleton_recall_loss(x, x, mode="multilabel", skeleton=jnp.zeros((2, 6, 5), jnp.int32))
