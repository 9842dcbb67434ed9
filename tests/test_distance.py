"""Tests of seg_jax.losses.distance: the JAX Euclidean distance transform and the class maps.

References are scipy.ndimage.distance_transform_edt (float64) applied image by image, the
formulas of Kervadec's ``one_hot2dist`` and of the ``edt(fg) + edt(bg)`` field, and hand values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from seg_jax.losses import distance, distance_transform_edt, signed_distance_map
from seg_jax.losses.distance import boundary_distance_map

edt_jit = jax.jit(distance_transform_edt, static_argnames="sampling")


@jax.jit
def vmap_edt_and_grad(mask):
  """vmap over a second batch axis, and the gradient through a float mask."""
  out = jax.vmap(distance_transform_edt)(mask)
  grad = jax.grad(lambda x: distance_transform_edt(x).sum())(mask[0].astype(jnp.float32))
  return out, grad


@functools.partial(jax.jit, static_argnames="sampling")
def both_maps(masks, sampling=None):
  return (
    signed_distance_map(masks, sampling=sampling),
    boundary_distance_map(masks, sampling=sampling),
  )


def random_mask(rng, shape, foreground):
  """Random boolean (batch, *spatial) mask with at least one background pixel per image."""
  m = rng.random(shape) < foreground
  for b in range(shape[0]):
    idx = tuple(rng.integers(0, n) for n in shape[1:])
    m[(b, *idx)] = False
  return m


def scipy_edt(mask, sampling=None):
  return np.stack([ndimage.distance_transform_edt(m, sampling=sampling) for m in mask])


CASES = [
  ((3, 37), None),
  ((3, 37), 0.7),
  ((3, 23, 31), None),
  ((3, 23, 31), (1.5, 0.6)),
  ((2, 9, 12, 10), None),
  ((2, 9, 12, 10), (2.0, 1.0, 0.5)),
]


@pytest.mark.parametrize("foreground", [0.5, 0.97])
@pytest.mark.parametrize("shape,sampling", CASES)
def test_edt_matches_scipy(rng, shape, sampling, foreground):
  mask = random_mask(rng, shape, foreground)
  ours = np.asarray(edt_jit(mask, sampling=sampling))
  ref = scipy_edt(mask, sampling)
  assert ours.dtype == np.float32
  np.testing.assert_array_equal(ours == 0, ref == 0)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)


def test_edt_unit_spacing_is_exact_on_squares(rng):
  # Squared distances are integers and must come out exactly (float32 holds them).
  mask = random_mask(rng, (2, 40, 50), 0.995)
  mask[1] = True
  mask[1, 0, 0] = False  # image 1: a single background pixel in a corner (worst case)
  ours = np.asarray(edt_jit(mask), np.float64)
  ref = scipy_edt(mask)
  np.testing.assert_array_equal(np.rint(ours**2), np.rint(ref**2))
  i, j = np.meshgrid(np.arange(40), np.arange(50), indexing="ij")
  np.testing.assert_array_equal(np.rint(ours[1] ** 2), i**2 + j**2)
  assert ref[0].max() > 5  # large distances were exercised


@pytest.mark.parametrize("group_pixels", [64, 256])
def test_edt_grouped_batches_match_scipy(rng, monkeypatch, group_pixels):
  # Large batches are transformed in groups on CPU (one image per group, or 2 with padding here).
  monkeypatch.setattr(distance, "_CPU_GROUP_PIXELS", group_pixels)
  mask = random_mask(rng, (5, 9, 11), 0.8)
  ours = jax.jit(lambda m: distance_transform_edt(m))(mask)  # fresh trace: reads the setting
  np.testing.assert_allclose(np.asarray(ours), scipy_edt(mask), rtol=1e-6)
  onehot = random_onehot(rng, (9, 11), 2, batch=3)
  sdm = jax.jit(lambda m: signed_distance_map(m, sampling=(1.0, 0.5)))(onehot)
  np.testing.assert_allclose(np.asarray(sdm), ref_signed(onehot, (1.0, 0.5)), atol=1e-6)


def test_edt_hand_values_1d():
  m = jnp.array([[0, 1, 1, 1, 0, 1], [1, 1, 0, 1, 1, 1]], bool)
  out = edt_jit(m, sampling=2.0)
  np.testing.assert_array_equal(np.asarray(out), [[0, 2, 4, 2, 0, 2], [4, 2, 0, 2, 4, 6]])


def test_edt_no_background_is_inf_and_does_not_leak(rng):
  mask = random_mask(rng, (3, 6, 7), 0.7)
  mask[1] = True  # image 1 has no background at all
  ours = np.asarray(edt_jit(mask))
  assert np.all(np.isinf(ours[1])) and np.all(ours[1] > 0)
  for b in (0, 2):
    np.testing.assert_allclose(ours[b], ndimage.distance_transform_edt(mask[b]), rtol=1e-6)
  assert np.all(np.asarray(edt_jit(np.zeros((3, 6, 7), bool))) == 0)


@pytest.mark.parametrize("shape", [(2, 1), (2, 1, 1), (1, 1, 1, 1)])
def test_edt_one_pixel_images(shape):
  m = np.zeros(shape, bool)
  m[0] = True
  out = np.asarray(edt_jit(m))
  assert np.isinf(out[0]).all()
  assert (out[1:] == 0).all()


def test_edt_input_dtypes(rng):
  mask = random_mask(rng, (3, 37), 0.6)  # shape of CASES[0]: the bool call is cached
  ref = np.asarray(edt_jit(mask))
  for m in (mask.astype(np.int32), mask.astype(np.float32) * 3.0):
    np.testing.assert_array_equal(np.asarray(edt_jit(m)), ref)


def test_edt_vmap_and_grad(rng):
  mask = random_mask(rng, (2, 3, 8, 9), 0.6)
  out, grad = vmap_edt_and_grad(mask)
  ref = np.stack([scipy_edt(m) for m in mask])
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6)
  # Not differentiable: a float mask gets a zero (not NaN) gradient.
  assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize(
  "mask,sampling,match",
  [
    (np.ones((5,), bool), None, "rank 2-4"),
    (np.ones((1, 2, 3, 4, 5), bool), None, "rank 2-4"),
    (np.ones((2, 0, 3), bool), None, "empty"),
    (np.ones((2, 3, 3), bool), (1.0, 2.0, 3.0), "one value per spatial dim"),
    (np.ones((2, 3, 3), bool), (1.0, -2.0), "> 0"),
    (np.ones((2, 3, 3), bool), 0.0, "> 0"),
  ],
)
def test_edt_bad_input(mask, sampling, match):
  with pytest.raises(ValueError, match=match):
    distance_transform_edt(mask, sampling=sampling)


def test_edt_traced_sampling_is_a_clear_error():
  with pytest.raises(TypeError, match="sampling"):
    jax.jit(lambda s: distance_transform_edt(np.ones((1, 3), bool), sampling=s))(1.0)


# ---- class maps -----------------------------------------------------------------------------


def ref_signed(masks, sampling=None):
  """Kervadec's one_hot2dist per image and class, with the offset h = min(sampling).

  Classes absent from the image or filling all of it get 0.
  """
  masks = np.asarray(masks) > 0.5
  h = 1.0 if sampling is None else float(np.min(sampling))
  out = np.zeros(masks.shape)
  for b in range(masks.shape[0]):
    for c in range(masks.shape[-1]):
      pos = masks[b, ..., c]
      if pos.any() and not pos.all():
        neg = ~pos
        out[b, ..., c] = (
          ndimage.distance_transform_edt(neg, sampling=sampling) * neg
          - (ndimage.distance_transform_edt(pos, sampling=sampling) - h) * pos
        )
  return out


def ref_unsigned(masks, sampling=None):
  """edt(fg) + edt(bg) per image and class; 0 when the class is absent or fills the image."""
  masks = np.asarray(masks) > 0.5
  out = np.zeros(masks.shape)
  for b in range(masks.shape[0]):
    for c in range(masks.shape[-1]):
      pos = masks[b, ..., c]
      if pos.any() and not pos.all():
        out[b, ..., c] = ndimage.distance_transform_edt(
          pos, sampling=sampling
        ) + ndimage.distance_transform_edt(~pos, sampling=sampling)
  return out


def random_onehot(rng, spatial, channels, batch=2):
  labels = rng.integers(0, channels, size=(batch, *spatial))
  return (labels[..., None] == np.arange(channels)).astype(np.float32)


MAP_CASES = [((17,), 3, None), ((9, 11), 3, None), ((9, 11), 2, (0.5, 1.5)), ((5, 6, 7), 2, 2.0)]


@pytest.mark.parametrize("spatial,channels,sampling", MAP_CASES)
def test_signed_and_unsigned_maps_match_reference(rng, spatial, channels, sampling):
  onehot = random_onehot(rng, spatial, channels)
  onehot[0, ..., 0] = 1.0  # image 0: class 0 fills the image, the others are absent
  onehot[0, ..., 1:] = 0.0
  sdm, udm = map(np.asarray, both_maps(onehot, sampling=sampling))
  np.testing.assert_allclose(sdm, ref_signed(onehot, sampling), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(udm, ref_unsigned(onehot, sampling), rtol=1e-6, atol=1e-6)
  assert np.all(sdm[0] == 0) and np.all(udm[0] == 0)


def test_signed_map_hand_values_and_kervadec_convention():
  g = np.zeros((1, 7, 7, 1), np.float32)
  g[0, 1:6, 1:6, 0] = 1.0  # 5x5 square
  sdm, udm = (np.asarray(m)[0, ..., 0] for m in both_maps(g))
  assert sdm[3, 3] == -2.0  # centre: 3 steps to the background, minus 1
  assert sdm[1, 3] == 0.0 and sdm[1, 1] == 0.0  # inner boundary pixels
  assert sdm[0, 3] == 1.0 and sdm[0, 0] == np.float32(np.sqrt(2.0))  # outside neighbours
  assert udm[3, 3] == 3.0 and udm[1, 3] == 1.0 and udm[0, 0] == np.float32(np.sqrt(2.0))


def test_maps_threshold_soft_labels(rng):
  soft = rng.random((2, 6, 5, 2)).astype(np.float32)
  hard = (soft > 0.5).astype(np.float32)
  for a, b in zip(both_maps(soft), both_maps(hard), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("fn", [signed_distance_map, boundary_distance_map])
def test_maps_bad_input(fn):
  with pytest.raises(ValueError, match="rank 3-5"):
    fn(np.ones((2, 3), np.float32))
  with pytest.raises(ValueError, match="sampling"):
    fn(np.ones((2, 3, 4, 1), np.float32), sampling=(1.0, 1.0, 1.0))
