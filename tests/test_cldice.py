"""cldice_loss against a float64 NumPy/SciPy reference written from Shit et al. (CVPR 2021).

The reference builds the soft skeleton with scipy.ndimage minimum/maximum filters (cross-shaped
footprint for erosion, 3^d box for dilation, the outside of the image never winning), then the
topology precision/sensitivity and the soft Dice from their formulas.
"""

import functools

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax.losses import cldice_loss
from seg_jax.losses.cldice import soft_skeleton

# ---------------------------------------------------------------- float64 reference
np_soft_skeleton = np_ref.soft_skeleton


def np_cldice(
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
  ignore_empty=False,
  smooth=1e-5,
  alpha=0.5,
  num_iter=3,
):
  """Returns (per-image values, scalar loss) in float64."""
  x = np.asarray(logits, np.float64)
  b, c = x.shape[0], x.shape[-1]
  labels = np.asarray(labels)
  if labels.shape == x.shape:
    g = labels.astype(np.float64)
    w = np.ones(x.shape[:-1]) if mask is None else np.asarray(mask, np.float64)
  else:
    binary = mode == "binary"
    w = np_ref.pixel_weights(labels, c, mask, ignore_index, binary=binary)
    safe = np.where(w > 0, labels, 0)
    g = safe[..., None].astype(np.float64) if binary else np_ref.one_hot(safe, c)
  if not from_logits:
    p = np.clip(x, 1e-7, 1 - 1e-7)
  else:
    p = np_ref.softmax(x) if mode == "multiclass" else np_ref.sigmoid(x)
  sp, sg = np.zeros_like(p), np.zeros_like(g)
  for i in range(b):
    for k in range(c):
      sp[i, ..., k] = np_soft_skeleton(p[i, ..., k], num_iter, w[i] > 0)
      sg[i, ..., k] = np_soft_skeleton(g[i, ..., k], num_iter, w[i] > 0)
  cw = np.ones(c) if class_weights is None else np.asarray(class_weights, np.float64)
  if mode == "multiclass" and not include_background:
    cw = cw.copy()
    cw[0] = 0.0

  def loss_of(idx):
    def s(t):
      return (w[idx][..., None] * t[idx]).reshape(-1, c).sum(0)

    dice = 1 - (2 * s(p * g) + smooth) / (s(p) + s(g) + smooth)
    t_prec = (s(sp * g) + smooth) / (s(sp) + smooth)
    t_sens = (s(sg * p) + smooth) / (s(sg) + smooth)
    cl = 2 * t_prec * t_sens / (t_prec + t_sens)
    vals = (1 - alpha) * dice + alpha * (1 - cl)
    wc = cw * (s(g) > 0) if ignore_empty else cw
    if w[idx].sum() == 0 or wc.sum() == 0:
      return None
    return float((wc * vals).sum() / wc.sum())

  if not per_image:
    v = loss_of(slice(None))
    return None, 0.0 if v is None else v
  vals = [loss_of(i) for i in range(b)]
  counted = [v for v in vals if v is not None]
  return np.array([0.0 if v is None else v for v in vals]), float(np.mean(counted))


def _close(got, want, rtol=2e-5, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@functools.cache
def _compiled(frozen_opts):
  opts = dict(frozen_opts)

  def fn(x, y, m, cw):
    return {
      "pooled": cldice_loss(x, y, mask=m, class_weights=cw, **opts),
      "none": cldice_loss(x, y, mask=m, class_weights=cw, per_image=True, reduction="none", **opts),
    }

  return jax.jit(fn)


def run(x, y, mask=None, class_weights=None, **opts):
  """Jitted cldice_loss, pooled and per image ('none'); class weights are traced (ones)."""
  if np.ndim(y) == np.ndim(x) - 1:
    opts.setdefault("ignore_index", 255)
  if mask is None:
    mask = np.ones(np.shape(x)[:-1], np.float32)
  cw = np.ones(np.shape(x)[-1], np.float32) if class_weights is None else class_weights
  return _compiled(tuple(sorted(opts.items())))(x, y, mask, np.asarray(cw, np.float32))


def check(got, x, y, mode, **kw):
  _close(got["pooled"], np_cldice(x, y, mode, per_image=False, **kw)[1])
  _close(got["none"], np_cldice(x, y, mode, per_image=True, **kw)[0])


MC = (2, 7, 6, 3)  # multiclass, 2D


_blobs = np_ref.blobs


def _mc(rng):
  labels = _blobs(rng, MC[:-1], MC[-1])
  one_hot = np.asarray(jax.nn.one_hot(labels, MC[-1]))
  logits = (3.0 * one_hot - 1.5 + 2.0 * rng.standard_normal(MC)).astype(np.float32)
  return logits, labels


# ---------------------------------------------------------------- reference comparisons
_skeleton = jax.jit(soft_skeleton, static_argnames="num_iter")


def test_soft_skeleton_matches_reference(rng):
  for shape, iters in [((2, 9, 1), 2), ((1, 7, 9, 1), 3), ((1, 5, 6, 4, 2), 2)]:
    x = rng.random(shape).astype(np.float32)
    domain = rng.random(shape[:-1] + (1,)) > 0.2
    for dom in (None, domain) if len(shape) == 4 else (domain,):
      got = np.asarray(_skeleton(x, num_iter=iters, domain=dom))
      d = np.ones(shape[:-1], bool) if dom is None else dom[..., 0]
      for i in range(shape[0]):
        for k in range(shape[-1]):
          want = np_soft_skeleton(x[i, ..., k], iters, d[i])
          _close(got[i, ..., k], want, rtol=1e-6, atol=1e-7)


def test_binary_line_is_its_own_skeleton():
  line = np.zeros((1, 7, 9, 1), np.float32)
  line[0, 3, 1:8] = 1.0
  _close(_skeleton(line, num_iter=3), line)
  # A 3-thick bar: its skeleton is the middle row, without the end pixels.
  bar = np.zeros((1, 7, 9, 1), np.float32)
  bar[0, 2:5, 1:8] = 1.0
  want = np.zeros_like(bar)
  want[0, 3, 2:7] = 1.0
  _close(_skeleton(bar, num_iter=3), want)


def test_multiclass_2d_mask_ignore_index(rng):
  logits, labels = _mc(rng)
  mask = (rng.random(labels.shape) > 0.15).astype(np.float32) * rng.uniform(0.5, 1.5, labels.shape)
  mask = mask.astype(np.float32)
  labels[1, 0, :3] = 255
  got = run(logits, labels, mask)
  check(got, logits, labels, "multiclass", mask=mask, ignore_index=255)


def test_binary_1d_pure_cldice_smooth_one(rng):
  labels = _blobs(rng, (3, 16), 2)
  logits = (2.0 * labels - 1.0 + 1.5 * rng.standard_normal(labels.shape))[..., None]
  logits = logits.astype(np.float32)
  opts = {"alpha": 1.0, "smooth": 1.0}
  check(run(logits, labels, **opts), logits, labels, "binary", **opts)


def test_multilabel_3d_options(rng):
  shape = (2, 5, 5, 4, 2)
  labels = (rng.random(shape) > 0.5).astype(np.float32)
  labels[1, ..., 1] = 0.0  # Empty in one image: ignore_empty matters per image.
  logits = (2.0 * labels - 1.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
  mask = (rng.random(shape[:-1]) > 0.2).astype(np.float32)
  opts = {"alpha": 0.3, "num_iter": 5, "ignore_empty": True}
  cw = [2.0, 0.5]
  got = run(logits, labels, mask, class_weights=cw, mode="multilabel", **opts)
  check(got, logits, labels, "multilabel", mask=mask, class_weights=cw, **opts)


def test_class_options(rng):
  logits, labels = _mc(rng)
  labels[0][labels[0] == 2] = 1  # Class 2 empty in image 0.
  opts = {"include_background": False, "ignore_empty": True}
  cw = [1.0, 3.0, 0.5]
  check(
    run(logits, labels, class_weights=cw, **opts),
    logits,
    labels,
    "multiclass",
    class_weights=cw,
    **opts,
  )


def test_from_logits_false_and_dense_soft_labels(rng):
  logits, labels = _mc(rng)
  probs = np_ref.softmax(logits).astype(np.float32)
  soft = (0.8 * np.asarray(jax.nn.one_hot(labels, MC[-1])) + 0.2 / MC[-1]).astype(np.float32)
  got = run(probs, soft, from_logits=False)
  check(got, probs, soft, "multiclass", from_logits=False)


def test_ignored_pixels_are_outside_the_image(rng):
  """Masked trailing columns give the value of the image physically cropped to the rest."""
  logits, labels = _mc(rng)
  mask = np.ones(labels.shape, np.float32)
  mask[:, :, -2:] = 0.0
  crazy = logits.copy()
  crazy[:, :, -2:] = 1e4
  got = run(crazy, labels, mask)
  cropped = run(crazy[:, :, :-2], labels[:, :, :-2])
  for k in got:
    _close(got[k], np.asarray(cropped[k], np.float64), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- gradients and properties
@jax.jit
def _vag(x, y, m):
  return jax.value_and_grad(lambda z: cldice_loss(z, y, mask=m, ignore_index=255))(x)


def test_gradient_matches_reference_differences(rng):
  logits, labels = _mc(rng)
  mask = np.ones(labels.shape, np.float32)
  mask[0, 1:3, 2:4] = 0.0
  value, grad = _vag(logits, labels, mask)

  def ref(x):
    return np_cldice(x, labels, "multiclass", mask=mask)[1]

  _close(value, ref(logits))
  h = 1e-5
  for _ in range(3):
    v = rng.standard_normal(logits.shape)
    fd = (ref(logits + h * v) - ref(logits - h * v)) / (2 * h)
    _close(np.sum(np.asarray(grad, np.float64) * v), fd, rtol=1e-3, atol=1e-5)
  assert np.all(np.asarray(grad)[0, 1:3, 2:4] == 0.0), "ignored pixels get no gradient"


def test_finite_extremes_empty_and_perfect(rng):
  logits, labels = _mc(rng)
  signs = 2.0 * np.asarray(jax.nn.one_hot(labels, MC[-1]), np.float32) - 1.0
  ones = np.ones(labels.shape, np.float32)
  zeros = np.zeros(labels.shape, np.float32)
  for x, y, m in [
    (1e4 * signs, labels, ones),
    (-1e4 * signs, labels, ones),
    (1e4 * signs, np.zeros_like(labels), ones),
    (logits, np.zeros_like(labels), ones),
    (1e4 * signs, labels, zeros),
    (1e4 * signs, np.full_like(labels, 255), ones),
  ]:
    value, grad = _vag(x, y, m)
    assert np.isfinite(value) and np.isfinite(grad).all()
  value, grad = _vag(logits, labels, zeros)
  assert value == 0.0 and np.all(grad == 0.0), "all ignored: 0 and no gradient"
  # Perfect prediction: the minimum, 0 (pooled and per image).
  got = run(30.0 * signs, labels)
  assert float(got["pooled"]) < 1e-6 and np.all(np.asarray(got["none"]) < 1e-6)


def test_unit_interval_and_batch_order(rng):
  for _ in range(2):
    logits, labels = _mc(rng)
    got = run(3.0 * logits, labels)
    values = np.append(np.asarray(got["none"]), got["pooled"])
    assert np.all((values >= 0) & (values <= 1))
    swapped = run(3.0 * logits[::-1], labels[::-1])
    _close(swapped["pooled"], float(got["pooled"]), rtol=1e-6)
    _close(swapped["none"], np.asarray(got["none"])[::-1], rtol=1e-6)


def test_one_pixel_images():
  x = np.array([[[[2.0]]], [[[-1.0]]]], np.float32)
  y = np.array([[[1]], [[1]]], np.int32)
  check(run(x, y), x, y, "binary")


def test_bad_options():
  x, y = jax.ShapeDtypeStruct((1, 3, 2), jnp.float32), jax.ShapeDtypeStruct((1, 3), jnp.int32)
  for kw, msg in [
    ({"alpha": 1.5}, "alpha"),
    ({"num_iter": 0}, "num_iter"),
    ({"num_iter": 2.0}, "num_iter"),
    ({"smooth": -1.0}, "smooth"),
  ]:
    with pytest.raises(ValueError, match=msg):
      jax.eval_shape(lambda a, b, kw=kw: cldice_loss(a, b, **kw), x, y)


def test_traced_alpha_and_smooth_under_jit(rng):
  # Options passed as traced values (e.g. a schedule inside a jitted step) work and equal the
  # concrete ones.
  logits = rng.standard_normal((2, 8, 8, 2)).astype(np.float32)
  labels = rng.integers(0, 2, (2, 8, 8)).astype(np.int32)
  traced = jax.jit(lambda x, y, a, s: cldice_loss(x, y, alpha=a, smooth=s))
  for alpha in (0.0, 0.5):
    np.testing.assert_allclose(
      traced(logits, labels, alpha, 1e-3),
      cldice_loss(logits, labels, alpha=alpha, smooth=1e-3),
      rtol=1e-5,
    )


# ---------------------------------------------------------------- custom gradient of the pools
def _plain_pool(x, axis, op):
  """The pool as a bare ``lax.reduce_window`` (autodiff: XLA's select_and_scatter)."""
  window = [1] * x.ndim
  window[axis] = 3
  padding = [(0, 0)] * x.ndim
  padding[axis] = (1, 1)
  init, fn = (jnp.inf, jax.lax.min) if op == "min" else (-jnp.inf, jax.lax.max)
  return jax.lax.reduce_window(x, init, fn, window, (1,) * x.ndim, padding)


def _plain_skeleton(x, num_iter, domain):
  """soft_skeleton written again on the bare reduce_window pools (the gradient's reference)."""
  spatial = tuple(range(1, x.ndim - 1))

  def erode(v):
    v = v if domain is None else jnp.where(domain, v, jnp.inf)
    out = _plain_pool(v, spatial[0], "min")
    for a in spatial[1:]:
      out = jnp.minimum(out, _plain_pool(v, a, "min"))
    return out if domain is None else jnp.where(domain, out, 0.0)

  def dilate(v):
    v = v if domain is None else jnp.where(domain, v, -jnp.inf)
    for a in spatial:
      v = _plain_pool(v, a, "max")
    return v if domain is None else jnp.where(domain, v, 0.0)

  if domain is not None:
    x = jnp.where(domain, x, 0.0)
  eroded = erode(x)
  skel = jax.nn.relu(x - dilate(eroded))
  for _ in range(num_iter):
    x = eroded
    eroded = erode(x)
    delta = jax.nn.relu(x - dilate(eroded))
    skel = skel + jax.nn.relu(delta - skel * delta)
  return skel


@pytest.mark.parametrize("shape", [(2, 11, 2), (2, 8, 9, 2), (2, 5, 6, 7, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_pool_gradient_equals_reduce_window_autodiff(rng, shape, ties):
  """float64 vjp of soft_skeleton equals jax.vjp of the bare reduce_window version, exactly
  (same winners, ties included: quantized inputs tie often), with and without a domain, jitted
  and vmapped."""
  with jax.enable_x64(True):
    x = rng.random(shape)
    if ties:
      x = np.round(4 * x) / 4
    ct = rng.standard_normal(shape)
    domain = rng.random(shape[:-1] + (1,)) > 0.25
    for dom in (None, jnp.asarray(domain)):
      want = jax.vjp(lambda v, d=dom: _plain_skeleton(v, 3, d), jnp.asarray(x))[1](ct)[0]
      vjp = jax.jit(lambda v, c, d=dom: jax.vjp(lambda u: soft_skeleton(u, domain=d), v)[1](c)[0])
      got = vjp(jnp.asarray(x), jnp.asarray(ct))
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    # vmap over the batch (each image alone) against the unbatched reference.
    per_image = jax.vmap(lambda v, c: jax.vjp(lambda u: soft_skeleton(u[None])[0], v)[1](c)[0])(
      jnp.asarray(x), jnp.asarray(ct)
    )
    want = jax.vjp(lambda v: _plain_skeleton(v, 3, None), jnp.asarray(x))[1](ct)[0]
    np.testing.assert_allclose(np.asarray(per_image), np.asarray(want), rtol=1e-12, atol=1e-12)


def test_pool_gradient_ties_first_in_window():
  """On a constant row the first element of each window (padding included) gets the gradient,
  as XLA's select_and_scatter."""
  from seg_jax.losses.cldice import _pool

  x = jnp.ones((1, 5))
  for op in ("min", "max"):
    jac = np.stack(
      [np.asarray(jax.grad(lambda v, i=i, op=op: _pool(v, 1, op)[0, i])(x))[0] for i in range(5)]
    )
    want = np.eye(5, k=-1)  # output i's gradient on element i - 1 ...
    want[0, 0] = 1.0  # ... except at the border, where the padding is outside x
    np.testing.assert_array_equal(jac, want)


def test_cldice_gradient_equals_reduce_window_autodiff(rng):
  """The loss's gradient (mask, ignore_index, jit) with the custom pools equals the one with the
  bare reduce_window pools (float32, saturated logits that tie)."""
  from seg_jax.losses import cldice as module

  logits, labels = _mc(rng)
  logits = np.where(rng.random(logits.shape) < 0.3, 30.0, logits).astype(np.float32)
  mask = (rng.random(labels.shape) > 0.2).astype(np.float32)
  got = _vag(logits, labels, mask)
  shipped = module._pool
  module._pool = _plain_pool
  try:
    want = jax.jit(
      jax.value_and_grad(lambda z: cldice_loss(z, labels, mask=mask, ignore_index=255))
    )(logits)
  finally:
    module._pool = shipped
  np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5, atol=1e-7)


def test_pool_rejects_an_axis_that_is_not_one_int():
  """A tuple axis once pooled over a window of 1 (a silent no-op) in skeleton_recall's tube."""
  from seg_jax.losses.cldice import _pool

  x = jnp.ones((1, 5, 5, 1))
  with pytest.raises(TypeError, match=r"axis must be one int.*\(1,\)"):
    _pool(x, (1,), "max")
  with pytest.raises(ValueError, match="op must be 'min' or 'max'"):
    _pool(x, 1, "mean")
