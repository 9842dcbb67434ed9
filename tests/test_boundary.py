"""Tests of the boundary (Kervadec) and Hausdorff distance-transform (Karimi) losses.

References are float64 NumPy written from the formulas, with the distance maps made by
scipy.ndimage.distance_transform_edt, image by image and class by class.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from np_ref import one_hot, pixel_weights, sigmoid, softmax
from scipy import ndimage

from seg_jax import losses
from seg_jax.losses import boundary_loss, hausdorff_dt_loss, signed_distance_map
from seg_jax.losses.distance import boundary_distance_map

STATIC = ("mode", "from_logits", "reduction", "include_background", "sampling", "alpha")
boundary_jit = jax.jit(boundary_loss, static_argnames=STATIC[:-1])
hausdorff_jit = jax.jit(hausdorff_dt_loss, static_argnames=STATIC)
LOSS_JIT = {"boundary": boundary_jit, "hausdorff_dt": hausdorff_jit}
GRAD_JIT = {
  "boundary": jax.jit(jax.value_and_grad(boundary_loss)),
  "hausdorff_dt": jax.jit(jax.value_and_grad(hausdorff_dt_loss)),
}
REDUCTIONS = ("mean", "sum", "none")


@functools.partial(jax.jit, static_argnames="kind")
def all_reductions(kind, logits, labels, mask):
  """The three reductions with a mask and ignore_index=255, in one compile."""
  fn = boundary_loss if kind == "boundary" else hausdorff_dt_loss
  return {r: fn(logits, labels, mask=mask, ignore_index=255, reduction=r) for r in REDUCTIONS}


@functools.partial(jax.jit, static_argnames="kind")
def make_maps(kind, onehot):
  return signed_distance_map(onehot) if kind == "boundary" else boundary_distance_map(onehot)


# ---- float64 references ---------------------------------------------------------------------


def ref_maps(masks, sampling=None, signed=True):
  """Per image and class: Kervadec's signed map, or edt(fg) + edt(bg); 0 without a boundary."""
  masks = np.asarray(masks) > 0.5
  h = 1.0 if sampling is None else float(np.min(sampling))
  out = np.zeros(masks.shape)
  for b in range(masks.shape[0]):
    for c in range(masks.shape[-1]):
      pos = masks[b, ..., c]
      if not pos.any() or pos.all():
        continue
      d_pos = ndimage.distance_transform_edt(pos, sampling=sampling)  # inside -> outside
      d_neg = ndimage.distance_transform_edt(~pos, sampling=sampling)  # outside -> inside
      out[b, ..., c] = d_neg * ~pos - (d_pos - h) * pos if signed else d_pos + d_neg
  return out


def ref_inputs(logits, labels, mode, from_logits, mask, ignore_index):
  """Float64 probabilities, targets and pixel weights as the loss contract defines them."""
  logits = np.asarray(logits, np.float64)
  c = logits.shape[-1]
  if from_logits:
    p = softmax(logits) if mode == "multiclass" else sigmoid(logits)
  else:
    p = np.clip(logits, 1e-7, 1 - 1e-7)
  labels = np.asarray(labels)
  if labels.shape == logits.shape:
    g = labels.astype(np.float64)
    w = np.ones(logits.shape[:-1])
  else:
    binary = mode == "binary"
    w = pixel_weights(labels, c, ignore_index=ignore_index, binary=binary)
    clean = np.where(w > 0, labels, 0)
    g = clean[..., None].astype(np.float64) if binary else one_hot(clean, c)
  if mask is not None:
    w = w * np.asarray(mask, np.float64)
  return p, g, w


def ref_reduce(values, w, reduction):
  axes = tuple(range(1, values.ndim))
  if reduction == "none":
    den = w.sum(axes)
    return np.where(den > 0, (values * w).sum(axes) / np.where(den > 0, den, 1), 0.0)
  if reduction == "sum":
    return (values * w).sum()
  return (values * w).sum() / w.sum() if w.sum() > 0 else 0.0


def ref_loss(
  kind,
  logits,
  labels,
  *,
  mode=None,
  from_logits=True,
  mask=None,
  ignore_index=None,
  reduction="mean",
  include_background=False,
  class_weights=None,
  sampling=None,
  alpha=2.0,
  maps=None,
):
  c = np.shape(logits)[-1]
  mode = mode or ("binary" if c == 1 else "multiclass")
  p, g, w = ref_inputs(logits, labels, mode, from_logits, mask, ignore_index)
  lam = np.ones(c) if class_weights is None else np.asarray(class_weights, np.float64)
  first = 1 if mode == "multiclass" and not include_background else 0
  p, g, lam = p[..., first:], g[..., first:], lam[first:]
  if kind == "boundary":
    phi = ref_maps(g, sampling) if maps is None else np.asarray(maps, np.float64)[..., first:]
    per_class = p * phi
  else:
    d_g = ref_maps(g, sampling, False) if maps is None else np.asarray(maps)[..., first:]
    d_p = ref_maps(p, sampling, False)
    per_class = (p - g) ** 2 * (d_g**alpha + d_p**alpha)
  values = (per_class * lam).sum(-1) / lam.sum()
  return ref_reduce(values, w, reduction)


def check(kind, logits, labels, **opts):
  ours = np.asarray(LOSS_JIT[kind](logits, labels, **opts))
  ref = ref_loss(kind, logits, labels, **opts)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)
  return ours


def case(rng, spatial, channels, batch=2):
  logits = (3.0 * rng.standard_normal((batch, *spatial, channels))).astype(np.float32)
  labels = rng.integers(0, max(channels, 2), size=(batch, *spatial)).astype(np.int32)
  return logits, labels


def blob_labels(rng, spatial, classes, batch=2):
  """Labels with compact objects (so distances are not all 1): thresholded smoothed noise."""
  noise = ndimage.gaussian_filter(
    rng.standard_normal((batch, *spatial)), (0, *[1.5] * len(spatial))
  )
  edges = np.quantile(noise, np.linspace(0, 1, classes + 1)[1:-1])
  return np.digitize(noise, edges).astype(np.int32)


# ---- reference comparisons ------------------------------------------------------------------
# Most tests share the shape (2, 9, 11, 3) (or (2, 23, 1) for binary) and the same static options,
# so the jitted losses compile once for many checks.

KINDS = ["boundary", "hausdorff_dt"]
SPATIAL = (9, 11)


def multiclass_case(rng):
  logits, _ = case(rng, SPATIAL, 3)
  return logits, blob_labels(rng, SPATIAL, 3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
  "spatial,channels,opts",
  [
    ((23,), 1, {}),  # binary (sigmoid)
    (SPATIAL, 3, {}),  # multiclass (softmax), background left out
    (SPATIAL, 3, dict(include_background=True, class_weights=(0.5, 1.0, 2.0))),
    ((5, 6, 4), 2, dict(sampling=(2.0, 1.0, 0.5))),
  ],
)
def test_integer_labels_match_reference(rng, kind, spatial, channels, opts):
  logits, _ = case(rng, spatial, channels)
  labels = blob_labels(rng, spatial, max(channels, 2))
  check(kind, logits, labels, **opts)


@pytest.mark.parametrize("kind", KINDS)
def test_masks_ignore_index_and_reductions(rng, kind):
  logits, labels = multiclass_case(rng)
  labels[0, :2] = 255
  labels[1, 3, 4] = 7  # out of range: ignored like ignore_index
  mask = (rng.random((2, *SPATIAL)) > 0.3).astype(np.float32)
  out = {r: np.asarray(v) for r, v in all_reductions(kind, logits, labels, mask).items()}
  for r in REDUCTIONS:
    ref = ref_loss(kind, logits, labels, mask=mask, ignore_index=255, reduction=r)
    np.testing.assert_allclose(out[r], ref, rtol=2e-5, atol=2e-6)
  # 'none' gives per-example means whose kept-pixel-weighted average is 'mean'.
  _, _, w = ref_inputs(logits, labels, "multiclass", True, mask, 255)
  n = w.sum((1, 2))
  np.testing.assert_allclose((out["none"] * n).sum() / n.sum(), out["mean"], rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_multilabel_dense_3d_probabilities_with_spacing(rng, kind):
  logits, _ = case(rng, (5, 6, 4), 2)
  dense = np.stack([blob_labels(rng, (5, 6, 4), 2) for _ in range(2)], -1).astype(np.float32)
  probs = sigmoid(logits).astype(np.float32)
  check(kind, probs, dense, mode="multilabel", from_logits=False, sampling=1.5)


def test_hausdorff_alpha(rng):
  logits, _ = case(rng, (23,), 1)
  labels = blob_labels(rng, (23,), 2)
  check("hausdorff_dt", logits, labels, alpha=1.0)


def test_hand_values_1d():
  logits = jnp.zeros((1, 6, 1))  # p = 0.5 everywhere; the prediction is empty (p > 0.5 nowhere)
  labels = jnp.array([[0, 0, 1, 1, 1, 0]])
  # signed map [2, 1, 0, -1, 0, 1] -> mean of 0.5 * map = 0.25
  assert float(boundary_jit(logits, labels)) == pytest.approx(0.25)
  # d_G = [2, 1, 1, 2, 1, 1], d_P = 0 -> mean of 0.25 * d_G**2 = 0.25 * 12 / 6 = 0.5
  assert float(hausdorff_jit(logits, labels)) == pytest.approx(0.5)


# ---- precomputed maps ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_precomputed_maps(rng, kind):
  logits, labels = multiclass_case(rng)
  fn = LOSS_JIT[kind]
  # Maps made from the labels give the same loss as the maps computed inside.
  given = fn(logits, labels, distance_maps=make_maps(kind, jax.nn.one_hot(labels, 3)))
  np.testing.assert_allclose(np.asarray(given), np.asarray(fn(logits, labels)), rtol=1e-6)
  # Arbitrary maps are used as given.
  maps = (4.0 * rng.random(logits.shape)).astype(np.float32)
  ref = ref_loss(kind, logits, labels, maps=maps)
  np.testing.assert_allclose(np.asarray(fn(logits, labels, distance_maps=maps)), ref, rtol=2e-5)


# ---- properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_finite_at_extreme_logits_empty_and_one_pixel(rng, kind, channels):
  labels = blob_labels(rng, SPATIAL, max(channels, 2))
  signs = rng.choice([-1.0, 1.0], size=(2, *SPATIAL, channels))
  ones = np.ones((2, *SPATIAL), np.float32)
  pixel = np.ones((2, 1, 1), np.float32)
  for logits, lab, mask in [
    ((1e4 * signs).astype(np.float32), labels, ones),  # saturated
    ((1e4 * signs).astype(np.float32), np.zeros_like(labels), ones),  # no foreground at all
    ((-1e4 * signs).astype(np.float32), labels, 0 * ones),  # all ignored
    (np.full((2, 1, 1, channels), 1e4, np.float32), np.zeros((2, 1, 1), np.int32), pixel),
    (np.full((2, 1, 1, channels), -1e4, np.float32), np.ones((2, 1, 1), np.int32), pixel),
  ]:
    value, grad = GRAD_JIT[kind](logits, lab, mask=mask)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))
    if not mask.any():
      assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_and_full_ground_truth(rng, kind):
  logits, _ = case(rng, (23,), 1)
  for labels in (np.zeros((2, 23), np.int32), np.ones((2, 23), np.int32)):
    value = check(kind, logits, labels)
    if kind == "boundary":
      assert value == 0.0  # no boundary anywhere: zero maps
  # Empty ground truth and an empty prediction: both maps are 0.
  empty = np.full((2, 23, 1), -5.0, np.float32)
  assert float(hausdorff_jit(empty, np.zeros((2, 23), np.int32))) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_all_ignored_reductions(rng, kind):
  logits, labels = multiclass_case(rng)
  out = all_reductions(kind, logits, labels, np.zeros((2, *SPATIAL), np.float32))
  for r in REDUCTIONS:
    np.testing.assert_array_equal(np.asarray(out[r]), 0.0)


def test_perfect_prediction_is_the_minimum(rng):
  logits, labels = multiclass_case(rng)
  onehot = one_hot(labels, 3)
  phi = ref_maps(onehot)[..., 1:]
  minimum = np.minimum(phi, 0).mean(-1).mean()  # p = 1 where the map is negative, else 0
  assert minimum < 0
  perfect = (40.0 * (2 * onehot - 1)).astype(np.float32)
  assert float(boundary_jit(perfect, labels)) == pytest.approx(minimum, rel=1e-5)
  assert float(boundary_jit(logits, labels)) > minimum
  assert float(hausdorff_jit(perfect, labels)) == pytest.approx(0.0, abs=1e-12)
  assert float(hausdorff_jit(logits, labels)) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_batch_order_invariance(rng, kind):
  logits, labels = multiclass_case(rng)
  fn = LOSS_JIT[kind]
  np.testing.assert_allclose(
    float(fn(logits, labels)), float(fn(logits[::-1], labels[::-1])), rtol=1e-6
  )


# ---- registry and errors -------------------------------------------------------------------------


def test_registry():
  assert {"boundary", "hausdorff_dt"} <= set(losses.names())
  assert losses.lookup("boundary") is boundary_loss
  assert losses.lookup("hausdorff_dt") is hausdorff_dt_loss
  assert {"distance_maps", "sampling", "include_background"} <= set(losses.options("boundary"))
  assert {"alpha", "distance_maps", "sampling"} <= set(losses.options("hausdorff_dt"))


def test_bad_options():
  logits = np.zeros((2, 5, 4, 3), np.float32)
  labels = np.zeros((2, 5, 4), np.int32)

  def trace(fn, **opts):  # errors come at trace time; nothing is run
    jax.eval_shape(functools.partial(fn, **opts), logits, labels)

  for fn in (boundary_loss, hausdorff_dt_loss):
    with pytest.raises(
      ValueError, match=r"distance_maps must have the shape of logits \(2, 5, 4, 3\)"
    ):
      trace(fn, distance_maps=np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="reduction='avg'"):
      trace(fn, reduction="avg")
    with pytest.raises(TypeError, match="include_background"):
      trace(fn, include_background="no")
    with pytest.raises(ValueError, match="class_weights"):
      trace(fn, class_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="sampling"):
      trace(fn, sampling=(1.0, -1.0))
  with pytest.raises(ValueError, match="sampling"):
    trace(boundary_loss, distance_maps=np.zeros_like(logits), sampling=2.0)
  for alpha in (0.0, -1.0, float("inf")):
    with pytest.raises(ValueError, match="alpha"):
      trace(hausdorff_dt_loss, alpha=alpha)


@pytest.mark.parametrize("kind", KINDS)
def test_binary_gradient_matches_analytic(rng, kind):
  # d/dz of w * p * phi is w * phi * p (1 - p); of w * (p - g)^2 * D it is 2 w (p - g) D p (1 - p),
  # the maps being constant (no gradient through the distance transforms).
  logits, _ = case(rng, SPATIAL, 1)
  labels = blob_labels(rng, SPATIAL, 2)
  mask = (rng.random((2, *SPATIAL)) > 0.2).astype(np.float32)
  _, grad = GRAD_JIT[kind](logits, labels, mask=mask)
  p, g, w = ref_inputs(logits, labels, "binary", True, mask, None)
  dp = p * (1 - p)
  if kind == "boundary":
    ref = ref_maps(g) * dp
  else:
    dist = ref_maps(g, signed=False) ** 2 + ref_maps(p, signed=False) ** 2
    ref = 2 * (p - g) * dist * dp
  ref = ref * w[..., None] / w.sum()
  np.testing.assert_allclose(np.asarray(grad), ref, rtol=1e-4, atol=1e-7)


def test_precomputed_maps_with_inf_or_negative_entries_stay_finite(rng):
  # distance_transform_edt of a mask with no background is +inf everywhere; such maps must not
  # give NaN where a probability is 0 (0 * inf). Unsigned maps with negative entries are read as 0.
  logits = rng.standard_normal((2, 5, 6, 1)).astype(np.float32)
  labels = np.ones((2, 5, 6), np.int32)
  labels[1, :, :2] = 0
  maps = np.asarray(boundary_distance_map(labels[..., None].astype(np.float32)))
  inf_maps = maps.copy()
  inf_maps[0] = np.inf  # Image 0 is all foreground: no boundary.
  big = np.where(logits > 0, 1e4, -1e4).astype(np.float32)
  for fn in (boundary_loss, hausdorff_dt_loss):
    for x in (logits, big):
      value, grad = jax.value_and_grad(lambda x, fn=fn: fn(x, labels, distance_maps=inf_maps))(x)
      assert np.isfinite(value) and np.isfinite(grad).all(), fn.__name__
    zeroed = maps.copy()
    zeroed[0] = 0.0
    np.testing.assert_allclose(
      fn(logits, labels, distance_maps=inf_maps), fn(logits, labels, distance_maps=zeroed)
    )
  negative = maps.copy()
  negative[1, 0, 0] = -4.0
  clamped = negative.copy()
  clamped[1, 0, 0] = 0.0
  got = hausdorff_dt_loss(logits, labels, distance_maps=negative, alpha=0.5)
  assert np.isfinite(got)
  np.testing.assert_allclose(
    got, hausdorff_dt_loss(logits, labels, distance_maps=clamped, alpha=0.5)
  )
