"""Tests of the overlap (region) losses: dice, log-cosh dice, jaccard, tversky, focal tversky and
generalized dice (seg_jax/losses/dice.py, jaccard.py, tversky.py, generalized_dice.py).

Every value is checked against an independent float64 NumPy reference written from the formulas
in the docstrings (``ref_loss`` below, built on tests/np_ref.py), or against a hand calculation.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax import losses

EPS = 1e-7  # Clip of probabilities given with from_logits=False (the contract's value).

OVERLAP = (
  "dice",
  "log_cosh_dice",
  "jaccard",
  "tversky",
  "focal_tversky",
  "generalized_dice",
)


# ----------------------------------------------------------------------------------------------
# Float64 reference, from the formulas.


def _ratio(num, den):
  """num / den, with 0/0 (den == 0) counted as 1."""
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


def ref_prepare(logits, labels, *, mode=None, from_logits=True, mask=None, ignore_index=None):
  """Returns (mode, probabilities, targets, weights), all float64."""
  z = np.asarray(logits, np.float64)
  c = z.shape[-1]
  mode = mode or ("binary" if c == 1 else "multiclass")
  if not from_logits:
    p = np.clip(z, EPS, 1 - EPS)
  elif mode == "multiclass":
    p = np_ref.softmax(z)
  else:
    p = np_ref.sigmoid(z)
  y = np.asarray(labels)
  if y.shape == z.shape[:-1]:
    w = np_ref.pixel_weights(y, c, mask, ignore_index, binary=mode == "binary")
    y = np.where(w > 0, y, 0)
    g = y[..., None].astype(np.float64) if mode == "binary" else np_ref.one_hot(y, c)
  else:
    g = y.astype(np.float64)
    w = np.ones(y.shape[:-1]) if mask is None else np.asarray(mask, np.float64)
  return mode, p, g, w


def ref_stats(p, g, w, *, per_image, squared=False, soft_labels=False):
  """Soft (I, P, G) per class: (batch, C) per image, else (C,).

  ``soft_labels``: the semimetric intersection (for every label form; equal for hard ones).
  """
  axes = tuple(range(1, p.ndim - 1)) if per_image else tuple(range(p.ndim - 1))
  semimetric = np_ref.semimetric_intersection(p, g, w, axes)
  w = w[..., None]
  inter = semimetric if soft_labels else (w * p * g).sum(axes)
  pred = (w * (p**2 if squared else p)).sum(axes)
  target = (w * (g**2 if squared else g)).sum(axes)
  return inter, pred, target


def ref_class_mean(values, target, *, mode, include_background, class_weights, ignore_empty):
  c = values.shape[-1]
  cw = np.ones(c) if class_weights is None else np.array(class_weights, np.float64)
  if mode == "multiclass" and not include_background:
    cw[0] = 0.0
  cw = np.broadcast_to(cw, values.shape).copy()
  if ignore_empty:
    cw *= target > 0
  den = cw.sum(-1)
  mean = np.where(den > 0, (cw * values).sum(-1) / np.where(den > 0, den, 1.0), 0.0)
  return mean, (den > 0).astype(np.float64)


def ref_reduce(values, counted, w, *, per_image, reduction):
  """Mean/sum over the counted images with a kept pixel; 'none' gives 0 for the others."""
  if not per_image:
    return float(values * counted)
  counted = counted * (w.reshape(len(w), -1).sum(1) > 0)
  vals = values * counted
  if reduction == "none":
    return vals
  if reduction == "sum":
    return vals.sum()
  return vals.sum() / counted.sum() if counted.sum() > 0 else 0.0


def ref_gdl_unit(
  inter, pred, target, *, mode, include_background, class_weights, ignore_empty, smooth, scaled=True
):
  """Generalized dice of one unit (statistics (C,)): returns (loss, counted)."""
  c = target.shape[-1]
  included = np.ones(c, bool)
  if mode == "multiclass" and not include_background:
    included[0] = False
  present = (target > 0) & included
  if not present.any():
    return 0.0, 0.0 if ignore_empty else 1.0
  w = np.zeros(c)
  w[present] = 1.0 / target[present] ** 2
  top = w[present].max()
  w[included & ~present] = 0.0 if ignore_empty else top
  if scaled:  # Documented scaling: the largest weight is 1 (cancels when smooth == 0).
    w = w / top
  if class_weights is not None:
    w = w * np.asarray(class_weights, np.float64)
  num = 2 * (w * inter).sum() + smooth
  den = (w * (pred + target)).sum() + smooth
  return 1.0 - float(_ratio(num, den)), 1.0


def ref_loss(
  name,
  logits,
  labels,
  *,
  mode=None,
  from_logits=True,
  mask=None,
  ignore_index=None,
  reduction="mean",
  include_background=True,
  class_weights=None,
  per_image=False,
  smooth=1e-5,
  ignore_empty=False,
  squared=False,
  log=False,
  alpha=None,
  beta=None,
  gamma=None,
  gdl_scaled=True,
  soft_labels=False,
):
  mode, p, g, w = ref_prepare(
    logits, labels, mode=mode, from_logits=from_logits, mask=mask, ignore_index=ignore_index
  )
  inter, pred, target = ref_stats(
    p, g, w, per_image=per_image, squared=squared, soft_labels=soft_labels
  )
  if name == "generalized_dice":
    units = zip(inter, pred, target, strict=False) if per_image else [(inter, pred, target)]
    out = [
      ref_gdl_unit(
        i,
        pr,
        t,
        mode=mode,
        include_background=include_background,
        class_weights=class_weights,
        ignore_empty=ignore_empty,
        smooth=smooth,
        scaled=gdl_scaled,
      )
      for i, pr, t in units
    ]
    values, counted = (np.array(v) for v in zip(*out, strict=False))
    if not per_image:
      values, counted = values[0], counted[0]
    return ref_reduce(values, counted, w, per_image=per_image, reduction=reduction)
  if name in ("dice", "log_cosh_dice"):
    score = _ratio(2 * inter + smooth, pred + target + smooth)
    per_class = -np.log(np.maximum(score, EPS)) if log else 1 - score
  elif name == "jaccard":
    per_class = 1 - _ratio(inter + smooth, pred + target - inter + smooth)
  else:
    a = 0.5 if alpha is None else alpha
    b = 0.5 if beta is None else beta
    if name == "focal_tversky":
      a = 0.3 if alpha is None else alpha
      b = 0.7 if beta is None else beta
    ti = _ratio(inter + smooth, inter + a * (pred - inter) + b * (target - inter) + smooth)
    per_class = 1 - ti
    if name == "focal_tversky":
      per_class = np.maximum(per_class, 0) ** (0.75 if gamma is None else gamma)
  values, counted = ref_class_mean(
    per_class,
    target,
    mode=mode,
    include_background=include_background,
    class_weights=class_weights,
    ignore_empty=ignore_empty,
  )
  if name == "log_cosh_dice":
    values = np.log(np.cosh(values))
  return ref_reduce(values, counted, w, per_image=per_image, reduction=reduction)


def loss_options(name, opts):
  """Drops options a loss does not take (reference and loss see the same call)."""
  return {k: v for k, v in opts.items() if k in losses.options(name)}


def check(name, logits, labels, rtol=2e-5, atol=2e-6, **opts):
  opts = loss_options(name, opts)
  got = np.asarray(losses.get(name, **opts)(jnp.asarray(logits), jnp.asarray(labels)))
  want = ref_loss(name, logits, labels, **opts)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{name} {opts}")
  return got


# ----------------------------------------------------------------------------------------------
# Random problems.


def make_case(
  rng,
  spatial,
  channels,
  *,
  mode,
  dense,
  batch=2,
  mask=False,
  ignore_index=None,
  from_logits=True,
  empty_class=False,
):
  """Random (logits or probabilities, labels, call options) for one scenario."""
  shape = (batch, *spatial, channels)
  z = (2.0 * rng.standard_normal(shape)).astype(np.float32)
  opts = {"mode": mode, "from_logits": from_logits}
  if not from_logits:
    ref_mode = mode or ("binary" if channels == 1 else "multiclass")
    z = (np_ref.softmax(z) if ref_mode == "multiclass" else np_ref.sigmoid(z)).astype(np.float32)
  if dense:
    if mode == "multiclass":  # Soft labels summing to one.
      labels = np_ref.softmax(rng.standard_normal(shape)).astype(np.float32)
    else:
      labels = (rng.random(shape) < 0.4).astype(np.float32)
  else:
    upper = 2 if channels == 1 else channels
    labels = rng.integers(0, upper, size=shape[:-1]).astype(np.int32)
    if empty_class:  # The last class never occurs.
      labels = np.minimum(labels, upper - 2)
    if ignore_index is not None:
      labels = np.where(rng.random(labels.shape) < 0.2, ignore_index, labels).astype(np.int32)
      opts["ignore_index"] = ignore_index
  if mask:
    m = (rng.random(shape[:-1]) < 0.7).astype(np.float32)
    m[0] = 0.0  # One image entirely masked out.
    opts["mask"] = m
  return z, labels, opts


# Few distinct shapes: eager JAX compiles each primitive once per shape, which dominates the
# run time. Problems are (2, 5, 4, C) in 2-D, (2, 7, 1) in 1-D and (2, 3, 3, 2, 3) in 3-D.
SCENARIOS = {
  # name: (spatial, channels, make_case options)
  "2d-multiclass-int": ((5, 4), 3, {"mode": None, "dense": False}),
  "1d-binary-int": ((7,), 1, {"mode": None, "dense": False}),
  "3d-multilabel-dense": ((3, 3, 2), 3, {"mode": "multilabel", "dense": True}),
  "2d-multiclass-soft-labels": ((5, 4), 3, {"mode": "multiclass", "dense": True}),
  "2d-binary-dense-mask": ((5, 4), 1, {"mode": "binary", "dense": True, "mask": True}),
  "2d-multiclass-ignore-index": ((5, 4), 3, {"mode": None, "dense": False, "ignore_index": 255}),
  "2d-multiclass-probs-mask": (
    (5, 4),
    3,
    {"mode": None, "dense": False, "from_logits": False, "mask": True},
  ),
  "1d-binary-probs": ((7,), 1, {"mode": None, "dense": False, "from_logits": False}),
  "2d-multiclass-empty-class": ((5, 4), 3, {"mode": None, "dense": False, "empty_class": True}),
  # More channels than the per-channel path unrolls: the channels-last fallback.
  "2d-multiclass-17-channels": ((5, 4), 17, {"mode": None, "dense": False}),
}

OPTION_SETS = [
  {},
  {"per_image": True},
  {"per_image": True, "reduction": "none"},
  {"per_image": True, "reduction": "sum", "include_background": False},
  {"include_background": False, "class_weights": "random"},
  {"ignore_empty": True, "smooth": 0.0},
  {"ignore_empty": True, "per_image": True, "reduction": "none", "smooth": 1.0},
]

LOSS_VARIANTS = {
  "dice": [{}, {"squared": True}, {"log": True}, {"soft_labels": True}],
  "log_cosh_dice": [{}, {"soft_labels": True}],
  "jaccard": [{}, {"soft_labels": True}],
  "tversky": [{}, {"alpha": 0.3, "beta": 0.7}, {"alpha": 1.0, "beta": 0.0}],
  "focal_tversky": [{}, {"gamma": 2.0, "alpha": 0.6, "beta": 0.4}],
  "generalized_dice": [{}],
}


def _option_sets(scenario_index: int, count: int):
  """A rotating subset of OPTION_SETS: over the scenarios every set is used several times."""
  return [OPTION_SETS[(scenario_index * 3 + k) % len(OPTION_SETS)] for k in range(count)]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("name", OVERLAP)
def test_matches_reference(name, scenario):
  """Every loss, variant and region option against the float64 reference.

  Each (loss, scenario) pair runs every variant of the loss with 4 of the 7 option sets, chosen
  so that across the 10 scenarios each option set meets every variant in several scenarios.
  """
  spatial, channels, case_opts = SCENARIOS[scenario]
  index = list(SCENARIOS).index(scenario)
  rng = np.random.default_rng(zlib.crc32(f"{name}/{scenario}".encode()))
  z, labels, base = make_case(rng, spatial, channels, **case_opts)
  count = 1 if channels > 16 else 4
  for variant in LOSS_VARIANTS[name]:
    for options in _option_sets(index, count):
      opts = {**base, **variant, **options}
      if opts.get("class_weights") == "random":
        opts["class_weights"] = rng.uniform(0.2, 2.0, channels).round(3).tolist()
      check(name, z, labels, **opts)


# ----------------------------------------------------------------------------------------------
# Hand-calculated examples.


def test_small_object_dice_by_hand():
  """A 1-D image of 7 pixels with a 2-pixel object (pixels 3 and 4).

  The prediction covers pixel 3 (p = 0.8), barely touches pixel 4 (p = 0.1) and puts a false
  positive on pixel 6 (p = 0.6); every other pixel has p = 0.
    I = 0.8 + 0.1 = 0.9,  P = 0.8 + 0.1 + 0.6 = 1.5,  G = 2
    dice    = 2 I / (P + G)         = 1.8 / 3.5            = 0.514286 -> loss 0.485714
    jaccard = I / (P + G - I)       = 0.9 / 2.6            = 0.346154 -> loss 0.653846
    tversky(alpha=0.3 on FP = 0.6, beta=0.7 on FN = 1.1)
            = I / (I + 0.18 + 0.77) = 0.9 / 1.85           = 0.486486 -> loss 0.513514
  The 4 clipped zeros (p = 1e-7) move these by < 1e-6. The batch holds the image twice, so the
  pooled statistics double and the ratios are the same.
  """
  p = np.zeros((2, 7, 1), np.float32)
  p[:, 3, 0], p[:, 4, 0], p[:, 6, 0] = 0.8, 0.1, 0.6
  labels = np.zeros((2, 7), np.int32)
  labels[:, 3:5] = 1
  kw = {"from_logits": False, "smooth": 0.0}
  for per_image in (False, True):
    kw["per_image"] = per_image
    np.testing.assert_allclose(losses.dice_loss(p, labels, **kw), 0.485714, atol=2e-6)
    np.testing.assert_allclose(losses.jaccard_loss(p, labels, **kw), 0.653846, atol=2e-6)
    got = losses.tversky_loss(p, labels, alpha=0.3, beta=0.7, **kw)
    np.testing.assert_allclose(got, 0.513514, atol=2e-6)


def test_per_image_vs_pooled_by_hand():
  """Image A: object of 3 pixels, predicted exactly. Image B: 1-pixel object, missed.

  Per image: dice_A = 1, dice_B = 0 -> mean loss 0.5.
  Pooled (batch dice): I = 3, P = 3, G = 4 -> dice 6/7 -> loss 1/7.
  """
  p = np.array([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], np.float32)[..., None]
  labels = np.array([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]], np.int32)
  kw = {"from_logits": False, "smooth": 0.0}
  np.testing.assert_allclose(losses.dice_loss(p, labels, per_image=True, **kw), 0.5, atol=1e-5)
  np.testing.assert_allclose(losses.dice_loss(p, labels, **kw), 1 / 7, atol=1e-5)
  none = losses.dice_loss(p, labels, per_image=True, reduction="none", **kw)
  np.testing.assert_allclose(none, [0.0, 1.0], atol=1e-5)


def test_generalized_dice_absent_class_by_hand():
  """3 classes, labels [0, 0, 0, 1]: class 2 is absent from the ground truth.

  Probabilities: pixels 0-2 (0.8, 0.1, 0.1), pixel 3 (0.2, 0.6, 0.2).
    G = (3, 1, 0), I = (2.4, 0.6, 0), P = (2.6, 0.9, 0.5)
    weights 1/G^2 = (1/9, 1), the absent class gets the largest present weight, 1:
    loss = 1 - 2 (2.4/9 + 0.6) / ((2.6 + 3)/9 + (0.9 + 1) + (0.5 + 0)) = 1 - 1.733333/3.022222
         = 0.426471
    with ignore_empty the absent class has weight 0:
    loss = 1 - 1.733333 / 2.522222 = 0.312775
  (smooth=0, so the documented scaling of the weights does not matter).
  """
  p = np.array([[[0.8, 0.1, 0.1]] * 3 + [[0.2, 0.6, 0.2]]], np.float32)
  labels = np.array([[0, 0, 0, 1]], np.int32)
  # A one-off shape: one jit compile is cheaper than compiling every primitive eagerly.
  loss = jax.jit(
    functools.partial(losses.generalized_dice_loss, from_logits=False, smooth=0.0),
    static_argnames="ignore_empty",
  )
  np.testing.assert_allclose(loss(p, labels), 0.426471, atol=2e-6)
  np.testing.assert_allclose(loss(p, labels, ignore_empty=True), 0.312775, atol=2e-6)


def test_focal_tversky_exponent_convention():
  """gamma is the exponent itself: (1 - TI)^gamma; the paper's gamma = 4/3 is 0.75 here."""
  p = np.array([[0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0]] * 2, np.float32)[..., None]
  labels = np.array([[0, 1, 1, 0, 0, 0, 0]] * 2, np.int32)
  # TP = 1.8, FP = 0, FN = 0.2 per image: 1 - TI = 1 - 1.8 / (1.8 + 0.7 * 0.2) = 0.0721649...
  one_minus_ti = 1 - 1.8 / 1.94
  for gamma in (0.75, 1.0, 2.0):
    got = losses.focal_tversky_loss(p, labels, from_logits=False, smooth=0.0, gamma=gamma)
    np.testing.assert_allclose(got, one_minus_ti**gamma, rtol=1e-5)
  # The default is the paper's setting: exponent 0.75, alpha (FP) 0.3, beta (FN) 0.7.
  got = losses.focal_tversky_loss(p, labels, from_logits=False, smooth=0.0)
  np.testing.assert_allclose(got, one_minus_ti**0.75, rtol=1e-5)


def test_generalized_dice_weights_are_inverse_squared_volume():
  """With smooth=0 the loss equals Sudre's formula with raw (unscaled) 1/G^2 weights."""
  rng = np.random.default_rng(3)
  z, labels, opts = make_case(rng, (5, 4), 3, mode=None, dense=False)
  labels[0] = np.where(labels[0] == 2, 1, labels[0])  # Class 2 absent from image 0.
  for per_image in (False, True):
    got = losses.generalized_dice_loss(z, labels, smooth=0.0, per_image=per_image)
    want = ref_loss(
      "generalized_dice", z, labels, smooth=0.0, per_image=per_image, gdl_scaled=False
    )
    np.testing.assert_allclose(got, want, rtol=2e-5)


# ----------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("name", OVERLAP)
def test_range_perfect_prediction_and_batch_order(name, rng):
  fn = losses.get(name)
  for mode, c in (("multiclass", 3), ("binary", 1), ("multilabel", 3)):
    shape = (2, 5, 4)
    if mode == "multilabel":
      y = (rng.random((*shape, c)) < 0.5).astype(np.float32)
      onehot = y
    else:
      y = rng.integers(0, max(c, 2), shape).astype(np.int32)
      onehot = np_ref.one_hot(y, c) if mode == "multiclass" else y[..., None]
    for per_image in (False, True):
      for scale in (0.5, 5.0):
        z = (scale * rng.standard_normal((*shape, c))).astype(np.float32)
        v = float(fn(z, y, mode=mode, per_image=per_image))
        assert 0.0 <= v <= 1.0 + 1e-6, (mode, scale, per_image, v)
      # Batch-order invariance.
      v2 = float(fn(z[::-1], y[::-1], mode=mode, per_image=per_image))
      np.testing.assert_allclose(v, v2, rtol=1e-5, atol=1e-7)
      # Perfect prediction: confident logits on the true classes reach the minimum, 0.
      perfect = np.where(onehot > 0, 30.0, -30.0).astype(np.float32)
      v = float(fn(perfect, y, mode=mode, per_image=per_image))
      np.testing.assert_allclose(v, 0.0, atol=1e-5)


@pytest.mark.parametrize("name", OVERLAP)
def test_empty_ground_truth_conventions(name):
  """Binary images with no foreground at all."""
  y = np.zeros((2, 7), np.int32)
  fn = losses.get(name)
  empty_pred = np.full((2, 7, 1), -30.0, np.float32)
  full_pred = np.full((2, 7, 1), 30.0, np.float32)
  # Empty prediction on empty truth: score (0 + s) / (~0 + s) = 1, loss 0.
  assert float(fn(empty_pred, y)) == pytest.approx(0.0, abs=1e-6)
  if name == "generalized_dice":
    # No class present: every weight is 0 and the loss is 0 whatever the prediction.
    assert float(fn(full_pred, y)) == 0.0
  else:
    # Non-empty prediction on empty truth: score s / (P + s) ~ 0, loss ~ its maximum.
    top = {"log_cosh_dice": np.log(np.cosh(1.0))}.get(name, 1.0)
    assert float(fn(full_pred, y)) == pytest.approx(top, abs=1e-5)
  # smooth=0 with an exactly empty prediction (sigmoid(-1e4) == 0): 0/0 counts as score 1.
  zero_pred = np.full((2, 7, 1), -1e4, np.float32)
  value, grad = jax.value_and_grad(lambda z: fn(z, y, smooth=0.0))(jnp.asarray(zero_pred))
  assert float(value) == 0.0 and np.all(np.isfinite(grad))
  # ignore_empty: the only class is empty, so nothing counts; 'none' gives 0 per image.
  for pred in (empty_pred, full_pred):
    assert float(fn(pred, y, ignore_empty=True)) == 0.0
    none = fn(pred, y, ignore_empty=True, per_image=True, reduction="none")
    np.testing.assert_array_equal(none, [0.0, 0.0])


@pytest.mark.parametrize("name", OVERLAP)
def test_reduction_none_consistent_with_mean_and_sum(name, rng):
  z, y, _ = make_case(rng, (5, 4), 3, mode=None, dense=False)
  fn = losses.get(name, per_image=True)
  for mask in (
    np.ones((2, 5, 4)),
    np.array([0.0, 1.0])[:, None, None] * (rng.random((2, 5, 4)) < 0.7),
  ):
    mask = mask.astype(np.float32)
    none = np.asarray(fn(z, y, mask=mask, reduction="none"))
    assert none.shape == (2,)
    np.testing.assert_allclose(fn(z, y, mask=mask, reduction="sum"), none.sum(), rtol=1e-6)
    if mask[0].any():
      np.testing.assert_allclose(fn(z, y, mask=mask), none.mean(), rtol=1e-6)
    else:  # Image 0 entirely masked out: left out of the mean, reported as 0.
      assert none[0] == 0.0
      np.testing.assert_allclose(fn(z, y, mask=mask), none[1], rtol=1e-6)


def test_tversky_special_cases_equal_dice_and_jaccard(rng):
  z, y, _ = make_case(rng, (6, 5), 3, mode=None, dense=False)
  for per_image in (False, True):
    kw = {"per_image": per_image}
    # alpha = beta = 0.5 is dice with twice the smoothing: (TP + s)/(TP + (FP + FN)/2 + s).
    np.testing.assert_allclose(
      losses.tversky_loss(z, y, alpha=0.5, beta=0.5, smooth=0.5, **kw),
      losses.dice_loss(z, y, smooth=1.0, **kw),
      rtol=1e-6,
    )
    np.testing.assert_allclose(
      losses.tversky_loss(z, y, alpha=0.5, beta=0.5, smooth=0.0, **kw),
      losses.dice_loss(z, y, smooth=0.0, **kw),
      rtol=1e-6,
    )
    # alpha = beta = 1 is jaccard, same smoothing.
    np.testing.assert_allclose(
      losses.tversky_loss(z, y, alpha=1.0, beta=1.0, smooth=0.3, **kw),
      losses.jaccard_loss(z, y, smooth=0.3, **kw),
      rtol=1e-6,
    )
    # gamma = 1 focal tversky is tversky.
    np.testing.assert_allclose(
      losses.focal_tversky_loss(z, y, alpha=0.3, beta=0.7, gamma=1.0, **kw),
      losses.tversky_loss(z, y, alpha=0.3, beta=0.7, **kw),
      rtol=1e-6,
    )


# Cases (mode, channels, dense, from_logits, options) whose gradient is checked numerically:
# the softmax, sigmoid and probability paths of the custom JVP, squared or not, pooled or not,
# with integer labels read as a class map (the default call) or as one-hot planes (squared).
GRAD_CASES = [
  ("multiclass", 3, False, True, {"per_image": True, "squared": True}),
  ("multiclass", 3, False, True, {"mask": True, "ignore_index": 1}),
  ("binary", 1, False, True, {}),
  ("multiclass", 3, True, False, {"per_image": True}),
]
GRAD_LOSSES = ("dice", "tversky", "focal_tversky", "generalized_dice")


@pytest.mark.parametrize("case", range(len(GRAD_CASES)))
def test_gradient_matches_finite_differences_of_reference(case):
  """jax.grad (custom JVP inside) against central differences of the float64 reference.

  One gradient call per case covers several losses: the objective is their sum with distinct
  coefficients.
  """
  mode, c, dense, from_logits, extra = GRAD_CASES[case]
  extra = dict(extra)
  rng = np.random.default_rng(11 + case)
  z, y, opts = make_case(
    rng,
    (3,),
    c,
    mode=mode,
    dense=dense,
    from_logits=from_logits,
    mask=extra.pop("mask", False),
    ignore_index=extra.pop("ignore_index", None),
  )
  if not from_logits:  # Keep the probabilities away from the clip at EPS and 1 - EPS.
    z = (0.1 + 0.8 * z).astype(np.float32)
  opts = {name: loss_options(name, {**opts, **extra, "smooth": 0.1}) for name in GRAD_LOSSES}

  def total(v, ref=False):
    return sum(
      (k + 1) * (ref_loss(n, v, y, **opts[n]) if ref else losses.get(n)(v, y, **opts[n]))
      for k, n in enumerate(GRAD_LOSSES)
    )

  got = np.asarray(jax.jit(jax.grad(total))(jnp.asarray(z)))
  z64 = z.astype(np.float64)
  want = np.zeros_like(z64)
  h = 1e-6
  for idx in np.ndindex(z.shape):
    up, down = z64.copy(), z64.copy()
    up[idx] += h
    down[idx] -= h
    want[idx] = (total(up, ref=True) - total(down, ref=True)) / (2 * h)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=5e-5, err_msg=f"{GRAD_CASES[case]}")


def test_forward_mode_and_jit():
  """The custom JVP serves forward mode too; jit gives the eager value."""
  rng = np.random.default_rng(5)
  z, y, _ = make_case(rng, (5, 4), 3, mode=None, dense=False)
  fn = functools.partial(losses.dice_loss, labels=y, per_image=True)
  t = rng.standard_normal(z.shape).astype(np.float32)

  @jax.jit
  def forward_and_reverse(z, t):
    value, tangent = jax.jvp(fn, (z,), (t,))
    return value, tangent, jnp.vdot(jax.grad(fn)(z), t)

  value, tangent, reverse = forward_and_reverse(z, t)
  np.testing.assert_allclose(tangent, reverse, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(value, fn(z), rtol=1e-6)


@pytest.mark.parametrize("name", OVERLAP)
def test_finite_at_extreme_logits_and_degenerate_inputs(name, rng):
  """Finite values and gradients at logits +-1e4, with all or some pixels ignored, and for
  one-pixel images; per image (default smooth) and pooled with smooth=0."""
  shape = (2, 5, 4)
  y = rng.integers(0, 3, shape).astype(np.int32)
  big = (1e4 * np.sign(rng.standard_normal((*shape, 3)))).astype(np.float32)
  cases = {
    "logits +-1e4": (big, np.ones(shape)),
    "all ignored": (big, np.zeros(shape)),
    "one image ignored": (big, np.array([0.0, 1.0])[:, None, None] * np.ones(shape)),
    "one-pixel images": (big[:, :1, :1], np.ones((2, 1, 1))),
  }
  fn = losses.get(name)
  for label, (z, m) in cases.items():
    for options in ({"per_image": True}, {"smooth": 0.0}):
      call = functools.partial(
        fn, labels=y[:, : z.shape[1], : z.shape[2]], mask=m.astype(np.float32), **options
      )
      value, dz = jax.value_and_grad(call)(jnp.asarray(z))
      assert np.isfinite(value) and np.all(np.isfinite(dz)), (label, options, value)
      if label == "all ignored":  # Nothing counts: the loss is 0.
        assert float(value) == 0.0


def test_out_of_range_labels_are_ignored(rng):
  """Labels outside [0, C) have weight 0: same value as masking those pixels."""
  z, y, _ = make_case(rng, (5, 4), 3, mode=None, dense=False)
  bad = y.copy()
  bad[0, 0, :] = 7
  bad[1, 2, 1] = -1
  mask = (bad == y).astype(np.float32)
  for name in OVERLAP:
    np.testing.assert_allclose(
      losses.get(name)(z, bad), losses.get(name)(z, y, mask=mask), rtol=1e-6, err_msg=name
    )


def test_axis_name_matches_global_batch():
  """Under shard_map over 8 devices with axis_name, each loss equals its global-batch value."""
  from jax.sharding import Mesh, PartitionSpec

  rng = np.random.default_rng(2)
  z, y, _ = make_case(rng, (5, 4), 3, mode=None, dense=False, batch=8)
  calls = [(name, per_image) for name in ("dice", "generalized_dice") for per_image in (0, 1)]

  def all_losses(a, b, axis_name=None):
    return jnp.stack(
      [losses.get(n)(a, b, per_image=bool(pi), axis_name=axis_name) for n, pi in calls]
    )

  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.jit(
    jax.shard_map(
      functools.partial(all_losses, axis_name="data"),
      mesh=mesh,
      in_specs=(PartitionSpec("data"), PartitionSpec("data")),
      out_specs=PartitionSpec(),
    )
  )
  want = [ref_loss(n, z, y, per_image=bool(pi)) for n, pi in calls]
  np.testing.assert_allclose(sharded(z, y), want, rtol=2e-5, err_msg=str(calls))


# ----------------------------------------------------------------------------------------------
# Soft labels: the semimetric intersection (Wang & Blaschko 2023).

SOFT_LABEL_LOSSES = ("dice", "log_cosh_dice", "jaccard", "dice_ce", "dice_topk", "dice_boundary")


@pytest.mark.parametrize("name", SOFT_LABEL_LOSSES)
def test_soft_labels_equal_product_form_on_hard_labels(name, rng):
  """Hard dense labels (one-hot, or 0/1 in multilabel mode, with a mask): both forms agree;
  integer class maps give the same value bit for bit."""
  z = (2.0 * rng.standard_normal((2, 5, 4, 3))).astype(np.float32)
  y = rng.integers(0, 3, size=(2, 5, 4)).astype(np.int32)
  m = (rng.random((2, 5, 4)) < 0.7).astype(np.float32)
  onehot = np_ref.one_hot(y, 3).astype(np.float32)
  multi = (rng.random((2, 5, 4, 3)) < 0.4).astype(np.float32)
  for labels, opts in (
    (onehot, {}),
    (onehot, {"per_image": True, "reduction": "none"}),
    (multi, {"mode": "multilabel", "mask": m}),
  ):
    product = losses.get(name, **opts)(z, labels)
    semimetric = losses.get(name, soft_labels=True, **opts)(z, labels)
    np.testing.assert_allclose(semimetric, product, rtol=1e-5, atol=1e-6, err_msg=f"{opts}")
  assert losses.get(name, soft_labels=True)(z, y) == losses.get(name)(z, y)


def _soft_target(rng, shape):
  """Soft binary targets away from 0 and 1 (as after label smoothing or annotator averaging)."""
  return rng.uniform(0.15, 0.85, shape).astype(np.float32)


@pytest.mark.parametrize("name", ["dice", "jaccard"])
def test_semimetric_form_is_minimised_at_the_soft_target(name, rng):
  """For soft g the semimetric loss is 0 at p = g and larger at every nearby p, while the
  product form at p = g is above its value at a sharpened p, and decreases along the direction
  that sharpens g (so p = g is not even a local minimum of the classic form)."""
  g = _soft_target(rng, (2, 6, 5, 1))
  loss = {
    soft: jax.jit(
      functools.partial(losses.get(name, smooth=0.0, soft_labels=soft), from_logits=False)
    )
    for soft in (False, True)
  }
  at_g = {soft: float(loss[soft](g, g)) for soft in (False, True)}
  assert abs(at_g[True]) < 1e-6, at_g
  # The product form at p = g by hand, with S = sum g^2 and G = sum g: Dice 1 - 2S / 2G,
  # Jaccard 1 - S / (2G - S); positive although the prediction is the target.
  sq, total = float((g.astype(np.float64) ** 2).sum()), float(g.astype(np.float64).sum())
  classic = 1 - sq / total if name == "dice" else 1 - sq / (2 * total - sq)
  np.testing.assert_allclose(at_g[False], classic, rtol=1e-5)
  assert classic > 0.1
  for _ in range(20):
    p = np.clip(g + 0.05 * rng.standard_normal(g.shape), 0, 1).astype(np.float32)
    assert float(loss[True](p, g)) > at_g[True] + 1e-4
  sharpen = (g > 0.5).astype(np.float32) - g  # Towards the nearest hard label.
  for t in (0.1, 0.5, 1.0):
    p = np.clip(g + t * sharpen, 0, 1)
    assert float(loss[False](p, g)) < at_g[False] - 1e-3, t
    assert float(loss[True](p, g)) > at_g[True] + 1e-3, t
  # Gradient at p = g along the sharpening direction: negative for the product form.
  slope = jax.jvp(lambda p: loss[False](p, g), (jnp.asarray(g),), (jnp.asarray(sharpen),))[1]
  assert float(slope) < -1e-2, float(slope)


def test_soft_labels_axis_name_matches_global_batch(rng):
  """Dense soft labels under shard_map over 8 devices: equal to the float64 global reference."""
  from jax.sharding import Mesh, PartitionSpec

  z = (2.0 * rng.standard_normal((8, 5, 4, 3))).astype(np.float32)
  y = np_ref.softmax(rng.standard_normal((8, 5, 4, 3))).astype(np.float32)
  calls = [(n, pi) for n in ("dice", "jaccard") for pi in (False, True)]

  def all_losses(a, b, axis_name=None):
    return jnp.stack(
      [losses.get(n, soft_labels=True)(a, b, per_image=pi, axis_name=axis_name) for n, pi in calls]
    )

  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  spec = PartitionSpec("data")
  sharded = jax.jit(
    jax.shard_map(
      functools.partial(all_losses, axis_name="data"),
      mesh=mesh,
      in_specs=(spec, spec),
      out_specs=PartitionSpec(),
    )
  )
  want = [ref_loss(n, z, y, per_image=pi, soft_labels=True) for n, pi in calls]
  np.testing.assert_allclose(sharded(z, y), want, rtol=2e-5, err_msg=str(calls))


# ----------------------------------------------------------------------------------------------
# Option errors.


@pytest.mark.parametrize(
  "name, options, error, match",
  [
    ("dice", {"smooth": -1.0}, ValueError, "smooth"),
    ("dice", {"squared": "yes"}, TypeError, "squared"),
    ("dice", {"log": 1}, TypeError, "log"),
    ("jaccard", {"ignore_empty": None}, TypeError, "ignore_empty"),
    ("jaccard", {"include_background": "no"}, TypeError, "include_background"),
    ("tversky", {"alpha": -0.1}, ValueError, "alpha"),
    ("tversky", {"beta": float("nan")}, ValueError, "beta"),
    ("focal_tversky", {"gamma": 0.0}, ValueError, "gamma"),
    ("generalized_dice", {"class_weights": [1.0, 2.0]}, ValueError, "class_weights"),
    ("log_cosh_dice", {"class_weights": [1.0, -1.0, 1.0]}, ValueError, "class_weights"),
    ("dice", {"reduction": "none"}, ValueError, "per_image"),
    ("generalized_dice", {"reduction": "avg"}, ValueError, "reduction"),
    ("dice", {"per_image": "yes"}, TypeError, "per_image"),
    ("dice", {"soft_labels": 1}, TypeError, "soft_labels"),
    ("jaccard", {"soft_labels": "yes"}, TypeError, "soft_labels"),
    ("dice", {"soft_labels": True, "squared": True}, ValueError, "soft_labels=True"),
  ],
)
def test_bad_options_raise(name, options, error, match):
  z = np.zeros((2, 4, 3), np.float32)
  y = np.zeros((2, 4), np.int32)
  with pytest.raises(error, match=match):
    losses.get(name, **options)(z, y)
