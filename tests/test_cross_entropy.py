"""Tests of binary_cross_entropy and cross_entropy against float64 NumPy references.

The references below are written from the formulas in the docstrings (np_ref building blocks),
independently of seg_jax. Shapes are tiny; calls are jitted once per options and shapes
(cheaper than eager calls, which compile every operation for every new shape).
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import losses

# The module (the package attribute of the same name is the function).
ce_module = importlib.import_module("seg_jax.losses.cross_entropy")

EPS = 1e-7
SPATIAL = [(7,), (5, 4), (3, 4, 2)]
TOL = dict(rtol=2e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# float64 references
# ------------------------------------------------------------------------------------------------


def ref_targets(labels, c, *, mode, mask=None, ignore_index=None):
  """(targets (B,*S,C), pixel weights (B,*S)) as the loss contract defines them."""
  labels = np.asarray(labels)
  if np.issubdtype(labels.dtype, np.integer):
    binary = mode == "binary"
    valid = np_ref.pixel_weights(labels, c, ignore_index=ignore_index, binary=binary) > 0
    w = valid * (1.0 if mask is None else np.asarray(mask, np.float64))
    clamped = np.where(valid, labels, 0)
    y = clamped[..., None].astype(np.float64) if binary else np_ref.one_hot(clamped, c)
    return y, w
  w = np.ones(labels.shape[:-1]) if mask is None else np.asarray(mask, np.float64)
  return labels.astype(np.float64), w


def ref_reduce(values, w, reduction, norm=None):
  norm = w if norm is None else norm
  axes = tuple(range(1, values.ndim))
  if reduction == "none":
    num, den = (values * w).sum(axes), norm.sum(axes)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
  total = (values * w).sum()
  if reduction == "sum":
    return total
  return total / norm.sum() if norm.sum() > 0 else 0.0


def ref_bce(
  logits,
  labels,
  *,
  mode,
  from_logits=True,
  mask=None,
  ignore_index=None,
  reduction="mean",
  pos_weight=None,
  label_smoothing=0.0,
  channel_weights=None,
):
  x = np.asarray(logits, np.float64)
  c = x.shape[-1]
  y, w = ref_targets(labels, c, mode=mode, mask=mask, ignore_index=ignore_index)
  y = y * (1 - label_smoothing) + label_smoothing / 2
  if from_logits:
    log_s, log_1ms = np_ref.log_sigmoid(x), np_ref.log_sigmoid(-x)
  else:
    p = np.clip(x, EPS, 1 - EPS)
    log_s, log_1ms = np.log(p), np.log1p(-p)
  pw = np.ones(c) if pos_weight is None else np.broadcast_to(np.asarray(pos_weight, float), (c,))
  elem = -(pw * y * log_s + (1 - y) * log_1ms)
  if channel_weights is not None:
    elem = elem * np.asarray(channel_weights, float)
  return ref_reduce(elem.mean(-1), w, reduction)


def ref_ce(
  logits,
  labels,
  *,
  from_logits=True,
  mask=None,
  ignore_index=None,
  reduction="mean",
  class_weights=None,
  label_smoothing=0.0,
):
  x = np.asarray(logits, np.float64)
  c = x.shape[-1]
  y, w = ref_targets(labels, c, mode="multiclass", mask=mask, ignore_index=ignore_index)
  logp = np_ref.log_softmax(x) if from_logits else np.log(np.clip(x, EPS, 1 - EPS))
  v = np.ones(c) if class_weights is None else np.asarray(class_weights, float)
  ys = (1 - label_smoothing) * y + label_smoothing / c
  values = -(v * ys * logp).sum(-1)
  norm = None if class_weights is None else w * (v * y).sum(-1)
  return ref_reduce(values, w, reduction, norm)


def case(rng, spatial, c, *, kind, batch=2, scale=3.0):
  """Random float32 logits and labels: kind 'int' (class map), 'onehot', 'soft' or 'multi'."""
  logits = (scale * rng.standard_normal((batch, *spatial, c))).astype(np.float32)
  n = max(c, 2)
  ints = rng.integers(0, n, size=(batch, *spatial)).astype(np.int32)
  if kind == "int":
    return logits, ints
  if kind == "onehot":
    return logits, np_ref.one_hot(ints, c).astype(np.float32)
  if kind == "soft":
    return logits, np_ref.softmax(rng.standard_normal((batch, *spatial, c))).astype(np.float32)
  if kind == "multi":  # independent targets in [0, 1], some exactly 0/1
    t = rng.random((batch, *spatial, c))
    t[t < 0.3], t[t > 0.7] = 0.0, 1.0
    return logits, t.astype(np.float32)
  raise ValueError(kind)


def close(actual, expected, **tol):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **{**TOL, **tol})


def _freeze(value):
  """Options as hashable static values (sequences become tuples of floats)."""
  if isinstance(value, list | tuple | np.ndarray):
    arr = np.asarray(value, np.float64)
    return float(arr) if arr.ndim == 0 else tuple(arr.tolist())
  return value


ALL = ("mean", "sum", "none")


@functools.cache
def _compiled(fn, frozen, reductions):
  opts = dict(frozen)
  if reductions is None:
    return jax.jit(jax.value_and_grad(lambda x, y, m: fn(x, y, mask=m, **opts)))
  return jax.jit(lambda x, y, m: {r: fn(x, y, mask=m, reduction=r, **opts) for r in reductions})


def _frozen(opts):
  return tuple(sorted((k, _freeze(v)) for k, v in opts.items()))


def run(fn, logits, labels, *, mask=None, reductions=("mean",), **opts):
  """``{reduction: value}`` of ``fn`` with static options; one compile per options and shapes."""
  return _compiled(fn, _frozen(opts), reductions)(logits, labels, mask)


def value_and_grad(fn, logits, labels, *, mask=None, **opts):
  """Jitted value and gradient (w.r.t. logits) of the mean loss."""
  return _compiled(fn, _frozen(opts), None)(logits, labels, mask)


def check(got, expected_fn, **tol):
  """Compares ``run``'s reductions with ``expected_fn(reduction)``."""
  for reduction, value in got.items():
    close(value, expected_fn(reduction), **tol)


# ------------------------------------------------------------------------------------------------
# worked examples (hand calculation)
# ------------------------------------------------------------------------------------------------


def test_bce_worked_example_positive_pixel():
  # A positive pixel predicted with p = 0.9 and p = 0.1: -log 0.9 = 0.1053605, -log 0.1 = 2.3025851.
  labels = np.ones((2, 1), np.int32)
  p = np.array([0.9, 0.1], np.float32).reshape(2, 1, 1)
  expected = np.array([0.1053605, 2.3025851])
  logits = np.log(p / (1 - p))
  close(
    run(losses.binary_cross_entropy, logits, labels, reductions=("none",))["none"],
    expected,
    rtol=1e-6,
  )
  got = run(losses.binary_cross_entropy, p, labels, from_logits=False, reductions=("none",))["none"]
  close(got, expected, rtol=1e-6)


def test_ce_worked_example_true_class_probability():
  probs = np.array([0.1, 0.7, 0.2], np.float32).reshape(1, 1, 3)
  labels = np.array([[1]], np.int32)
  expected = 0.35667494  # -log 0.7
  close(run(losses.cross_entropy, probs, labels, from_logits=False)["mean"], expected, rtol=1e-6)
  close(run(losses.cross_entropy, np.log(probs), labels)["mean"], expected, rtol=1e-6)
  # Any constant shift of the logits gives the same softmax.
  close(run(losses.cross_entropy, np.log(probs) + 50.0, labels)["mean"], expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# references: cross_entropy
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", SPATIAL, ids=["1d", "2d", "3d"])
def test_1d_2d_3d_match_reference(rng, spatial):
  logits, labels = case(rng, spatial, 3, kind="int")
  check(
    run(losses.cross_entropy, logits, labels, reductions=ALL),
    lambda r: ref_ce(logits, labels, reduction=r),
  )
  _, soft = case(rng, spatial, 3, kind="soft")
  check(run(losses.cross_entropy, logits, soft), lambda r: ref_ce(logits, soft, reduction=r))
  _, multi = case(rng, spatial, 3, kind="multi")
  check(
    run(losses.binary_cross_entropy, logits, multi, reductions=ALL),
    lambda r: ref_bce(logits, multi, mode="multilabel", reduction=r),
  )
  binary, bin_labels = case(rng, spatial, 1, kind="int")
  check(
    run(losses.binary_cross_entropy, binary, bin_labels),
    lambda r: ref_bce(binary, bin_labels, mode="binary", reduction=r),
  )


def test_ce_onehot_equals_class_map(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  onehot = np_ref.one_hot(labels, 3).astype(np.float32)
  check(run(losses.cross_entropy, logits, onehot), lambda r: ref_ce(logits, labels, reduction=r))


@pytest.mark.parametrize(
  "kind,opts",
  [
    ("int", dict(class_weights=[0.2, 1.0, 3.0], label_smoothing=0.1)),
    ("soft", dict(class_weights=[0.2, 1.0, 3.0], label_smoothing=0.1)),
    ("int", dict(class_weights=[0.2, 1.0, 3.0])),
    ("soft", dict(label_smoothing=0.3)),
  ],
  ids=["int-weights+smoothing", "soft-weights+smoothing", "int-weights", "soft-smoothing"],
)
def test_ce_class_weights_and_label_smoothing(rng, kind, opts):
  logits, labels = case(rng, (5, 4), 3, kind=kind)
  mask = (rng.random((2, 5, 4)) > 0.3).astype(np.float32)
  check(
    run(losses.cross_entropy, logits, labels, mask=mask, reductions=ALL, **opts),
    lambda r: ref_ce(logits, labels, mask=mask, reduction=r, **opts),
  )


def test_ce_class_weights_mean_is_torch_weighted_mean(rng):
  # PyTorch's weighted mean for one-hot targets: sum_i v_{t_i} nll_i / sum_i v_{t_i}.
  logits, labels = case(rng, (5, 4), 3, kind="int")
  v = np.array([0.2, 1.0, 3.0])
  nll = -np.take_along_axis(np_ref.log_softmax(logits), labels[..., None], -1)[..., 0]
  expected = (v[labels] * nll).sum() / v[labels].sum()
  close(run(losses.cross_entropy, logits, labels, class_weights=v)["mean"], expected)


def test_ce_mask_ignore_index_and_out_of_range_labels(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  labels = labels.copy()
  labels[0, 0, :2] = 255  # ignore_index
  labels[1, 1, 0] = -1  # out of range: ignored, never NaN
  labels[1, 2, 3] = 3
  mask = rng.random((2, 5, 4)).astype(np.float32)  # fractional weights
  mask[0, 4] = 0.0
  got = run(losses.cross_entropy, logits, labels, mask=mask, ignore_index=255, reductions=ALL)
  assert all(np.all(np.isfinite(v)) for v in got.values())
  check(got, lambda r: ref_ce(logits, labels, mask=mask, ignore_index=255, reduction=r))
  # The values of the logits at ignored pixels do not matter at all.
  other = logits.copy()
  other[0, 0, :2] = 1e4
  other[1, 1, 0] = -1e4
  other[1, 2, 3] = 3e4
  other[0, 4] = -3e4
  check(
    run(losses.cross_entropy, other, labels, mask=mask, ignore_index=255),
    lambda r: ref_ce(logits, labels, mask=mask, ignore_index=255, reduction=r),
  )


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_ce_from_probabilities(rng, kind):
  logits, labels = case(rng, (3, 4, 2), 3, kind=kind)
  probs = np_ref.softmax(logits).astype(np.float32)
  got = run(losses.cross_entropy, probs, labels, from_logits=False, label_smoothing=0.2)
  check(got, lambda r: ref_ce(probs, labels, from_logits=False, label_smoothing=0.2, reduction=r))
  close(got["mean"], ref_ce(logits, labels, label_smoothing=0.2), rtol=1e-4)


def test_ce_reduction_none_consistent_with_mean(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int", batch=3)
  mask = (rng.random((3, 5, 4)) > 0.5).astype(np.float32)
  mask[2] = 0.0  # an example with no kept pixel gives 0 and does not count
  got = run(losses.cross_entropy, logits, labels, mask=mask, reductions=ALL)
  per = np.asarray(got["none"])
  counts = mask.reshape(3, -1).sum(1)
  assert per.shape == (3,) and per[2] == 0.0
  close(got["mean"], (per * counts).sum() / counts.sum())
  close(got["sum"], (per * counts).sum())


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_ce_many_classes_vectorised_path(rng, kind):
  c = ce_module._UNROLL_MAX + 3  # beyond the written-out channel form
  logits, labels = case(rng, (3, 4), c, kind=kind)
  v = rng.random(c) + 0.1
  mask = (rng.random((2, 3, 4)) > 0.2).astype(np.float32)
  opts = dict(class_weights=v, label_smoothing=0.1)
  check(
    run(losses.cross_entropy, logits, labels, mask=mask, **opts),
    lambda r: ref_ce(logits, labels, mask=mask, reduction=r, **opts),
  )
  close(run(losses.cross_entropy, logits, labels)["mean"], ref_ce(logits, labels))


# ------------------------------------------------------------------------------------------------
# references: binary_cross_entropy (and cross_entropy in sigmoid modes)
# ------------------------------------------------------------------------------------------------


def test_bce_binary_int_and_dense_match_reference(rng):
  logits, labels = case(rng, (5, 4), 1, kind="int")
  dense = labels[..., None].astype(np.float32)
  expected = functools.partial(ref_bce, logits, labels, mode="binary")
  check(
    run(losses.binary_cross_entropy, logits, labels, reductions=ALL),
    lambda r: expected(reduction=r),
  )
  check(run(losses.binary_cross_entropy, logits, dense), lambda r: expected(reduction=r))
  # cross_entropy on one channel is the sigmoid BCE.
  check(run(losses.cross_entropy, logits, labels), lambda r: expected(reduction=r))


def test_ce_multilabel_mode_is_bce(rng):
  logits, labels = case(rng, (5, 4), 3, kind="multi")
  expected = functools.partial(ref_bce, logits, labels, mode="multilabel")
  check(
    run(losses.cross_entropy, logits, labels, mode="multilabel"), lambda r: expected(reduction=r)
  )


def test_bce_multiclass_one_vs_rest_from_class_map(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  expected = ref_bce(logits, labels, mode="multiclass")
  bce = losses.binary_cross_entropy
  close(run(bce, logits, labels)["mean"], expected)  # the default for a class map
  close(run(bce, logits, labels, mode="multiclass")["mean"], expected)
  onehot = np_ref.one_hot(labels, 3).astype(np.float32)
  close(run(bce, logits, onehot)["mean"], expected)  # dense: multilabel reading


@pytest.mark.parametrize(
  "mode,kind,c,pos_weight",
  [
    ("binary", "int", 1, "scalar"),
    ("binary", "multi", 1, "vector"),
    ("multilabel", "multi", 3, "vector"),
    ("multiclass", "int", 3, "scalar"),
  ],
)
def test_bce_pos_weight_label_smoothing_mask(rng, mode, kind, c, pos_weight):
  logits, labels = case(rng, (5, 4), c, kind=kind)
  mask = rng.random((2, 5, 4)).astype(np.float32) * (rng.random((2, 5, 4)) > 0.3)
  pw = 2.5 if pos_weight == "scalar" else np.linspace(0.5, 3.0, c)
  opts = dict(mode=mode, pos_weight=pw, label_smoothing=0.2)
  check(
    run(losses.binary_cross_entropy, logits, labels, mask=mask, **opts),
    lambda r: ref_bce(logits, labels, mask=mask, reduction=r, **opts),
  )


def test_bce_ignore_index_and_out_of_range_binary_labels(rng):
  logits, labels = case(rng, (5, 4), 1, kind="int")
  labels = labels.copy()
  labels[0, 0, 0] = 2  # not a binary label: ignored
  labels[0, 1, :2] = -100  # ignore_index
  got = run(losses.binary_cross_entropy, logits, labels, ignore_index=-100)
  check(got, lambda r: ref_bce(logits, labels, mode="binary", ignore_index=-100, reduction=r))
  other = logits.copy()
  other[0, 0, 0] = -1e4
  other[0, 1, :2] = 1e4
  check(run(losses.binary_cross_entropy, other, labels, ignore_index=-100), lambda r: got[r])


def test_bce_from_probabilities(rng):
  logits, labels = case(rng, (3, 4, 2), 3, kind="multi")
  probs = np_ref.sigmoid(logits).astype(np.float32)
  opts = dict(mode="multilabel", pos_weight=2.0, label_smoothing=0.1)
  got = run(losses.binary_cross_entropy, probs, labels, from_logits=False, **opts)
  check(got, lambda r: ref_bce(probs, labels, from_logits=False, reduction=r, **opts))
  close(got["mean"], ref_bce(logits, labels, **opts), rtol=1e-4)


def test_ce_sigmoid_modes_class_weights_scale_channels(rng):
  logits, labels = case(rng, (5, 4), 3, kind="multi")
  v = np.array([0.5, 1.0, 2.0])
  opts = dict(mode="multilabel", label_smoothing=0.1)
  check(
    run(losses.cross_entropy, logits, labels, class_weights=v, **opts),
    lambda r: ref_bce(logits, labels, channel_weights=v, reduction=r, **opts),
  )


def test_bce_many_channels(rng):
  c = ce_module._UNROLL_MAX + 3
  logits, labels = case(rng, (3, 4), c, kind="multi")
  pw = rng.random(c) + 0.5
  opts = dict(mode="multilabel", pos_weight=pw, label_smoothing=0.1)
  check(
    run(losses.binary_cross_entropy, logits, labels, **opts),
    lambda r: ref_bce(logits, labels, reduction=r, **opts),
  )
  ints = rng.integers(0, c, size=(2, 3, 4)).astype(np.int32)
  close(
    run(losses.binary_cross_entropy, logits, ints)["mean"],
    ref_bce(logits, ints, mode="multiclass"),
  )


def test_bce_per_pixel_accuracy_over_the_logit_range():
  # -log sigmoid(x) and -log(1 - sigmoid(x)) to float32 precision per pixel, also where they are
  # tiny (the log1p(exp(-|x|)) term must not lose its relative accuracy).
  x = np.array([-60, -30, -17, -10, -5, -1, -1e-3, 0, 1e-3, 1, 5, 10, 17, 30, 60], np.float32)
  logits = np.concatenate([x, x]).reshape(-1, 1, 1)
  labels = np.concatenate([np.ones_like(x), np.zeros_like(x)]).astype(np.int32).reshape(-1, 1)
  got = run(losses.binary_cross_entropy, logits, labels, reductions=("none",))["none"]
  expected = ref_bce(logits, labels, mode="binary", reduction="none")
  close(got, expected, rtol=1e-6, atol=1e-30)


# ------------------------------------------------------------------------------------------------
# gradients, extremes, properties
# ------------------------------------------------------------------------------------------------


def test_gradients_match_analytic_forms(rng):
  # d/dx of the mean BCE is (sigmoid(x) - y) / (N C); of the mean CE (softmax(x) - y) / N.
  logits, labels = case(rng, (5, 4), 3, kind="int")
  logits[0, 0, 0] = 0.0  # exact zeros: the |x| formulation must give sigmoid'(0) exactly
  logits[1, 2, 3] = 0.0
  n = labels.size
  y = np_ref.one_hot(labels, 3)
  _, g_ce = value_and_grad(losses.cross_entropy, logits, labels)
  close(g_ce, (np_ref.softmax(logits) - y) / n)
  _, g_bce = value_and_grad(losses.binary_cross_entropy, logits, labels)
  close(g_bce, (np_ref.sigmoid(logits) - y) / (n * 3))
  binary = np.where(y[..., 1:2] > 0, 1.0, 0.0).astype(np.float32)
  _, g_bin = value_and_grad(losses.binary_cross_entropy, logits[..., :1], binary)
  close(g_bin, (np_ref.sigmoid(logits[..., :1]) - binary) / n)


def test_bce_gradients_with_respect_to_targets_mask_and_pos_weight(rng):
  """The closed-form derivative of the BCE covers its other inputs too (soft targets for
  distillation, a learned pos_weight, mask weights): each against its analytic form."""
  logits, targets = case(rng, (5, 4), 3, kind="multi")
  mask = rng.random((2, 5, 4)).astype(np.float32)
  pw = 1.7
  x64, t64, m64 = (a.astype(np.float64) for a in (logits, targets, mask))
  nls, nlc = -np.log(np_ref.sigmoid(x64)), -np.log1p(-np_ref.sigmoid(x64))
  per = pw * t64 * nls + (1 - t64) * nlc  # (2, 5, 4, 3)
  norm = 3 * m64.sum()

  def loss(x, t, m, p):
    return losses.binary_cross_entropy(x, t, mask=m, pos_weight=p, mode="multilabel")

  gx, gt, gm, gp = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(logits, targets, mask, pw)
  s = np_ref.sigmoid(x64)
  close(gx, m64[..., None] * ((1 - t64) * s - pw * t64 * (1 - s)) / norm)
  close(gt, m64[..., None] * (pw * nls - nlc) / norm)
  # d/dm_i of sum(m per) / (3 sum m) = (per_i - mean) / (3 sum m), per_i summed over channels.
  mean = (m64[..., None] * per).sum() / norm
  close(gm, (per.sum(-1) - 3 * mean) / norm)
  close(gp, (m64[..., None] * t64 * nls).sum() / norm)


@pytest.mark.parametrize(
  "name,kind,c,opts",
  [
    ("ce", "int", 3, {}),
    ("ce", "soft", 3, {}),
    ("ce", "int", 3, dict(class_weights=[1.0, 2.0, 0.5], label_smoothing=0.1)),
    ("bce", "int", 1, {}),
    ("bce", "multi", 3, dict(pos_weight=3.0, label_smoothing=0.1)),
  ],
  ids=["ce-int", "ce-soft", "ce-options", "bce-binary", "bce-multilabel"],
)
def test_finite_and_exact_at_extreme_logits(rng, name, kind, c, opts):
  logits, labels = case(rng, (5, 4), c, kind=kind)
  logits = np.where(logits >= 0, 1e4, -1e4).astype(np.float32)
  if name == "ce":
    fn, expected = losses.cross_entropy, ref_ce(logits, labels, **opts)
  else:
    fn = losses.binary_cross_entropy
    expected = ref_bce(logits, labels, mode="binary" if c == 1 else "multilabel", **opts)
  value, grad = value_and_grad(fn, logits, labels, **opts)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  close(value, expected, rtol=1e-6)


def test_perfect_prediction_reaches_minimum(rng):
  _, labels = case(rng, (5, 4), 3, kind="int")
  perfect = (np_ref.one_hot(labels, 3) * 40.0 - 20.0).astype(np.float32)
  assert float(run(losses.cross_entropy, perfect, labels)["mean"]) < 1e-7
  assert float(run(losses.binary_cross_entropy, perfect, labels)["mean"]) < 1e-7
  binary = (labels == 1).astype(np.float32)[..., None]
  assert float(run(losses.binary_cross_entropy, perfect[..., 1:2], binary)["mean"]) < 1e-7
  # With soft targets the minimum is the targets' entropy, reached at logits = log targets.
  soft = np_ref.softmax(rng.standard_normal((2, 5, 4, 3)))
  entropy = -(soft * np.log(soft)).sum(-1).mean()
  log_soft = np.log(soft).astype(np.float32)
  close(run(losses.cross_entropy, log_soft, soft.astype(np.float32))["mean"], entropy)


def test_all_ignored_batch_and_one_pixel_images(rng):
  logits, labels = case(rng, (1, 1), 3, kind="int")
  mask = np.zeros((2, 1, 1), np.float32)
  for fn in (losses.cross_entropy, losses.binary_cross_entropy):
    assert all(
      np.all(np.asarray(v) == 0.0)
      for v in run(fn, logits, labels, mask=mask, reductions=ALL).values()
    )
    value, grad = value_and_grad(fn, logits, labels, mask=mask)
    assert value == 0.0 and np.all(np.asarray(grad) == 0.0)
  check(run(losses.cross_entropy, logits, labels), lambda r: ref_ce(logits, labels, reduction=r))
  # Ignoring the one pixel of the first image leaves the second one.
  opts = dict(ignore_index=int(labels[0, 0, 0]), class_weights=[1.0, 2.0, 3.0])
  labels[1, 0, 0] = (labels[0, 0, 0] + 1) % 3
  check(
    run(losses.cross_entropy, logits, labels, reductions=ALL, **opts),
    lambda r: ref_ce(logits, labels, reduction=r, **opts),
  )


def test_batch_order_invariance(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int", batch=4)
  perm = np.array([2, 0, 3, 1])
  for fn in (losses.cross_entropy, losses.binary_cross_entropy):
    got, permuted = (
      run(fn, logits, labels, reductions=("mean", "none")),
      run(fn, logits[perm], labels[perm], reductions=("mean", "none")),
    )
    close(permuted["mean"], float(got["mean"]), rtol=1e-6)
    close(permuted["none"], np.asarray(got["none"])[perm], rtol=1e-6)


def test_traced_options(rng):
  # Options passed as traced values (e.g. swept under jit) give the same as static ones.
  logits, labels = case(rng, (5, 4), 3, kind="int")

  @jax.jit
  def both(x, ls, v, pw):
    ce = losses.cross_entropy(x, labels, label_smoothing=ls, class_weights=v)
    bce = losses.binary_cross_entropy(x, labels, label_smoothing=ls, pos_weight=pw)
    return ce, bce

  v, pw = np.array([0.5, 1.0, 2.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32)
  for ls in (0.0, 0.2):
    ce, bce = both(logits, ls, v, pw)
    close(ce, ref_ce(logits, labels, label_smoothing=ls, class_weights=v))
    close(bce, ref_bce(logits, labels, mode="multiclass", label_smoothing=ls, pos_weight=pw))


def test_low_precision_inputs_give_float32(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  low = jnp.asarray(logits, jnp.bfloat16)
  as_f32 = np.asarray(low.astype(jnp.float32))
  for fn, ref in [
    (losses.cross_entropy, ref_ce),
    (losses.binary_cross_entropy, functools.partial(ref_bce, mode="multiclass")),
  ]:
    out = run(fn, low, labels)
    assert all(v.dtype == jnp.float32 for v in out.values())
    check(out, lambda r, ref=ref: ref(as_f32, labels, reduction=r))


def test_axis_name_under_shard_map_equals_global_batch(rng):
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  logits, labels = case(rng, (3, 4), 3, kind="int", batch=4)
  mask = (rng.random((4, 3, 4)) > 0.3).astype(np.float32)
  mask[1] = 0.0
  v = [1.0, 2.0, 0.5]

  def both(x, y, m):
    ce = losses.cross_entropy(x, y, mask=m, class_weights=v, axis_name="data")
    bce = losses.binary_cross_entropy(x, y, mask=m, axis_name="data")
    return jnp.stack([ce, bce])

  sharded = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P()))
  got = sharded(logits, labels, mask)
  close(got[0], ref_ce(logits, labels, mask=mask, class_weights=v))
  close(got[1], ref_bce(logits, labels, mask=mask, mode="multiclass"))


# ------------------------------------------------------------------------------------------------
# optax, where the definitions coincide
# ------------------------------------------------------------------------------------------------


def test_matches_optax(rng):
  optax = pytest.importorskip("optax")
  logits, labels = case(rng, (3, 4, 2), 3, kind="int")
  close(
    run(losses.cross_entropy, logits, labels)["mean"],
    jax.jit(optax.losses.softmax_cross_entropy_with_integer_labels)(logits, labels).mean(),
    rtol=1e-5,
  )
  _, soft = case(rng, (3, 4, 2), 3, kind="soft")
  smoothed = soft * 0.8 + 0.2 / 3  # optax.smooth_labels(soft, 0.2)
  close(
    run(losses.cross_entropy, logits, soft, label_smoothing=0.2)["mean"],
    jax.jit(optax.losses.softmax_cross_entropy)(logits, smoothed).mean(),
    rtol=1e-5,
  )
  _, multi = case(rng, (3, 4, 2), 3, kind="multi")
  close(
    run(losses.binary_cross_entropy, logits, multi)["mean"],
    jax.jit(optax.losses.sigmoid_binary_cross_entropy)(logits, multi).mean(),
    rtol=1e-5,
  )


# ------------------------------------------------------------------------------------------------
# registry and option errors
# ------------------------------------------------------------------------------------------------


def test_registry_names_and_get(rng):
  assert losses.lookup("cross_entropy") is losses.cross_entropy
  assert losses.lookup("binary_cross_entropy") is losses.binary_cross_entropy
  logits, labels = case(rng, (5,), 3, kind="int")
  fn = jax.jit(losses.get("cross_entropy", label_smoothing=0.1))
  close(fn(logits, labels), ref_ce(logits, labels, label_smoothing=0.1))


@pytest.mark.parametrize(
  "fn,kwargs,match",
  [
    (losses.cross_entropy, dict(reduction="avg"), "reduction='avg'"),
    (losses.binary_cross_entropy, dict(reduction="batchmean"), "reduction"),
    (losses.cross_entropy, dict(label_smoothing=1.5), "label_smoothing"),
    (losses.cross_entropy, dict(label_smoothing=-0.1), "label_smoothing"),
    (losses.binary_cross_entropy, dict(label_smoothing=[0.1, 0.2]), "label_smoothing"),
    (losses.cross_entropy, dict(class_weights=[1.0, 2.0]), r"class_weights must have shape \(3,\)"),
    (losses.cross_entropy, dict(class_weights=[1.0, -2.0, 1.0]), "class_weights"),
    (losses.binary_cross_entropy, dict(pos_weight=[1.0, 2.0]), r"pos_weight .*\(3,\)"),
    (losses.binary_cross_entropy, dict(pos_weight=-1.0), "pos_weight"),
    (losses.cross_entropy, dict(mode="softmax"), "mode='softmax'"),
    (losses.binary_cross_entropy, dict(mode="binary"), "mode='binary' needs logits with 1 channel"),
  ],
)
def test_bad_options_raise_naming_them(rng, fn, kwargs, match):
  logits, labels = case(rng, (4,), 3, kind="int")
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda x, y: fn(x, y, **kwargs), logits, labels)


def test_bad_inputs_raise(rng):
  logits, labels = case(rng, (4,), 3, kind="int")
  with pytest.raises(ValueError, match="labels must be"):
    losses.cross_entropy(logits, labels[:, :3])
  with pytest.raises(TypeError, match="must be integers"):
    losses.cross_entropy(logits, labels.astype(np.float32))
  with pytest.raises(ValueError, match="mask must have shape"):
    losses.binary_cross_entropy(logits, labels, mask=np.ones((2, 4, 1)))
  with pytest.raises(ValueError, match="multilabel' needs dense labels"):
    losses.binary_cross_entropy(logits, labels, mode="multilabel")
