"""Tests of focal_loss against a float64 NumPy reference written from Lin et al. (2017).

Sigmoid form (binary/multilabel): per element alpha_t (1 - p_t)^gamma BCE(x, y), averaged over
channels; softmax form (multiclass): -sum_c y_c alpha_c (1 - p_c)^gamma log p_c. Calls are jitted
once per options and shapes (cheaper than eager calls at many shapes).
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax import losses

ce_module = importlib.import_module("seg_jax.losses.cross_entropy")

EPS = 1e-7
TOL = dict(rtol=2e-5, atol=1e-6)
ALL = ("mean", "sum", "none")


# ------------------------------------------------------------------------------------------------
# float64 reference
# ------------------------------------------------------------------------------------------------


def ref_focal(
  logits,
  labels,
  *,
  mode,
  gamma=2.0,
  alpha=None,
  from_logits=True,
  mask=None,
  ignore_index=None,
  reduction="mean",
):
  x = np.asarray(logits, np.float64)
  c = x.shape[-1]
  labels = np.asarray(labels)
  if np.issubdtype(labels.dtype, np.integer):
    binary = mode == "binary"
    valid = np_ref.pixel_weights(labels, c, ignore_index=ignore_index, binary=binary) > 0
    w = valid * (1.0 if mask is None else np.asarray(mask, np.float64))
    clamped = np.where(valid, labels, 0)
    y = clamped[..., None].astype(np.float64) if binary else np_ref.one_hot(clamped, c)
  else:
    y = labels.astype(np.float64)
    w = np.ones(labels.shape[:-1]) if mask is None else np.asarray(mask, np.float64)

  if mode == "multiclass":
    logp = np_ref.log_softmax(x) if from_logits else np.log(np.clip(x, EPS, 1 - EPS))
    p = np.exp(logp)
    a = np.ones(c) if alpha is None else np.asarray(alpha, np.float64)
    values = -(y * a * (1 - p) ** gamma * logp).sum(-1)
  else:
    if from_logits:
      p = np_ref.sigmoid(x)
      log_p, log_q = np_ref.log_sigmoid(x), np_ref.log_sigmoid(-x)
    else:
      p = np.clip(x, EPS, 1 - EPS)
      log_p, log_q = np.log(p), np.log1p(-p)
    ce = -(y * log_p + (1 - y) * log_q)
    p_t = p * y + (1 - p) * (1 - y)
    if alpha is None:
      a_t = 1.0
    else:
      a = np.asarray(alpha, np.float64)
      a_t = a * y + (1 - a) * (1 - y)
    values = (a_t * (1 - p_t) ** gamma * ce).mean(-1)

  axes = tuple(range(1, values.ndim))
  if reduction == "none":
    num, den = (values * w).sum(axes), w.sum(axes)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
  total = (values * w).sum()
  if reduction == "sum":
    return total
  return total / w.sum() if w.sum() > 0 else 0.0


def case(rng, spatial, c, *, kind, batch=2, scale=3.0):
  """Random float32 logits and labels: kind 'int' (class map), 'soft' (softmax) or 'multi'."""
  logits = (scale * rng.standard_normal((batch, *spatial, c))).astype(np.float32)
  ints = rng.integers(0, max(c, 2), size=(batch, *spatial)).astype(np.int32)
  if kind == "int":
    return logits, ints
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
  if isinstance(value, list | tuple | np.ndarray):
    arr = np.asarray(value, np.float64)
    return float(arr) if arr.ndim == 0 else tuple(arr.tolist())
  return value


@functools.cache
def _compiled(fn, frozen, reductions):
  opts = dict(frozen)
  if reductions is None:
    return jax.jit(jax.value_and_grad(lambda x, y, m: fn(x, y, mask=m, **opts)))
  return jax.jit(lambda x, y, m: {r: fn(x, y, mask=m, reduction=r, **opts) for r in reductions})


def _frozen(opts):
  return tuple(sorted((k, _freeze(v)) for k, v in opts.items()))


def run(logits, labels, *, fn=losses.focal_loss, mask=None, reductions=("mean",), **opts):
  """``{reduction: value}`` with static options; one compile per options and shapes."""
  return _compiled(fn, _frozen(opts), reductions)(logits, labels, mask)


def value_and_grad(logits, labels, *, fn=losses.focal_loss, mask=None, **opts):
  return _compiled(fn, _frozen(opts), None)(logits, labels, mask)


def check(got, expected_fn, **tol):
  for reduction, value in got.items():
    close(value, expected_fn(reduction), **tol)


# ------------------------------------------------------------------------------------------------
# worked examples (hand calculation)
# ------------------------------------------------------------------------------------------------


def test_worked_examples():
  # Softmax: p = [0.1, 0.7, 0.2], true class 1, gamma 2: -(1 - 0.7)^2 log 0.7 = 0.09 * 0.3566749.
  probs = np.array([0.1, 0.7, 0.2], np.float32).reshape(1, 1, 3)
  labels = np.array([[1]], np.int32)
  close(run(np.log(probs), labels)["mean"], 0.09 * 0.35667494, rtol=1e-5)
  close(run(probs, labels, from_logits=False)["mean"], 0.09 * 0.35667494, rtol=1e-5)
  # Sigmoid: positive pixel with p = 0.9 and p = 0.1, alpha 0.25, gamma 2:
  # 0.25 * 0.1^2 * 0.1053605 and 0.25 * 0.9^2 * 2.3025851.
  p = np.array([0.9, 0.1], np.float32).reshape(2, 1, 1)
  got = run(np.log(p / (1 - p)), np.ones((2, 1), np.int32), alpha=0.25, reductions=("none",))
  close(got["none"], [0.25 * 0.01 * 0.1053605, 0.25 * 0.81 * 2.3025851], rtol=1e-5)
  # A negative pixel is weighted by 1 - alpha: 0.75 * 0.9^2 * (-log 0.1).
  got = run(np.log(p / (1 - p))[:1], np.zeros((1, 1), np.int32), alpha=0.25)
  close(got["mean"], 0.75 * 0.81 * 2.3025851, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(7,), (5, 4), (3, 4, 2)], ids=["1d", "2d", "3d"])
def test_1d_2d_3d_match_reference(rng, spatial):
  logits, labels = case(rng, spatial, 3, kind="int")
  alpha = [0.2, 0.5, 1.5]
  check(
    run(logits, labels, alpha=alpha, reductions=ALL),
    lambda r: ref_focal(logits, labels, mode="multiclass", alpha=alpha, reduction=r),
  )
  _, multi = case(rng, spatial, 3, kind="multi")
  check(
    run(logits, multi, mode="multilabel", alpha=0.25, reductions=ALL),
    lambda r: ref_focal(logits, multi, mode="multilabel", alpha=0.25, reduction=r),
  )


@pytest.mark.parametrize(
  "gamma,kind,alpha",
  [
    (0.5, "int", [0.25, 1.0, 2.0]),  # non-integer gamma: the guarded power
    (0.5, "soft", [0.25, 1.0, 2.0]),
    (3.0, "int", None),
    (1.5, "soft", None),
  ],
)
def test_multiclass_gamma_alpha_int_and_soft_labels(rng, gamma, kind, alpha):
  logits, labels = case(rng, (5, 4), 3, kind=kind)
  mask = (rng.random((2, 5, 4)) > 0.3).astype(np.float32)
  check(
    run(logits, labels, mask=mask, gamma=gamma, alpha=alpha),
    lambda r: ref_focal(
      logits, labels, mode="multiclass", mask=mask, gamma=gamma, alpha=alpha, reduction=r
    ),
  )


@pytest.mark.parametrize(
  "gamma,mode,alpha",
  [(0.5, "multilabel", 0.25), (0.5, "binary", 0.25), (2.5, "multilabel", [0.1, 0.5, 0.9])],
)
def test_sigmoid_gamma_alpha_hard_and_soft_labels(rng, gamma, mode, alpha):
  if mode == "binary":
    logits, labels = case(rng, (5, 4), 1, kind="int")
  else:
    logits, labels = case(rng, (5, 4), 3, kind="multi")
  mask = rng.random((2, 5, 4)).astype(np.float32)
  check(
    run(logits, labels, mask=mask, mode=mode, gamma=gamma, alpha=alpha),
    lambda r: ref_focal(
      logits, labels, mode=mode, mask=mask, gamma=gamma, alpha=alpha, reduction=r
    ),
  )


def test_mask_ignore_index_out_of_range_labels(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  labels = labels.copy()
  labels[0, 0, :2] = 255
  labels[1, 3, 1] = -7  # out of range: ignored, finite
  labels[1, 2, 2] = 3
  mask = rng.random((2, 5, 4)).astype(np.float32)
  opts = dict(ignore_index=255, alpha=[1.0, 0.5, 2.0])
  got = run(logits, labels, mask=mask, reductions=ALL, **opts)
  assert all(np.all(np.isfinite(v)) for v in got.values())
  check(got, lambda r: ref_focal(logits, labels, mode="multiclass", mask=mask, reduction=r, **opts))
  # Binary: 2 is not a binary label and is ignored.
  binary, bin_labels = case(rng, (5, 4), 1, kind="int")
  bin_labels[0, 1, 1] = 2
  check(
    run(binary, bin_labels, reductions=ALL),
    lambda r: ref_focal(binary, bin_labels, mode="binary", reduction=r),
  )


def test_from_probabilities(rng):
  logits, labels = case(rng, (3, 4, 2), 3, kind="int")
  probs = np_ref.softmax(logits).astype(np.float32)
  got = run(probs, labels, from_logits=False, gamma=1.5)
  close(got["mean"], ref_focal(probs, labels, mode="multiclass", from_logits=False, gamma=1.5))
  close(got["mean"], ref_focal(logits, labels, mode="multiclass", gamma=1.5), rtol=1e-4)
  _, multi = case(rng, (3, 4, 2), 3, kind="multi")
  sig = np_ref.sigmoid(logits).astype(np.float32)
  opts = dict(mode="multilabel", alpha=0.25)
  got = run(sig, multi, from_logits=False, **opts)
  close(got["mean"], ref_focal(sig, multi, from_logits=False, **opts))


def test_many_channels_vectorised_path(rng):
  c = ce_module._UNROLL_MAX + 3
  logits, labels = case(rng, (3, 4), c, kind="int")
  alpha = rng.random(c) + 0.1
  close(
    run(logits, labels, alpha=alpha)["mean"],
    ref_focal(logits, labels, mode="multiclass", alpha=alpha),
  )
  _, soft = case(rng, (3, 4), c, kind="soft")
  close(run(logits, soft, gamma=0.5)["mean"], ref_focal(logits, soft, mode="multiclass", gamma=0.5))
  _, multi = case(rng, (3, 4), c, kind="multi")
  close(
    run(logits, multi, mode="multilabel", alpha=0.25)["mean"],
    ref_focal(logits, multi, mode="multilabel", alpha=0.25),
  )


# ------------------------------------------------------------------------------------------------
# gamma = 0 is cross-entropy; traced options
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kind,c,mode",
  [("int", 3, None), ("soft", 3, None), ("int", 1, None), ("multi", 3, "multilabel")],
  ids=["multiclass-int", "multiclass-soft", "binary", "multilabel"],
)
def test_gamma_zero_equals_cross_entropy_exactly(rng, kind, c, mode):
  logits, labels = case(rng, (5, 4), c, kind=kind)
  mask = rng.random((2, 5, 4)).astype(np.float32)
  reductions = ALL if kind == "int" and c == 3 else ("mean",)
  focal = run(logits, labels, mask=mask, mode=mode, gamma=0.0, reductions=reductions)
  ce = run(logits, labels, fn=losses.cross_entropy, mask=mask, mode=mode, reductions=reductions)
  for r in reductions:
    np.testing.assert_array_equal(np.asarray(focal[r]), np.asarray(ce[r]))


def test_traced_gamma(rng):
  logits, labels = case(rng, (5, 4), 3, kind="int")
  logits[0, 0, 0, labels[0, 0, 0]] = 1e4  # p_t == 1 exactly

  @jax.jit
  def loss(x, gamma):
    return losses.focal_loss(x, labels, gamma=gamma)

  for gamma in (0.0, 0.5, 2.0):
    close(loss(logits, gamma), ref_focal(logits, labels, mode="multiclass", gamma=gamma))
  grad = jax.jit(jax.grad(loss))(logits, 0.5)
  assert np.all(np.isfinite(grad))


# ------------------------------------------------------------------------------------------------
# gradients and extremes
# ------------------------------------------------------------------------------------------------


def _numeric_grad(f, x, h=1e-6):
  x = np.asarray(x, np.float64)
  g = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[i] = h
    g[i] = (f(x + e) - f(x - e)) / (2 * h)
  return g


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradient_matches_reference_derivative(rng, gamma):
  logits, labels = case(rng, (3,), 3, kind="int", scale=1.5)
  _, grad = value_and_grad(logits, labels, gamma=gamma, alpha=[0.5, 1.0, 2.0])
  expected = _numeric_grad(
    lambda x: ref_focal(x, labels, mode="multiclass", gamma=gamma, alpha=[0.5, 1.0, 2.0]), logits
  )
  close(grad, expected, rtol=1e-4, atol=1e-6)
  _, multi = case(rng, (3,), 3, kind="multi", scale=1.5)
  logits[0, 0, 0] = 0.0  # the sigmoid derivative at exactly 0
  opts = dict(mode="multilabel", gamma=gamma, alpha=0.25)
  _, grad = value_and_grad(logits, multi, **opts)
  close(grad, _numeric_grad(lambda x: ref_focal(x, multi, **opts), logits), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "gamma,kind,c,mode",
  [
    (0.5, "int", 3, None),
    (0.25, "soft", 3, None),
    (0.5, "multi", 3, "multilabel"),
    (0.5, "int", 1, None),
  ],
)
def test_finite_at_extreme_logits_and_at_certainty(rng, gamma, kind, c, mode):
  logits, labels = case(rng, (5, 4), c, kind=kind)
  logits = np.where(logits >= 0, 1e4, -1e4).astype(np.float32)
  opts = dict(mode=mode, gamma=gamma)
  value, grad = value_and_grad(logits, labels, **opts)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  resolved = mode or ("binary" if c == 1 else "multiclass")
  close(value, ref_focal(logits, labels, mode=resolved, gamma=gamma), rtol=1e-6)


def test_perfect_prediction_is_zero_with_zero_gradient(rng):
  _, labels = case(rng, (5, 4), 3, kind="int")
  perfect = (np_ref.one_hot(labels, 3) * 60.0 - 30.0).astype(np.float32)  # p_t == 1 in float32
  value, grad = value_and_grad(perfect, labels, gamma=0.5)
  assert float(value) < 1e-12 and np.all(np.isfinite(grad))
  assert np.max(np.abs(grad)) < 1e-12


def test_all_ignored_batch(rng):
  logits, labels = case(rng, (1, 1), 3, kind="int")
  mask = np.zeros((2, 1, 1), np.float32)
  assert all(
    np.all(np.asarray(v) == 0) for v in run(logits, labels, mask=mask, reductions=ALL).values()
  )
  value, grad = value_and_grad(logits, labels, mask=mask, gamma=0.5)
  assert value == 0.0 and np.all(np.asarray(grad) == 0.0)


# The softmax form with an integer class map, from logits and with an integer gamma, has a
# closed-form derivative (a custom JVP); its gradient is compared here with jax.grad of the plain
# formula in float64 (written below from the paper's definition, independent of the code).
def _plain_softmax_focal(x, onehot, w, *, gamma, alpha, reduction):
  logp = jax.nn.log_softmax(x, axis=-1)
  logp_t = (onehot * logp).sum(-1)
  a_t = 1.0 if alpha is None else (onehot * jnp.asarray(alpha, jnp.float64)).sum(-1)
  values = -a_t * (1.0 - jnp.exp(logp_t)) ** gamma * logp_t
  if reduction == "none":
    axes = tuple(range(1, values.ndim))
    return (w * values).sum(axes) / w.sum(axes)
  total = (w * values).sum()
  return total if reduction == "sum" else total / w.sum()


@pytest.mark.parametrize(
  ("spatial", "gamma", "alpha", "reduction"),
  [
    ((7,), 2, None, "mean"),  # 1D, the defaults
    ((5, 4), 3, [0.5, 1.0, 2.0], "sum"),  # 2D
    ((3, 3, 2), 0, None, "none"),  # 3D, cross-entropy
    ((5, 4), 1, [1.0, 0.2, 0.7], "mean"),
  ],
)
def test_softmax_gradient_matches_the_plain_formula(rng, spatial, gamma, alpha, reduction):
  logits, labels = case(rng, spatial, 3, kind="int")
  labels.reshape(-1)[:2] = 255  # ignored
  labels.reshape(-1)[3] = -1  # out of range: ignored
  mask = (rng.random(labels.shape) * 1.5).astype(np.float32)
  opts = dict(gamma=float(gamma), alpha=alpha, ignore_index=255, reduction=reduction)
  ct = rng.standard_normal(2 if reduction == "none" else ()).astype(np.float32)

  def ours(x):
    return losses.focal_loss(x, labels, mask=mask, **opts)

  @jax.jit
  def value_vjp_jvp(x, v):
    value, pullback = jax.vjp(ours, x)
    return value, pullback(ct)[0], jax.jvp(ours, (x,), (v,))[1]

  v = rng.standard_normal(logits.shape).astype(np.float32)
  value, grad, tangent = value_vjp_jvp(logits, v)
  w = np_ref.pixel_weights(labels, 3, mask, 255)
  onehot = np_ref.one_hot(np.where(w > 0, labels, 0), 3)
  with jax.enable_x64():
    plain = functools.partial(
      _plain_softmax_focal, onehot=onehot, w=w, gamma=gamma, alpha=alpha, reduction=reduction
    )
    x64 = jnp.asarray(logits, jnp.float64)
    want_value, pullback = jax.vjp(plain, x64)
    want_grad = np.asarray(pullback(jnp.asarray(ct, jnp.float64))[0])
    want_tangent = np.asarray(jax.jvp(plain, (x64,), (jnp.asarray(v, jnp.float64),))[1])
  close(value, np.asarray(want_value))
  scale = float(np.abs(want_grad).max())
  close(grad, want_grad, rtol=1e-5, atol=1e-6 * scale)
  # Forward mode (the custom JVP itself) along a random direction.
  close(tangent, want_tangent, rtol=1e-5, atol=1e-6 * float(np.abs(want_tangent).max()))


# ------------------------------------------------------------------------------------------------
# optax, where the definitions coincide
# ------------------------------------------------------------------------------------------------


def test_matches_optax_sigmoid_focal_loss(rng):
  optax = pytest.importorskip("optax")
  logits, labels = case(rng, (3, 4, 2), 3, kind="multi")
  for alpha in (None, 0.25):
    expected = jax.jit(optax.losses.sigmoid_focal_loss, static_argnames="gamma")(
      logits, labels, alpha=alpha, gamma=2.0
    )
    close(
      run(logits, labels, mode="multilabel", alpha=alpha)["mean"],
      float(np.mean(expected)),
      rtol=1e-5,
    )


# ------------------------------------------------------------------------------------------------
# registry and option errors
# ------------------------------------------------------------------------------------------------


def test_registry(rng):
  assert losses.lookup("focal") is losses.focal_loss
  logits, labels = case(rng, (5,), 3, kind="int")
  fn = jax.jit(losses.get("focal", gamma=1.0, alpha=[1.0, 2.0, 3.0]))
  close(
    fn(logits, labels), ref_focal(logits, labels, mode="multiclass", gamma=1.0, alpha=[1, 2, 3])
  )


@pytest.mark.parametrize(
  "kwargs,c,match",
  [
    (dict(alpha=0.25), 3, "alpha=0.25 is a scalar, but in multiclass"),
    (dict(alpha=[0.25, 0.75]), 3, r"alpha must have shape \(3,\)"),
    (dict(alpha=[1.0, -1.0, 1.0]), 3, "alpha"),
    (dict(alpha=1.5), 1, r"alpha must be finite and in \[0.0, 1.0\]"),
    (dict(alpha=[0.2, 0.3], mode="multilabel"), 3, r"alpha must be a scalar or have shape \(3,\)"),
    (dict(gamma=-1.0), 3, "gamma must be finite and >= 0"),
    (dict(gamma=[1.0, 2.0]), 3, "gamma must be a scalar"),
    (dict(reduction="mean_batch"), 3, "reduction='mean_batch'"),
    (dict(mode="sigmoid"), 3, "mode='sigmoid'"),
  ],
)
def test_bad_options_raise_naming_them(rng, kwargs, c, match):
  logits, labels = case(rng, (4,), c, kind="multi" if kwargs.get("mode") == "multilabel" else "int")
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda x, y: losses.focal_loss(x, y, **kwargs), logits, labels)
