"""mcc and boundary_dou against float64 NumPy references from the papers' formulas (np_ref)."""

import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax import losses


def _case(rng, spatial, c):
  z = (2.0 * rng.standard_normal((2, *spatial, c))).astype(np.float32)
  y = rng.integers(0, max(c, 2), size=(2, *spatial)).astype(np.int32)
  return z, y


def _probs_targets(z, y):
  c = z.shape[-1]
  if c == 1:
    return np_ref.sigmoid(z), y[..., None].astype(np.float64)
  return np_ref.softmax(z), np_ref.one_hot(y, c)


@pytest.mark.parametrize("spatial, c", [((7,), 3), ((6, 5), 1), ((3, 4, 3), 3)])
@pytest.mark.parametrize("per_image", [False, True])
def test_mcc_matches_reference(rng, spatial, c, per_image):
  z, y = _case(rng, spatial, c)
  p, g = _probs_targets(z, y)
  s = 1e-5
  axes = tuple(range(1, p.ndim - 1)) if per_image else tuple(range(p.ndim - 1))
  counts = [t + s for t in np_ref.confusion_counts(p, g, np.ones(y.shape), axes)]
  want = (1 - np_ref.mcc(*counts)).mean(-1).mean()
  got = losses.mcc_loss(jnp.asarray(z), jnp.asarray(y), per_image=per_image)
  np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-6)


def test_mcc_perfect_and_inverted_by_hand():
  probs = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)[..., None]
  y = np.array([[0, 1, 1, 0]])
  assert float(losses.mcc_loss(probs, y, from_logits=False)) < 1e-4  # MCC = 1
  assert abs(float(losses.mcc_loss(1 - probs, y, from_logits=False)) - 2.0) < 1e-4  # MCC = -1
  # Empty ground truth and empty prediction, N = 4: MCC = N / (2 (N + 2 s)) ~ 1/2.
  empty = np.zeros((1, 4), np.int32)
  got = float(losses.mcc_loss(np.zeros_like(probs), empty, from_logits=False))
  np.testing.assert_allclose(got, 0.5, atol=1e-2)  # p clipped to 1e-7: FP = 4e-7, not 0


@pytest.mark.parametrize("spatial, c", [((9,), 3), ((6, 5), 1), ((4, 4, 3), 3)])
def test_boundary_dou_matches_reference(rng, spatial, c):
  z, y = _case(rng, spatial, c)
  p, g = _probs_targets(z, y)
  vals = []
  for k in range(g.shape[-1]):
    fg = g[..., k] > 0.5
    alpha = np_ref.boundary_dou_alpha(np_ref.cross_boundary(fg).sum(), fg.sum())
    vals.append(np_ref.boundary_dou(p[..., k], g[..., k], alpha))
  got = losses.boundary_dou_loss(jnp.asarray(z), jnp.asarray(y))
  np.testing.assert_allclose(float(got), np.mean(vals), rtol=2e-5, atol=1e-6)


def test_boundary_dou_alpha_by_hand():
  # A 4x4 square in a 6x6 image: 12 boundary pixels of 16, alpha = 1 - 2 * 12/16 = -0.5.
  y = np.zeros((1, 6, 6), np.int32)
  y[0, 1:5, 1:5] = 1
  p = np.full((1, 6, 6, 1), 0.5, np.float32)
  g = y[..., None].astype(np.float64)
  i, yy, zz = 0.5 * 16, 16.0, 0.25 * 36
  s = 1e-5
  want = (zz + yy - 2 * i + s) / (zz + yy - 0.5 * i + s)
  got = losses.boundary_dou_loss(p, y, from_logits=False)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert np_ref.cross_boundary(g[..., 0] > 0.5).sum() == 12
