"""Tests of seg_jax.losses.compound: combine, the dice_ce / dice_focal presets, deep_supervision.

References are float64 NumPy code written here from the formulas (cross-entropy, softmax and
sigmoid focal, dice, jaccard) on top of tests/np_ref.py; the label downsampling of deep
supervision is re-done with explicit index arithmetic. One test (option routing of
``class_weights``) compares with the sum of our component losses instead of a reference; those
components are tested against their own references in their modules' tests.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import losses
from seg_jax.losses import compound

RTOL = 2e-5
ATOL = 1e-6


# ---------------------------------------------------------------- float64 references
def _axes(ndim, per_image):
  spatial = tuple(range(1, ndim - 1))
  return spatial if per_image else (0, *spatial)


def ref_ce(logits, labels, w):
  """Multiclass CE, weighted mean over kept pixels (integer or dense labels)."""
  lsm = np_ref.log_softmax(logits)
  y = labels if labels.ndim == logits.ndim else np_ref.one_hot(labels, logits.shape[-1])
  per = -(y * lsm).sum(-1)
  return (w * per).sum() / w.sum()


def ref_ce_per_image(logits, labels, w):
  lsm = np_ref.log_softmax(logits)
  y = np_ref.one_hot(labels, logits.shape[-1])
  per = -(y * lsm).sum(-1)
  ax = tuple(range(1, per.ndim))
  return (w * per).sum(ax) / w.sum(ax)


def ref_focal(logits, labels, w, gamma=2.0, alpha=None):
  """Softmax focal (multiclass, integer labels) or sigmoid focal (one channel)."""
  if logits.shape[-1] == 1:
    x, y = logits[..., 0], labels.astype(np.float64)
    p = np_ref.sigmoid(x)
    lp, l1p = np_ref.log_sigmoid(x), np_ref.log_sigmoid(-x)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    per = -(a_pos * y * (1 - p) ** gamma * lp + a_neg * (1 - y) * p**gamma * l1p)
  else:
    lsm = np_ref.log_softmax(logits)
    y = np_ref.one_hot(labels, logits.shape[-1])
    lpt = (y * lsm).sum(-1)
    per = -((1 - np.exp(lpt)) ** gamma) * lpt
  return (w * per).sum() / w.sum()


def _region_stats(logits, labels, w, per_image):
  c = logits.shape[-1]
  if c == 1:
    p = np_ref.sigmoid(logits)
    g = labels[..., None].astype(np.float64)
  else:
    p = np_ref.softmax(logits)
    g = labels if labels.ndim == logits.ndim else np_ref.one_hot(labels, c)
  ax = _axes(logits.ndim, per_image)
  ww = w[..., None]
  return (ww * p * g).sum(ax), (ww * p).sum(ax), (ww * g).sum(ax)


def _class_mean(score, c, include_background):
  if c > 1 and not include_background:
    score = score[..., 1:]
  return score.mean(-1)


def ref_dice(logits, labels, w, *, per_image=False, smooth=1e-5, include_background=True):
  i, p, g = _region_stats(logits, labels, w, per_image)
  loss = 1.0 - _class_mean(
    (2 * i + smooth) / (p + g + smooth), logits.shape[-1], include_background
  )
  return loss.mean() if per_image else loss


def ref_jaccard(logits, labels, w, *, smooth=1e-5):
  i, p, g = _region_stats(logits, labels, w, False)
  return 1.0 - ((i + smooth) / (p + g - i + smooth)).mean()


def _case(rng, spatial, c, batch=2, mask=True):
  logits, labels = np_ref.random_case(rng, spatial, c, batch=batch)
  if c == 1:
    labels = (labels > 0).astype(np.int32)
  m = (rng.random(labels.shape) > 0.3).astype(np.float32) if mask else None
  return logits, labels, m


def jit(fn, **static):
  """``fn`` with ``static`` options bound, jitted: one compile per call, far cheaper than eager
  op-by-op execution at a new shape."""
  return jax.jit(functools.partial(fn, **static))


def _w(labels, m):
  return np.ones(labels.shape) if m is None else m.astype(np.float64)


# ---------------------------------------------------------------- combine
# Most tests use batch 2, spatial (5, 4), 3 classes; other dims are covered where noted.


def test_combine_weighted_sum_matches_reference(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  fn = losses.combine({"dice": 0.3, "cross_entropy": 0.7})
  got = jit(fn)(logits, labels, mask=m)
  w = _w(labels, m)
  want = 0.3 * ref_dice(logits, labels, w) + 0.7 * ref_ce(logits, labels, w)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  assert got.dtype == jnp.float32 and got.shape == ()


def test_combine_shared_options_go_to_the_components_that_take_them(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  fn = losses.combine({"dice": 1.0, "focal": 2.0}, smooth=0.5, gamma=3.0, include_background=False)
  w = _w(labels, m)
  want = ref_dice(logits, labels, w, smooth=0.5, include_background=False) + 2.0 * ref_focal(
    logits, labels, w, gamma=3.0
  )
  np.testing.assert_allclose(jit(fn)(logits, labels, mask=m), want, rtol=RTOL, atol=ATOL)
  assert fn.components["focal"] == (2.0, {"gamma": 3.0})
  assert fn.components["dice"] == (1.0, {"smooth": 0.5, "include_background": False})


def test_combine_per_component_options_override_shared(rng):
  logits, labels, _ = _case(rng, (5, 4), 3, mask=False)
  fn = losses.combine(
    {"dice": 1.0, "jaccard": 1.0}, smooth=1.0, options={"jaccard": {"smooth": 0.0}}
  )
  w = _w(labels, None)
  want = ref_dice(logits, labels, w, smooth=1.0) + ref_jaccard(logits, labels, w, smooth=0.0)
  np.testing.assert_allclose(jit(fn)(logits, labels), want, rtol=RTOL, atol=ATOL)


def test_combine_per_call_options_are_routed_and_override(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  fn = losses.combine({"dice": 1.0, "focal": 1.0}, gamma=1.0)
  w = _w(labels, m)
  want = ref_dice(logits, labels, w, smooth=2.0) + ref_focal(logits, labels, w, gamma=4.0)
  got = jit(fn, gamma=4.0, smooth=2.0)(logits, labels, mask=m)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  with pytest.raises(TypeError, match=r"'gama'.*dice: .*smooth.*focal: .*gamma"):
    fn(logits, labels, gama=2.0)


def test_combine_reduction_none_per_image(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  fn = losses.combine({"dice": 0.5, "cross_entropy": 1.0}, reduction="none", per_image=True)
  got = jit(fn)(logits, labels, mask=m)
  w = _w(labels, m)
  i, p, g = _region_stats(logits, labels, w, True)
  dice_per_image = 1.0 - ((2 * i + 1e-5) / (p + g + 1e-5)).mean(-1)
  want = 0.5 * dice_per_image + ref_ce_per_image(logits, labels, w)
  assert got.shape == (2,)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_combine_zero_weight_is_not_computed(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  # dice with reduction='none' and pooled statistics raises; weight 0 means it is never called.
  fn = losses.combine({"dice": 0.0, "cross_entropy": 1.0}, reduction="none")
  want = ref_ce_per_image(logits, labels, _w(labels, m))
  np.testing.assert_allclose(jit(fn)(logits, labels, mask=m), want, rtol=RTOL)
  with pytest.raises(ValueError, match="per_image"):
    losses.combine({"dice": 1.0, "cross_entropy": 1.0}, reduction="none")(logits, labels)


def test_combine_traced_weight_under_jit(rng):
  logits, labels, m = _case(rng, (5, 4), 3)

  @jax.jit
  def f(weight, x, y, mask):
    return losses.combine({"dice": weight, "cross_entropy": 1.0})(x, y, mask=mask)

  w = _w(labels, m)
  for weight in (0.0, 0.25):
    want = weight * ref_dice(logits, labels, w) + ref_ce(logits, labels, w)
    np.testing.assert_allclose(f(weight, logits, labels, m), want, rtol=RTOL, atol=ATOL)


def test_combine_errors():
  with pytest.raises(
    KeyError, match=r"'dise'.*Did you mean 'dice'.*Registered losses: .*cross_entropy"
  ):
    losses.combine({"dise": 1.0})
  with pytest.raises(TypeError, match=r"no component takes option\(s\) 'gamma'.*dice: .*smooth"):
    losses.combine({"dice": 1.0, "cross_entropy": 1.0}, gamma=2.0)
  with pytest.raises(
    TypeError, match=r"'focal' has no option\(s\) 'smooth'; its options are: .*gamma"
  ):
    losses.combine({"dice": 1.0, "focal": 1.0}, options={"focal": {"smooth": 1.0}})
  with pytest.raises(ValueError, match=r"options given for 'jaccard'.*components: dice, focal"):
    losses.combine({"dice": 1.0, "focal": 1.0}, options={"jaccard": {"smooth": 1.0}})
  with pytest.raises(ValueError, match="weights is empty"):
    losses.combine({})
  with pytest.raises(TypeError, match="must be a mapping"):
    losses.combine(["dice", "focal"])
  with pytest.raises(ValueError, match=r"weight of 'dice' must be a finite number >= 0, got -1.0"):
    losses.combine({"dice": -1.0})
  with pytest.raises(ValueError, match=r"weight of 'dice' must be a finite number >= 0, got nan"):
    losses.combine({"dice": float("nan")})
  with pytest.raises(TypeError, match=r"weight of 'dice' must be a number, got '1'"):
    losses.combine({"dice": "1"})
  with pytest.raises(ValueError, match="every weight is 0"):
    losses.combine({"dice": 0.0, "focal": 0})


# ---------------------------------------------------------------- presets
def _component_options(fn):
  return {
    p.name: p.default
    for p in inspect.signature(fn).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


@pytest.mark.parametrize(
  "name, components, weights",
  [
    ("dice_ce", ("dice", "cross_entropy"), ("dice_weight", "ce_weight")),
    ("dice_focal", ("dice", "focal"), ("dice_weight", "focal_weight")),
    ("dice_topk", ("dice", "topk_cross_entropy"), ("dice_weight", "topk_weight")),
  ],
)
def test_preset_options_are_the_union_of_its_components(name, components, weights):
  preset = _component_options(losses.lookup(name))
  union = {}
  for comp in components:
    for opt, default in _component_options(losses.lookup(comp)).items():
      if opt in union:  # Shared options must have one default.
        assert union[opt] == default, (opt, comp)
      union[opt] = default
  assert set(preset) == set(union) | set(weights)
  for opt, default in union.items():
    assert preset[opt] == default, opt
  assert all(preset[w] == 1.0 for w in weights)
  assert losses.options(name) == list(preset)


@pytest.mark.parametrize("spatial", [(7,), (5, 4), (3, 4, 3)])
def test_dice_ce_matches_reference(rng, spatial):
  # 1D, 2D and 3D (the other tests stay in 2D).
  logits, labels, m = _case(rng, spatial, 3)
  w = _w(labels, m)
  want = ref_dice(logits, labels, w) + ref_ce(logits, labels, w)
  np.testing.assert_allclose(jit(losses.dice_ce_loss)(logits, labels, mask=m), want, rtol=RTOL)


def test_dice_ce_options_match_reference(rng):
  logits, labels, m = _case(rng, (5, 4), 4, batch=3)
  fn = losses.get(
    "dice_ce", dice_weight=2.0, ce_weight=0.5, include_background=False, per_image=True, smooth=1.0
  )
  w = _w(labels, m)
  want = 2.0 * ref_dice(
    logits, labels, w, per_image=True, smooth=1.0, include_background=False
  ) + 0.5 * ref_ce(logits, labels, w)
  np.testing.assert_allclose(jit(fn)(logits, labels, mask=m), want, rtol=RTOL)


def test_dice_ce_dense_labels_and_ignore_index(rng):
  logits, labels, _ = _case(rng, (5, 4), 3, mask=False)
  labels = labels.copy()
  labels[0, :2] = 255
  w = np_ref.pixel_weights(labels, 3, ignore_index=255)
  safe = np.where(w > 0, labels, 0)
  want = ref_dice(logits, safe, w) + ref_ce(logits, safe, w)
  got = jit(losses.dice_ce_loss, ignore_index=255)(logits, labels)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  soft = rng.dirichlet(np.ones(3), size=labels.shape)
  want = ref_dice(logits, soft, np.ones(labels.shape)) + ref_ce(logits, soft, np.ones(labels.shape))
  got = jit(losses.dice_ce_loss)(logits, soft.astype(np.float32))
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_dice_ce_class_weights_reach_both_components(rng):
  # Compared with the sum of our components (each tested against its own reference): this test
  # checks the routing of an option both components take, not the formulas.
  logits, labels, m = _case(rng, (5, 4), 3)
  cw = np.array([0.2, 1.0, 3.0], np.float32)

  @jax.jit
  def f(x, y, m, cw):
    return (
      losses.dice_ce_loss(x, y, mask=m, class_weights=cw),
      losses.dice_loss(x, y, mask=m, class_weights=cw),
      losses.cross_entropy(x, y, mask=m, class_weights=cw),
      losses.dice_ce_loss(x, y, mask=m),
    )

  got, dice, ce, unweighted = f(logits, labels, m, cw)
  np.testing.assert_allclose(got, dice + ce, rtol=1e-6)
  assert not np.isclose(got, unweighted)


@pytest.mark.parametrize("channels", [1, 3])
def test_dice_focal_matches_reference(rng, channels):
  logits, labels, m = _case(rng, (5, 4), channels)
  w = _w(labels, m)
  alpha = 0.25 if channels == 1 else None
  fn = losses.get("dice_focal", gamma=3.0, alpha=alpha, focal_weight=0.5, smooth=0.1)
  want = ref_dice(logits, labels, w, smooth=0.1) + 0.5 * ref_focal(
    logits, labels, w, gamma=3.0, alpha=alpha
  )
  np.testing.assert_allclose(jit(fn)(logits, labels, mask=m), want, rtol=RTOL, atol=ATOL)


def test_presets_weights_and_errors(rng):
  logits, labels, _ = _case(rng, (5, 4), 3, mask=False)
  w = _w(labels, None)
  np.testing.assert_allclose(
    jit(losses.dice_ce_loss, dice_weight=0.0)(logits, labels), ref_ce(logits, labels, w), rtol=RTOL
  )
  with pytest.raises(ValueError, match="every weight is 0"):
    losses.dice_ce_loss(logits, labels, dice_weight=0.0, ce_weight=0.0)
  with pytest.raises(ValueError, match=r"ce_weight must be a finite number >= 0, got -2.0"):
    losses.dice_ce_loss(logits, labels, ce_weight=-2.0)
  with pytest.raises(TypeError, match=r"'dice_ce' has no option\(s\) 'gamma'; its options are: "):
    losses.get("dice_ce", gamma=2.0)
  assert "dice_ce" in losses.names() and "dice_focal" in losses.names()
  assert "combine" not in losses.names() and "deep_supervision" not in losses.names()


def test_presets_jit_and_grad(rng):
  logits, labels, m = _case(rng, (5, 4), 3)
  fn = jax.jit(jax.value_and_grad(losses.dice_focal_loss))
  value, grad = fn(jnp.asarray(logits), labels, mask=m)
  w = _w(labels, m)

  def ref(x):
    return ref_dice(x, labels, w) + ref_focal(x, labels, w)

  np.testing.assert_allclose(value, ref(logits), rtol=RTOL)
  # Directional derivative by central differences of the float64 reference.
  v = rng.standard_normal(logits.shape)
  eps = 1e-4
  fd = (ref(logits + eps * v) - ref(logits - eps * v)) / (2 * eps)
  np.testing.assert_allclose(np.sum(np.asarray(grad, np.float64) * v), fd, rtol=1e-3)


# ---------------------------------------------------------------- deep supervision
def _ref_sample(labels, shape):
  """Strided nearest sampling written with explicit index arrays."""
  full = labels.shape[1 : 1 + len(shape)]
  idx = [np.arange(s) * (n // s) for n, s in zip(full, shape, strict=True)]
  return labels[(slice(None), *np.ix_(*idx))]


def _ref_pool(x, shape):
  """Block mean of (batch, *spatial[, C]) by looping over block offsets."""
  full = x.shape[1 : 1 + len(shape)]
  f = [n // s for n, s in zip(full, shape, strict=True)]
  out = 0.0
  for offset in np.ndindex(*f):
    out = out + x[(slice(None), *(slice(o, None, k) for o, k in zip(offset, f, strict=True)))]
  return out / np.prod(f)


@pytest.mark.parametrize("spatial", [(8,), (8, 4), (4, 4, 4)])
def test_deep_supervision_integer_labels_default_weights(rng, spatial):
  c = 3
  labels = rng.integers(0, c, size=(2, *spatial)).astype(np.int32)
  shapes = [spatial, tuple(s // 2 for s in spatial), tuple(s // 4 for s in spatial)]
  outputs = [rng.standard_normal((2, *s, c)).astype(np.float32) for s in shapes]
  mask = (rng.random(labels.shape) > 0.2).astype(np.float32)
  ds = losses.deep_supervision(losses.get("cross_entropy"))
  got = jax.jit(ds)(outputs, labels, mask=mask)
  # nnU-Net v2: 2^-i = (1, 1/2, 1/4), the coarsest set to 0, normalised: (2/3, 1/3, 0).
  weights = np.array([2, 1, 0]) / 3
  want = sum(
    wi * ref_ce(o, _ref_sample(labels, s), _ref_sample(mask, s).astype(np.float64))
    for wi, o, s in zip(weights, outputs, shapes, strict=True)
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_deep_supervision_default_weights_are_nnunets():
  # By hand: 2^-i for i = 0..n-1, the last set to 0, divided by the sum.
  assert compound.nnunet_weights(1) == (1.0,)
  assert compound.nnunet_weights(2) == (1.0, 0.0)
  np.testing.assert_allclose(compound.nnunet_weights(3), [2 / 3, 1 / 3, 0.0], rtol=1e-15)
  np.testing.assert_allclose(
    compound.nnunet_weights(5), [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0], rtol=1e-15
  )
  with pytest.raises(ValueError, match="num_outputs must be an int >= 1"):
    compound.nnunet_weights(0)
  # The coarsest output does not count: a NaN there does not reach the default-weighted loss.
  labels = np.zeros((1, 4, 4), np.int32)
  outputs = [np.zeros((1, 4, 4, 2), np.float32), np.full((1, 2, 2, 2), np.nan, np.float32)]
  value = losses.deep_supervision(losses.get("cross_entropy"))(outputs, labels)
  np.testing.assert_allclose(value, np.log(2.0), rtol=1e-6)


def test_deep_supervision_explicit_weights_and_ignore_index(rng):
  c = 3
  labels = rng.integers(0, c, size=(2, 8, 4)).astype(np.int32)
  labels[:, ::3] = 255
  shapes = [(8, 4), (4, 2), (2, 1)]
  outputs = [rng.standard_normal((2, *s, c)).astype(np.float32) for s in shapes]
  ds = losses.deep_supervision(losses.get("dice_ce", ignore_index=255), weights=[1.0, 0.5, 0.0])
  got = jax.jit(ds)(outputs, labels)
  want = 0.0
  for wi, o, s in zip([1.0, 0.5], outputs, shapes, strict=False):
    y = _ref_sample(labels, s)
    w = np_ref.pixel_weights(y, c, ignore_index=255)
    y = np.where(w > 0, y, 0)
    want += wi * (ref_dice(o, y, w) + ref_ce(o, y, w))
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_deep_supervision_dense_labels_average_pooling(rng):
  c = 3
  onehot = np_ref.one_hot(rng.integers(0, c, size=(2, 8, 4)), c)
  mask = (rng.random((2, 8, 4)) > 0.3).astype(np.float64)
  mask[0, :2, :2] = 0  # One fully ignored 2x2 block.
  shapes = [(8, 4), (4, 2)]
  outputs = [rng.standard_normal((2, *s, c)).astype(np.float32) for s in shapes]
  ds = jax.jit(losses.deep_supervision(losses.get("dice"), weights=[0.5, 1.0]))
  got = ds(outputs, onehot.astype(np.float32), mask=mask.astype(np.float32))
  kept = _ref_pool(mask, (4, 2))
  soft = _ref_pool(onehot * mask[..., None], (4, 2)) / np.maximum(kept, 1e-12)[..., None]
  want = 0.5 * ref_dice(outputs[0], onehot, mask) + ref_dice(outputs[1], soft, kept)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  # Without a mask: plain block means, soft targets summing to 1.
  got = ds(outputs, onehot.astype(np.float32))
  ones = np.ones((2, 8, 4))
  want = 0.5 * ref_dice(outputs[0], onehot, ones) + ref_dice(
    outputs[1], _ref_pool(onehot, (4, 2)), np.ones((2, 4, 2))
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_deep_supervision_per_output_labels(rng):
  c = 3
  shapes = [(8, 4), (4, 2)]
  outputs = [rng.standard_normal((2, *s, c)).astype(np.float32) for s in shapes]
  labels = [rng.integers(0, c, size=(2, *s)).astype(np.int32) for s in shapes]
  masks = [(rng.random((2, *s)) > 0.3).astype(np.float32) for s in shapes]
  ds = losses.deep_supervision(losses.cross_entropy, weights=[1.0, 2.0])
  want = sum(
    wi * ref_ce(o, y, m.astype(np.float64))
    for wi, o, y, m in zip([1.0, 2.0], outputs, labels, masks, strict=True)
  )
  np.testing.assert_allclose(jax.jit(ds)(outputs, labels, mask=masks), want, rtol=RTOL)


def test_deep_supervision_reduction_none_and_jit_grad(rng):
  c = 3
  labels = rng.integers(0, c, size=(2, 8, 4)).astype(np.int32)
  outputs = [rng.standard_normal((2, 8, 4, c)), rng.standard_normal((2, 4, 2, c))]
  outputs = [jnp.asarray(o, jnp.float32) for o in outputs]
  ds = losses.deep_supervision(losses.get("cross_entropy", reduction="none"), weights=[0.75, 0.25])
  value, grads = jax.jit(jax.value_and_grad(lambda o: ds(o, labels).sum()))(outputs)
  got = jax.jit(ds)(outputs, labels)
  ones = [np.ones((2, 8, 4)), np.ones((2, 4, 2))]
  want = 0.75 * ref_ce_per_image(outputs[0], labels, ones[0]) + 0.25 * ref_ce_per_image(
    outputs[1], _ref_sample(labels, (4, 2)), ones[1]
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(value, want.sum(), rtol=RTOL)
  assert [g.shape for g in grads] == [o.shape for o in outputs]
  assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads)


def test_deep_supervision_under_shard_map_equals_single_device(rng):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  n = len(jax.devices())
  c = 3
  labels = rng.integers(0, c, size=(n, 8, 4)).astype(np.int32)
  outputs = [
    rng.standard_normal((n, 8, 4, c)).astype(np.float32),
    rng.standard_normal((n, 4, 2, c)).astype(np.float32),
  ]
  ds = losses.deep_supervision(losses.get("dice"), weights=[0.75, 0.25])
  sharded = jax.jit(
    jax.shard_map(
      lambda o, y: ds(o, y, axis_name="data"),
      mesh=mesh,
      in_specs=([P("data"), P("data")], P("data")),
      out_specs=P(),
    )
  )
  np.testing.assert_allclose(sharded(outputs, labels), jax.jit(ds)(outputs, labels), rtol=1e-5)


def test_deep_supervision_errors(rng):
  c = 3
  labels = np.zeros((2, 16, 12), np.int32)
  ok = [np.zeros((2, 16, 12, c), np.float32), np.zeros((2, 8, 6, c), np.float32)]
  ds = losses.deep_supervision(losses.cross_entropy)
  with pytest.raises(
    ValueError,
    match=r"outputs\[1\] has spatial shape \(5, 6\), which does not divide the labels' "
    r"spatial shape \(16, 12\)",
  ):
    ds([ok[0], np.zeros((2, 5, 6, c), np.float32)], labels)
  with pytest.raises(ValueError, match=r"outputs\[1\] has spatial shape \(32, 12\)"):
    ds([ok[0], np.zeros((2, 32, 12, c), np.float32)], labels)
  with pytest.raises(ValueError, match=r"3 weights for 2 outputs"):
    losses.deep_supervision(losses.cross_entropy, weights=[1.0, 0.5, 0.25])(ok, labels)
  with pytest.raises(ValueError, match=r"weights\[1\] must be a finite number >= 0, got -0.5"):
    losses.deep_supervision(losses.cross_entropy, weights=[1.0, -0.5])
  with pytest.raises(ValueError, match="every weight is 0"):
    losses.deep_supervision(losses.cross_entropy, weights=[0.0, 0.0])
  with pytest.raises(ValueError, match="outputs is empty"):
    ds([], labels)
  with pytest.raises(TypeError, match="outputs must be a sequence"):
    ds(ok[0], labels)
  with pytest.raises(
    ValueError,
    match=r"outputs\[1\] has shape \(2, 8, 6, 4\) but outputs\[0\] has shape \(2, 16, 12, 3\)",
  ):
    ds([ok[0], np.zeros((2, 8, 6, 4), np.float32)], labels)
  with pytest.raises(
    ValueError, match=r"labels of shape \(3, 16, 12\) for outputs\[0\] of shape \(2, 16, 12, 3\)"
  ):
    ds(ok, np.zeros((3, 16, 12), np.int32))
  with pytest.raises(
    ValueError,
    match=r"mask must have the labels' \(batch, \*spatial\) shape \(2, 16, 12\), got mask of "
    r"shape \(2, 16\)",
  ):
    ds(ok, labels, mask=np.ones((2, 16), np.float32))
  with pytest.raises(ValueError, match="1 label maps for 2 outputs"):
    ds(ok, [labels])
  with pytest.raises(TypeError, match="loss_fn must be callable"):
    losses.deep_supervision("dice")


def test_combine_refuses_a_shared_option_with_different_meanings(rng):
  # alpha: focal's positive-class weight, Tversky's false-positive weight.
  with pytest.raises(TypeError, match="'alpha' means different things in components 'focal'"):
    losses.combine({"focal": 1.0, "tversky": 1.0}, alpha=0.25)
  with pytest.raises(TypeError, match="'gamma' means different things"):
    losses.combine({"focal": 1.0, "focal_tversky": 1.0}, gamma=2.0)
  loss = losses.combine({"focal": 1.0, "tversky": 1.0})
  x = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
  y = (rng.random((2, 4, 4)) > 0.5).astype(np.int32)
  with pytest.raises(TypeError, match="'alpha' means different things"):
    loss(x, y, alpha=0.3)  # Per call too.
  # Per component it is fine, and the same meaning in two components is fine.
  split = losses.combine(
    {"focal": 1.0, "tversky": 1.0},
    options={"focal": {"alpha": 0.25}, "tversky": {"alpha": 0.7, "beta": 0.3}},
  )
  want = losses.focal_loss(x, y, alpha=0.25) + losses.tversky_loss(x, y, alpha=0.7, beta=0.3)
  np.testing.assert_allclose(split(x, y), want, rtol=1e-6)
  same = losses.combine({"tversky": 1.0, "focal_tversky": 1.0}, alpha=0.7, beta=0.3)
  want = losses.tversky_loss(x, y, alpha=0.7, beta=0.3) + losses.focal_tversky_loss(
    x, y, alpha=0.7, beta=0.3
  )
  np.testing.assert_allclose(same(x, y), want, rtol=1e-6)


# ---------------------------------------------------------------- dice + distance presets
@pytest.mark.parametrize("name", ["dice_boundary", "dice_hausdorff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_dice_distance_presets_match_reference(rng, name, channels):
  from test_boundary import ref_loss  # The float64 scipy-based reference of those losses.

  kind = "boundary" if name == "dice_boundary" else "hausdorff_dt"
  weight_name = "boundary_weight" if name == "dice_boundary" else "hausdorff_weight"
  logits, labels, m = _case(rng, (6, 7), channels)
  w = _w(labels, m)
  opts = {weight_name: 0.3, "smooth": 0.1, "include_background": False}
  if kind == "hausdorff_dt":
    opts["alpha"] = 1.5
  got = jit(losses.get(name, **opts))(logits, labels, mask=m)
  # Dice takes include_background (and smooth); the distance term always leaves the background
  # out, as its paper and its default do.
  want = ref_dice(logits, labels, w, smooth=0.1, include_background=False) + 0.3 * ref_loss(
    kind, logits, labels, mask=m, alpha=opts.get("alpha", 2.0)
  )
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  # Default weights: 1 and 0.01.
  plain = jit(losses.lookup(name))(logits, labels)
  want = ref_dice(logits, labels, _w(labels, None)) + 0.01 * ref_loss(kind, logits, labels)
  np.testing.assert_allclose(plain, want, rtol=RTOL, atol=ATOL)


def test_dice_distance_presets_options_and_errors(rng):
  logits, labels, _ = _case(rng, (6, 7), 1, mask=False)
  assert set(losses.options("dice_boundary")) >= {"distance_maps", "sampling", "per_image"}
  assert "alpha" in losses.options("dice_hausdorff")
  # Precomputed maps reach the boundary term.
  maps = np.asarray(losses.signed_distance_map(labels[..., None].astype(np.float32)))
  np.testing.assert_allclose(
    losses.dice_boundary_loss(logits, labels, distance_maps=maps),
    losses.dice_boundary_loss(logits, labels),
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match="must be a finite number >= 0"):
    losses.dice_boundary_loss(logits, labels, boundary_weight=-1.0)
  with pytest.raises(ValueError, match="every weight is 0"):
    losses.dice_hausdorff_loss(logits, labels, dice_weight=0.0, hausdorff_weight=0.0)


def test_every_loss_with_an_ambiguous_option_has_its_meaning_listed():
  # A loss added later with e.g. an `alpha` must say which meaning it has, or combine would
  # treat it as a meaning of its own (and refuse to share the option with any other loss).
  from seg_jax.losses.compound import _MEANINGS

  for option, groups in _MEANINGS.items():
    listed = set().union(*groups)
    takers = {n for n in losses.names() if option in losses.options(n)}
    assert takers == listed, (option, sorted(takers ^ listed))
  # The same meaning in a loss and its preset: sharing is fine.
  losses.combine({"hausdorff_dt": 1.0, "dice_hausdorff": 1.0}, alpha=1.0)
  with pytest.raises(TypeError, match="'alpha' means different things"):
    losses.combine({"focal": 1.0, "dice_hausdorff": 1.0}, alpha=1.0)
