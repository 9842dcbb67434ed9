"""lovasz_loss against a float64 NumPy reference written from Berman et al.'s Algorithm 1.

The reference physically removes ignored pixels, sorts the errors in decreasing order, forms the
cumulative Jaccard loss of the sorted prefix and takes its differences as the weights (the
gradient of the Lovasz extension), exactly as in the paper.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax.losses import lovasz_loss


# ---------------------------------------------------------------- float64 reference
def np_lovasz_flat(errors, gt):
  """Lovasz extension of the Jaccard loss of one class on kept pixels (Algorithm 1)."""
  errors, gt = np.asarray(errors, np.float64), np.asarray(gt, np.float64)
  if errors.size == 0:
    return 0.0
  order = np.argsort(-errors, kind="stable")
  e, g = np.maximum(errors[order], 0.0), gt[order]
  total = g.sum()
  jaccard = 1.0 - (total - np.cumsum(g)) / (total + np.cumsum(1.0 - g))
  weights = np.diff(jaccard, prepend=0.0)
  return float(e @ weights)


def np_lovasz(
  logits,
  labels,
  mode,
  *,
  from_logits=True,
  mask=None,
  ignore_index=None,
  per_image=False,
  include_background=True,
  class_weights=None,
  ignore_empty=None,
):
  """Returns (per-image values or None, scalar loss), float64."""
  x = np.asarray(logits, np.float64)
  c = x.shape[-1]
  labels = np.asarray(labels)
  if labels.shape == x.shape:
    g = labels.astype(np.float64)
    kept = np.ones(x.shape[:-1], bool) if mask is None else np.asarray(mask) > 0
  else:
    binary = mode == "binary"
    kept = np_ref.pixel_weights(labels, c, mask, ignore_index, binary=binary) > 0
    safe = np.where(kept, labels, 0)
    g = safe[..., None].astype(np.float64) if binary else np_ref.one_hot(safe, c)
  if mode == "multiclass":
    p = np_ref.softmax(x) if from_logits else x
    errors = np.abs(g - p)
  else:
    z = x if from_logits else np.log(x) - np.log1p(-x)
    errors = 1.0 - z * (2.0 * g - 1.0)
  if ignore_empty is None:
    ignore_empty = mode == "multiclass"
  cw = np.ones(c) if class_weights is None else np.asarray(class_weights, np.float64)
  if mode == "multiclass" and not include_background:
    cw = cw.copy()
    cw[0] = 0.0

  def group_loss(e, gg, k):
    e, gg = e.reshape(-1, c)[k.reshape(-1)], gg.reshape(-1, c)[k.reshape(-1)]
    if e.shape[0] == 0:
      return None
    vals = np.array([np_lovasz_flat(e[:, j], gg[:, j]) for j in range(c)])
    w = cw * (gg.sum(0) > 0) if ignore_empty else cw
    if w.sum() == 0:
      return None
    return float((w * vals).sum() / w.sum())

  if not per_image:
    v = group_loss(errors, g, kept)
    return None, 0.0 if v is None else v
  vals = [group_loss(errors[b], g[b], kept[b]) for b in range(x.shape[0])]
  counted = [v for v in vals if v is not None]
  per = np.array([0.0 if v is None else v for v in vals])
  return per, float(np.mean(counted)) if counted else 0.0


def _case(rng, spatial, channels, batch=2):
  logits, labels = np_ref.random_case(rng, spatial, channels, batch=batch, scale=2.0)
  if channels == 1:
    labels = rng.integers(0, 2, size=labels.shape).astype(np.int32)
  return logits, labels


def _close(got, want, rtol=2e-5, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@functools.cache
def _compiled(frozen_opts, with_mean):
  """One jitted function per static option set: pooled, per-image 'none' (and 'mean')."""
  opts = dict(frozen_opts)

  def fn(x, y, m, cw):
    out = {
      "pooled": lovasz_loss(x, y, mask=m, class_weights=cw, **opts),
      "none": lovasz_loss(x, y, mask=m, class_weights=cw, per_image=True, reduction="none", **opts),
    }
    if with_mean:
      out["mean"] = lovasz_loss(x, y, mask=m, class_weights=cw, per_image=True, **opts)
    return out

  return jax.jit(fn)


def run(x, y, mask=None, class_weights=None, with_mean=False, **opts):
  """Jitted lovasz_loss: dict of 'pooled', per-image 'none' (and per-image 'mean') values.

  Integer labels always get ignore_index=255 and class weights are traced arguments (ones by
  default), so the tests of one shape share one compilation.
  """
  if np.ndim(y) == np.ndim(x) - 1:
    opts.setdefault("ignore_index", 255)
  if mask is None:
    mask = np.ones(np.shape(x)[:-1], np.float32)
  cw = np.ones(np.shape(x)[-1], np.float32) if class_weights is None else class_weights
  fn = _compiled(tuple(sorted(opts.items())), with_mean)
  return fn(x, y, mask, np.asarray(cw, np.float32))


def check(got, x, y, mode, **kw):
  """Compares run() output with the reference, pooled and per image."""
  _close(got["pooled"], np_lovasz(x, y, mode, per_image=False, **kw)[1])
  per, want = np_lovasz(x, y, mode, per_image=True, **kw)
  _close(got["none"], per)
  if "mean" in got:
    _close(got["mean"], want)


# Shapes shared across tests (one compilation each): (batch, *spatial, channels).
MC = (2, 5, 4, 4)  # multiclass, 2D
BIN = (2, 7, 1)  # binary, 1D
ML = (2, 3, 3, 2, 3)  # multilabel, 3D


def _mc(rng):
  return _case(rng, MC[1:-1], MC[-1])


# ---------------------------------------------------------------- reference comparisons
def test_multiclass_2d_with_mask_and_ignore_index(rng):
  logits, labels = _mc(rng)
  mask = (rng.random(labels.shape) > 0.3).astype(np.float32)
  labels[0, :2] = 255
  labels[1, 3, :] = -1  # Out of range: ignored too.
  got = run(logits, labels, mask)
  check(got, logits, labels, "multiclass", mask=mask, ignore_index=255)


def test_binary_1d(rng):
  logits, labels = _case(rng, BIN[1:-1], 1)
  mask = np.ones(labels.shape, np.float32)
  mask[1] = 0.0  # An all-ignored image: left out of the per-image mean.
  mask[0, 0] = 0.0
  check(run(logits, labels, mask, with_mean=True), logits, labels, "binary", mask=mask)


ML_OPTS = {"mode": "multilabel", "ignore_empty": True}


def test_multilabel_3d(rng):
  logits = (2.0 * rng.standard_normal(ML)).astype(np.float32)
  labels = (rng.random(ML) > 0.6).astype(np.float32)
  labels[..., 1] = 0.0  # An empty channel (left out by ignore_empty), and class weights.
  mask = (rng.random(ML[:-1]) > 0.3).astype(np.float32)
  cw = [1.0, 2.0, 0.5]
  got = run(logits, labels, mask, class_weights=cw, with_mean=True, **ML_OPTS)
  check(got, logits, labels, "multilabel", mask=mask, class_weights=cw, ignore_empty=True)


def test_ignored_pixels_drop_out_exactly(rng):
  """Masked pixels give the same value as physically cropping them away, whatever they hold."""
  logits, labels = _mc(rng)
  mask = np.ones(labels.shape, np.float32)
  mask[:, :, -2:] = 0.0
  crazy = logits.copy()
  crazy[:, :, -2:] = 1e4 * np.sign(rng.standard_normal(crazy[:, :, -2:].shape))
  got = run(crazy, labels, mask)
  cropped = run(crazy[:, :, :-2], labels[:, :, :-2])
  for k in got:
    _close(got[k], np.asarray(cropped[k], np.float64), rtol=1e-6, atol=1e-7)
  # Continuous mask values: kept where > 0, not weighted.
  soft = mask * rng.random(labels.shape).astype(np.float32)
  for k, v in run(crazy, labels, soft).items():
    _close(v, np.asarray(got[k], np.float64), rtol=1e-6, atol=1e-7)


def test_dense_and_soft_labels(rng):
  logits, labels = _mc(rng)
  dense = np.asarray(jax.nn.one_hot(labels, 4), np.float32)
  check(run(logits, dense), logits, labels, "multiclass")
  soft = np_ref.softmax(rng.standard_normal(logits.shape)).astype(np.float32)
  check(run(logits, soft), logits, soft, "multiclass")


def test_class_options(rng):
  logits, labels = _mc(rng)
  labels[labels == 2] = 1  # Class 2 absent: 'present' (ignore_empty) matters.
  cw = [0.5, 2.0, 1.0, 3.0]
  check(run(logits, labels, class_weights=cw), logits, labels, "multiclass", class_weights=cw)
  opts = {"ignore_empty": False, "include_background": False}
  got = run(logits, labels, class_weights=cw, **opts)
  check(got, logits, labels, "multiclass", class_weights=cw, **opts)


def test_from_logits_false(rng):
  logits, labels = _mc(rng)
  probs = np_ref.softmax(logits).astype(np.float32)
  got = run(probs, labels, from_logits=False)
  check(got, probs, labels, "multiclass", from_logits=False)
  _close(got["pooled"], float(run(logits, labels)["pooled"]), rtol=1e-5)
  # Binary: probabilities are turned back into the same logits (hinge on the margin).
  z, y = _case(rng, BIN[1:-1], 1)
  got = run(np_ref.sigmoid(z).astype(np.float32), y, from_logits=False)
  check(got, np_ref.sigmoid(z), y, "binary", from_logits=False)
  _close(got["pooled"], float(run(z, y, with_mean=True)["pooled"]), rtol=1e-4, atol=1e-5)


def test_hand_examples():
  """Three kept pixels of a BIN-shaped batch (the rest masked out)."""
  logits = np.zeros(BIN, np.float32)
  labels = np.zeros(BIN[:-1], np.int32)
  mask = np.zeros(BIN[:-1], np.float32)
  mask[0, :3] = 1.0
  # Errors 1 - z*(2g-1) = [-1, 0, 1.5]; sorted first is a background pixel: J_1 = 1 - 1/2.
  logits[0, :3, 0] = [2.0, -1.0, 0.5]
  labels[0, :3] = [1, 0, 0]
  _close(run(logits, labels, mask, with_mean=True)["pooled"], 0.75)
  # No foreground: every prefix Jaccard loss is 1, so the loss is the largest (relu) error.
  logits[0, :3, 0] = [0.5, -3.0, 2.0]
  labels[0, :3] = 0
  _close(run(logits, labels, mask, with_mean=True)["pooled"], 3.0)


# ---------------------------------------------------------------- gradients
@jax.jit
def _vag(x, y, m):
  """Value and gradient of the pooled loss (integer labels, ignore_index=255)."""
  return jax.value_and_grad(lambda z: lovasz_loss(z, y, mask=m, ignore_index=255))(x)


@pytest.mark.parametrize("shape", [MC, BIN], ids=["multiclass", "binary"])
def test_gradient_matches_reference_differences(rng, shape):
  logits, labels = _case(rng, shape[1:-1], shape[-1])
  mode = "binary" if shape[-1] == 1 else "multiclass"
  mask = np.ones(labels.shape, np.float32)
  mask[1, 0] = 0.0
  value, grad = _vag(logits, labels, mask)

  def ref(x):
    return np_lovasz(x, labels, mode, mask=mask)[1]

  _close(value, ref(logits))
  h = 1e-6
  fd = np.zeros(logits.shape)
  base = logits.astype(np.float64)
  for idx in np.ndindex(logits.shape):
    step = np.zeros_like(base)
    step[idx] = h
    fd[idx] = (ref(base + step) - ref(base - step)) / (2 * h)
  np.testing.assert_allclose(np.asarray(grad, np.float64), fd, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(grad)[1, 0] == 0.0), "ignored pixels get no gradient"


# ---------------------------------------------------------------- properties
def test_finite_extremes_and_empty_cases(rng):
  _, labels = _mc(rng)
  signs = 2.0 * np.asarray(jax.nn.one_hot(labels, MC[-1]), np.float32) - 1.0
  ones = np.ones(labels.shape, np.float32)
  zeros = np.zeros(labels.shape, np.float32)
  for x, y, m in [
    (1e4 * signs, labels, ones),
    (-1e4 * signs, labels, ones),
    (1e4 * signs, np.zeros_like(labels), ones),
    (1e4 * signs, labels, zeros),
    (1e4 * signs, np.full_like(labels, 255), ones),
  ]:
    value, grad = _vag(x, y, m)
    assert np.isfinite(value) and np.isfinite(grad).all()
  value, grad = _vag(signs, labels, zeros)
  assert value == 0.0 and np.all(grad == 0.0), "all ignored: 0 and no gradient"
  # One-pixel images.
  x1, y1 = np.ones((3, 1, 1, 1), np.float32), np.array([[[1]], [[0]], [[1]]], np.int32)
  check(run(x1, y1), x1, y1, "binary")


def test_perfect_prediction_is_minimum(rng):
  _, labels = _mc(rng)
  one_hot = np.asarray(jax.nn.one_hot(labels, MC[-1]), np.float32)
  ml = (rng.random(ML) > 0.5).astype(np.float32)
  _, y = _case(rng, BIN[1:-1], 1)
  for got in [
    run(10.0 * (2.0 * one_hot - 1.0), labels),
    run(one_hot, labels, from_logits=False),
    run(10.0 * (2.0 * ml - 1.0), ml, with_mean=True, **ML_OPTS),
    run(10.0 * (2.0 * y[..., None] - 1.0), y, with_mean=True),
  ]:
    assert all(np.all(np.asarray(v) < 1e-6) for v in got.values())


def test_multiclass_in_unit_interval_and_batch_order():
  for seed in range(3):
    logits, labels = _mc(np.random.default_rng(seed))
    logits = 4.0 * logits
    got = run(logits, labels)
    assert 0.0 <= float(got["pooled"]) <= 1.0
    assert np.all((np.asarray(got["none"]) >= 0) & (np.asarray(got["none"]) <= 1))
    swapped = run(logits[::-1], labels[::-1])
    _close(swapped["pooled"], float(got["pooled"]), rtol=1e-6)


def test_sort_order_is_a_stable_descending_argsort(rng, monkeypatch):
  """The packed 64-bit sort (and the two-operand fallback) give NumPy's stable argsort of the
  negated errors with ignored pixels last, on ties, signed zeros, infinities and subnormals."""
  from seg_jax.losses import lovasz

  values = np.array([0.0, -0.0, 1.0, 0.5, np.inf, 1e-40, 3.0, 0.5, 0.0, 2.0], np.float32)
  errors = rng.choice(values, size=(3, 200)).astype(np.float32)
  errors[2] = -errors[2]  # Negative values too (errors never are; the keys still order them).
  kept = (rng.random(errors.shape) > 0.2).astype(np.float32)
  # Primary key: ignored after kept; secondary: decreasing kept error (lexsort is stable, so
  # ignored pixels stay in their original order).
  neg = np.where(kept > 0, -errors.astype(np.float64), 0.0)
  want = np.stack([np.lexsort((e, k == 0)) for e, k in zip(neg, kept, strict=True)])

  def perm():
    keys = lovasz._descending_keys(jnp.asarray(errors), jnp.asarray(kept))
    return np.asarray(jax.jit(lovasz._argsort)(keys))

  packed = perm()
  monkeypatch.setattr(lovasz, "_PACKED_SORT_MAX", 0)
  two_operands = perm()
  np.testing.assert_array_equal(packed, two_operands)
  # Signed zeros: the keys put +0 before -0 (as -errors ascending would in a total order); they
  # tie in value, so compare the sorted errors, and the permutation where no zero is involved.
  np.testing.assert_array_equal(
    np.take_along_axis(np.where(kept > 0, errors, np.nan), packed, -1),
    np.take_along_axis(np.where(kept > 0, errors, np.nan), want, -1),
  )
  nonzero = np.take_along_axis(errors != 0, want, -1)
  np.testing.assert_array_equal(packed[nonzero], want[nonzero])


def test_no_quadratic_intermediates():
  """O(N log N) by construction: no intermediate of the traced loss holds more than O(N) values."""
  shape = (2, 32, 32, 3)  # N = 2048 pixels, N^2 = 4M.
  n = shape[0] * shape[1] * shape[2]

  def sizes(jaxpr):
    for eqn in jaxpr.eqns:
      for v in eqn.outvars:
        yield int(np.prod(v.aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        yield from sizes(sub)

  for per_image in (False, True):
    fn = jax.grad(lambda x, y, pi=per_image: lovasz_loss(x, y, per_image=pi))
    jaxpr = jax.make_jaxpr(fn)(jnp.zeros(shape), jnp.zeros(shape[:-1], jnp.int32)).jaxpr
    largest = max(sizes(jaxpr))
    assert largest <= 4 * n * shape[-1], largest


def test_bad_options():
  x, y = jax.ShapeDtypeStruct((1, 3, 2), jnp.float32), jax.ShapeDtypeStruct((1, 3), jnp.int32)
  for kw, err, msg in [
    ({"ignore_empty": "yes"}, TypeError, "ignore_empty"),
    ({"class_weights": jnp.ones(3)}, ValueError, "class_weights"),
    ({"reduction": "none"}, ValueError, "reduction='none' needs per_image=True"),
  ]:
    with pytest.raises(err, match=msg):
      jax.eval_shape(lambda a, b, kw=kw: lovasz_loss(a, b, **kw), x, y)
