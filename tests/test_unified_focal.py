"""unified_focal_loss against a float64 NumPy reference written from Yeung et al. (CMIG 2022).

The reference writes every mode as explicit classes: multiclass channels as they are, and each
binary/multilabel channel as the two classes (background 1 - p, foreground p) of the authors'
two-class form, then applies the asymmetric focal and focal Tversky formulas.
"""

import functools

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest

from seg_jax.losses import unified_focal_loss


# ---------------------------------------------------------------- float64 reference
def _classes_ufl(p, g, w, axes, *, delta, gamma, smooth):
  """Focal pixel values and Tversky terms of explicit classes (..., C), background = class 0."""
  with np.errstate(divide="ignore"):
    logp = np.log(p)
  focal = -(1 - delta) * (1 - p[..., 0]) ** gamma * g[..., 0] * logp[..., 0]
  focal = focal - delta * (g[..., 1:] * logp[..., 1:]).sum(-1)
  wx = w[..., None]
  tp = (wx * p * g).sum(axes)
  fn = (wx * (1 - p) * g).sum(axes)
  fp = (wx * p * (1 - g)).sum(axes)
  den = tp + delta * fn + (1 - delta) * fp + smooth
  mti = np.where(den > 0, (tp + smooth) / np.where(den > 0, den, 1.0), 1.0)
  base = np.maximum(1 - mti, 0.0)
  terms = np.concatenate([base[..., :1], base[..., 1:] ** (1 - gamma)], axis=-1)
  return focal, terms


def np_ufl(
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
  weight=0.5,
  delta=0.6,
  gamma=0.5,
):
  """Returns (per-image values or None, scalar loss) in float64."""
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
  cw = np.ones(c) if class_weights is None else np.asarray(class_weights, np.float64)
  if mode == "multiclass" and not include_background:
    cw = cw.copy()
    cw[0] = 0.0
  kw = {"delta": delta, "gamma": gamma, "smooth": smooth}

  def loss_of(idx):
    pi, gi, wi = p[idx], g[idx], w[idx]
    axes = tuple(range(pi.ndim - 1))
    if mode == "multiclass":
      focal, terms = _classes_ufl(pi, gi, wi, axes, **kw)
    else:  # Channel k -> classes (1 - p_k, p_k).
      p2 = np.stack([1 - pi, pi], -1)
      g2 = np.stack([1 - gi, gi], -1)
      focal, terms = _classes_ufl(p2, g2, wi[..., None], axes, **kw)
      focal, terms = focal.mean(-1), terms.mean(-1)
    if wi.sum() == 0:
      return None
    wc = cw * ((wi[..., None] * gi).sum(axes) > 0) if ignore_empty else cw
    # No class left to average (ignore_empty): the Tversky term is left out (None).
    tversky = (wc * terms).sum() / wc.sum() if wc.sum() > 0 else None
    return (wi * focal).sum() / wi.sum(), tversky

  def value(parts):
    if parts is None:
      return 0.0
    focal, tversky = parts
    return weight * focal + (1 - weight) * (0.0 if tversky is None else tversky)

  if not per_image:
    return None, value(loss_of(slice(None)))
  parts = [loss_of(i) for i in range(b)]
  # The mean over images: each term averaged over the images where it is defined.
  focals = [q[0] for q in parts if q is not None]
  tverskys = [q[1] for q in parts if q is not None and q[1] is not None]
  mean = weight * np.mean(focals) + (1 - weight) * (np.mean(tverskys) if tverskys else 0.0)
  return np.array([value(q) for q in parts]), float(mean)


def _close(got, want, rtol=2e-5, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@functools.cache
def _compiled(frozen_opts):
  opts = dict(frozen_opts)

  def fn(x, y, m, cw):
    return {
      "pooled": unified_focal_loss(x, y, mask=m, class_weights=cw, **opts),
      "none": unified_focal_loss(
        x, y, mask=m, class_weights=cw, per_image=True, reduction="none", **opts
      ),
    }

  return jax.jit(fn)


def run(x, y, mask=None, class_weights=None, **opts):
  """Jitted unified_focal_loss, pooled and per image ('none'); class weights traced (ones)."""
  if np.ndim(y) == np.ndim(x) - 1:
    opts.setdefault("ignore_index", 255)
  if mask is None:
    mask = np.ones(np.shape(x)[:-1], np.float32)
  cw = np.ones(np.shape(x)[-1], np.float32) if class_weights is None else class_weights
  return _compiled(tuple(sorted(opts.items())))(x, y, mask, np.asarray(cw, np.float32))


def check(got, x, y, mode, **kw):
  _close(got["pooled"], np_ufl(x, y, mode, per_image=False, **kw)[1])
  _close(got["none"], np_ufl(x, y, mode, per_image=True, **kw)[0])


MC = (2, 6, 5, 4)  # multiclass, 2D
BIN = (3, 9, 1)  # binary, 1D


def _case(rng, shape):
  logits, labels = np_ref.random_case(rng, shape[1:-1], shape[-1], batch=shape[0], scale=2.0)
  if shape[-1] == 1:
    labels = (rng.random(labels.shape) > 0.7).astype(np.int32)
  return logits, labels


# ---------------------------------------------------------------- reference comparisons
def test_multiclass_2d_mask_ignore_index(rng):
  logits, labels = _case(rng, MC)
  mask = (rng.random(labels.shape) > 0.2) * rng.uniform(0.5, 1.5, labels.shape)
  mask = mask.astype(np.float32)
  labels[0, 0, :3] = 255
  labels[1, 2, 1] = 7  # Out of range: ignored.
  check(run(logits, labels, mask), logits, labels, "multiclass", mask=mask, ignore_index=255)


def test_binary_1d(rng):
  logits, labels = _case(rng, BIN)
  mask = np.ones(labels.shape, np.float32)
  mask[2] = 0.0  # An all-ignored image: left out of the per-image mean.
  labels[1] = 0  # An image without foreground.
  check(run(logits, labels, mask), logits, labels, "binary", mask=mask)
  per, want = np_ufl(logits, labels, "binary", mask=mask, per_image=True)
  got = jax.jit(functools.partial(unified_focal_loss, per_image=True))(logits, labels, mask=mask)
  _close(got, want)


def test_multiclass_3d_options(rng):
  logits, labels = _case(rng, (2, 4, 3, 3, 3))
  labels[labels == 2] = 1  # Class 2 empty.
  opts = {"weight": 0.3, "delta": 0.7, "gamma": 0.2, "include_background": False, "smooth": 0.0}
  cw = [1.0, 2.0, 0.5]
  check(
    run(logits, labels, class_weights=cw, **opts),
    logits,
    labels,
    "multiclass",
    class_weights=cw,
    **opts,
  )


def test_multilabel_probabilities(rng):
  shape = (2, 5, 4, 3)
  labels = (rng.random(shape) > 0.6).astype(np.float32)
  labels[0, ..., 2] = 0.0  # Empty channel in one image.
  probs = rng.uniform(0.01, 0.99, shape).astype(np.float32)
  opts = {"from_logits": False, "ignore_empty": True, "gamma": 0.8}
  cw = [0.5, 1.0, 2.0]
  got = run(probs, labels, class_weights=cw, mode="multilabel", **opts)
  check(got, probs, labels, "multilabel", class_weights=cw, **opts)


def test_from_logits_false_dense_soft_labels(rng):
  logits, labels = _case(rng, MC)
  probs = np_ref.softmax(logits).astype(np.float32)
  soft = np_ref.softmax(3.0 * rng.standard_normal(MC)).astype(np.float32)
  check(run(probs, soft, from_logits=False), probs, soft, "multiclass", from_logits=False)


def test_binary_equals_two_class_softmax(rng):
  """One sigmoid channel z is the two-class softmax of logits (0, z): the authors' form."""
  z, labels = _case(rng, BIN)
  two = np.concatenate([np.zeros_like(z), z], axis=-1)
  got_binary, got_two = run(z, labels), run(two, labels)
  for k in got_binary:
    _close(got_two[k], np.asarray(got_binary[k], np.float64), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- gradients and properties
@jax.jit
def _vag(x, y, m):
  return jax.value_and_grad(lambda z: unified_focal_loss(z, y, mask=m, ignore_index=255))(x)


def test_gradient_matches_reference_differences(rng):
  logits, labels = _case(rng, MC)
  mask = np.ones(labels.shape, np.float32)
  mask[0, 1:3, 2:4] = 0.0
  value, grad = _vag(logits, labels, mask)

  def ref(x):
    return np_ufl(x, labels, "multiclass", mask=mask)[1]

  _close(value, ref(logits))
  h = 1e-5
  for _ in range(3):
    v = rng.standard_normal(logits.shape)
    fd = (ref(logits + h * v) - ref(logits - h * v)) / (2 * h)
    _close(np.sum(np.asarray(grad, np.float64) * v), fd, rtol=1e-3, atol=1e-5)
  assert np.all(np.asarray(grad)[0, 1:3, 2:4] == 0.0), "ignored pixels get no gradient"


def test_finite_extremes_empty_and_perfect(rng):
  logits, labels = _case(rng, MC)
  signs = 2.0 * np.asarray(jax.nn.one_hot(labels, MC[-1]), np.float32) - 1.0
  ones = np.ones(labels.shape, np.float32)
  zeros = np.zeros(labels.shape, np.float32)
  for x, y, m in [
    (1e4 * signs, labels, ones),
    (-1e4 * signs, labels, ones),
    (1e4 * signs, np.zeros_like(labels), ones),
    (logits, np.zeros_like(labels), ones),
    (-1e4 * signs, labels, zeros),
    (1e4 * signs, np.full_like(labels, 255), ones),
  ]:
    value, grad = _vag(x, y, m)
    assert np.isfinite(value) and np.isfinite(grad).all()
  value, grad = _vag(logits, labels, zeros)
  assert value == 0.0 and np.all(grad == 0.0), "all ignored: 0 and no gradient"
  # Perfect prediction: the minimum 0, with zero gradient.
  value, grad = _vag(1e4 * signs, labels, ones)
  assert value == 0.0 and np.all(grad == 0.0)
  got = run(30.0 * signs, labels)
  assert float(got["pooled"]) < 1e-6 and np.all(np.asarray(got["none"]) < 1e-6)


def test_nonnegative_and_batch_order(rng):
  for _ in range(2):
    logits, labels = _case(rng, MC)
    got = run(logits, labels)
    assert float(got["pooled"]) > 0 and np.all(np.asarray(got["none"]) > 0)
    swapped = run(logits[::-1], labels[::-1])
    _close(swapped["pooled"], float(got["pooled"]), rtol=1e-6)
    _close(swapped["none"], np.asarray(got["none"])[::-1], rtol=1e-6)


def test_one_pixel_images():
  x = np.array([[[[2.0]]], [[[-1.0]]]], np.float32)
  y = np.array([[[1]], [[1]]], np.int32)
  check(run(x, y), x, y, "binary")


def test_bad_options():
  x, y = jax.ShapeDtypeStruct((1, 3, 2), jnp.float32), jax.ShapeDtypeStruct((1, 3), jnp.int32)
  for kw, msg in [
    ({"weight": 1.5}, "weight"),
    ({"delta": -0.1}, "delta"),
    ({"gamma": 2.0}, "gamma"),
    ({"smooth": -1.0}, "smooth"),
  ]:
    with pytest.raises(ValueError, match=msg):
      jax.eval_shape(lambda a, b, kw=kw: unified_focal_loss(a, b, **kw), x, y)


def test_image_without_counted_classes_leaves_the_tversky_mean(rng):
  """ignore_empty, no background: an image with only background has no Tversky term, and the
  per-image mean averages that term over the other images only (the focal term over all)."""
  logits, labels = _case(rng, MC)
  labels = labels.copy()
  labels[labels == 255] = 1
  labels[0] = 0  # Image 0: background only.
  labels[1, 0, 0] = 2  # Image 1 has foreground.
  opts = {"ignore_empty": True, "include_background": False, "per_image": True}
  got = jax.jit(lambda x, y: unified_focal_loss(x, y, **opts))(logits, labels)
  none = jax.jit(lambda x, y: unified_focal_loss(x, y, reduction="none", **opts))(logits, labels)
  values, mean = np_ufl(logits, labels, "multiclass", **opts)
  _close(got, mean)
  _close(none, values)
  # Hand check of the convention: weight 0.5 of the mean focal over both images, plus 0.5 of
  # the Tversky term of image 1 alone (= image 1's value minus its focal half).
  p = np_ref.softmax(np.asarray(logits, np.float64))
  focal = []
  for i in range(2):
    g = np_ref.one_hot(labels[i], 4)
    logp = np.log(p[i])
    f = -(0.4 * (1 - p[i, ..., 0]) ** 0.5 * g[..., 0] * logp[..., 0]) - 0.6 * (
      g[..., 1:] * logp[..., 1:]
    ).sum(-1)
    focal.append(f.mean())
  np.testing.assert_allclose(values[0], 0.5 * focal[0], rtol=2e-5)
  tversky1 = (values[1] - 0.5 * focal[1]) / 0.5
  np.testing.assert_allclose(mean, 0.5 * np.mean(focal) + 0.5 * tversky1, rtol=1e-6)
  _close(got, 0.5 * np.mean(focal) + 0.5 * tversky1)


def test_traced_parameters_under_jit(rng):
  logits, labels = _case(rng, MC)
  traced = jax.jit(
    lambda x, y, w, d, g: unified_focal_loss(x, y, weight=w, delta=d, gamma=g, ignore_index=255)
  )
  for gamma in (0.0, 0.5, 1.0):
    want = unified_focal_loss(logits, labels, weight=0.3, delta=0.7, gamma=gamma, ignore_index=255)
    _close(traced(logits, labels, 0.3, 0.7, gamma), np.asarray(want, np.float64), rtol=1e-5)
  with pytest.raises(ValueError, match="gamma must be in"):
    unified_focal_loss(logits, labels, gamma=1.5)


# ---------------------------------------------------------------- the closed-form gradient
# unified_focal_loss differentiates its pixel sums with a custom JVP (closed forms per channel);
# here its gradients are compared with jax.grad of the plain formula in float64 (written below
# from the paper's formulas, every mode as explicit classes, as np_ufl).
def _plain_ufl(x, g, w, mode, *, from_logits, per_image, weight, delta, gamma, smooth=1e-5):
  """The loss in float64 jnp: x scores, g dense float targets, w pixel weights."""
  if from_logits:
    p = jax.nn.softmax(x, axis=-1) if mode == "multiclass" else jax.nn.sigmoid(x)
  else:
    p = jnp.clip(x, 1e-7, 1 - 1e-7)
  if mode != "multiclass":  # Channel k -> classes (1 - p_k, p_k), on a new last axis.
    p, g, w = jnp.stack([1 - p, p], -1), jnp.stack([1 - g, g], -1), w[..., None]

  def one(p, g, w):
    axes = tuple(range(w.ndim if mode == "multiclass" else w.ndim - 1))  # The pixels.
    focal = -(1 - delta) * (1 - p[..., 0]) ** gamma * g[..., 0] * jnp.log(p[..., 0])
    focal = focal - delta * (g[..., 1:] * jnp.log(p[..., 1:])).sum(-1)
    tp = (w[..., None] * p * g).sum(axes)
    fn = (w[..., None] * (1 - p) * g).sum(axes)
    fp = (w[..., None] * p * (1 - g)).sum(axes)
    base = 1 - (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
    terms = jnp.concatenate([base[..., :1], base[..., 1:] ** (1 - gamma)], -1)
    focal = (w * focal).sum() / w.sum() if mode == "multiclass" else (w * focal).sum(axes).mean()
    if mode != "multiclass":
      focal = focal / w[..., 0].sum()
    return weight * focal + (1 - weight) * terms.mean()

  if not per_image:
    return one(p, g, w)
  return jnp.mean(jnp.stack([one(p[i], g[i], w[i]) for i in range(p.shape[0])]))


def _grad_case(rng, shape, mode, dense):
  x = (2.0 * rng.standard_normal(shape)).astype(np.float32)
  c = shape[-1]
  mask = (rng.random(shape[:-1]) > 0.2) * rng.uniform(0.5, 1.5, shape[:-1])
  mask = mask.astype(np.float32)
  if dense:
    y = rng.random(shape).astype(np.float32)
    if mode == "multiclass":
      y = y / y.sum(-1, keepdims=True)
    g, w = y.astype(np.float64), mask.astype(np.float64)
  else:
    y = rng.integers(0, 2 if mode == "binary" else c, size=shape[:-1]).astype(np.int32)
    y.reshape(-1)[:3] = 255  # Ignored.
    w = np_ref.pixel_weights(y, c, mask, 255, binary=mode == "binary")
    safe = np.where(w > 0, y, 0)
    g = safe[..., None].astype(np.float64) if mode == "binary" else np_ref.one_hot(safe, c)
  return x, y, mask, g, w


@pytest.mark.parametrize(
  ("shape", "mode", "dense", "from_logits", "per_image"),
  [
    ((2, 7, 4), "multiclass", False, True, False),  # 1D
    ((2, 5, 4, 3), "multiclass", False, True, True),  # 2D
    ((2, 3, 3, 2, 4), "multiclass", False, True, False),  # 3D
    ((2, 6, 5, 3), "multiclass", True, True, False),  # soft labels
    ((2, 6, 5, 3), "multiclass", True, False, True),  # probabilities
    ((2, 4, 3, 2, 1), "binary", False, True, True),
    ((2, 6, 5, 3), "multilabel", True, True, False),
    ((2, 6, 5, 3), "multilabel", True, False, False),
    ((2, 5, 3, 18), "multiclass", False, True, False),  # > 16 channels: channels last
  ],
)
def test_gradient_matches_the_plain_formula(rng, shape, mode, dense, from_logits, per_image):
  x, y, mask, g, w = _grad_case(rng, shape, mode, dense)
  if not from_logits:
    x = (np_ref.softmax(x) if mode == "multiclass" else np_ref.sigmoid(x)).astype(np.float32)
  opts = {"weight": 0.4, "delta": 0.7, "gamma": 0.3}
  ignore = None if dense else 255

  def ours(x, y, m):
    return unified_focal_loss(
      x, y, mode=mode, mask=m, ignore_index=ignore, from_logits=from_logits,
      per_image=per_image, **opts,
    )  # fmt: skip

  value_and_grad = jax.jit(jax.value_and_grad(ours))
  value, grad = value_and_grad(x, y, mask)
  with jax.enable_x64():
    plain = functools.partial(
      _plain_ufl, mode=mode, from_logits=from_logits, per_image=per_image, **opts
    )
    # Jitted: op-by-op dispatch of the float64 reference took 4 s a case.
    want_value, want_grad = jax.jit(jax.value_and_grad(plain))(jnp.asarray(x, jnp.float64), g, w)
  _close(value, float(want_value), rtol=2e-5, atol=1e-6)
  scale = float(np.abs(want_grad).max())
  _close(grad, np.asarray(want_grad), rtol=1e-3, atol=1e-4 * scale)
  # Forward mode (the custom JVP itself) along a random direction.
  v = rng.standard_normal(x.shape).astype(np.float32)
  _, tangent = jax.jit(lambda x, v: jax.jvp(lambda z: ours(z, y, mask), (x,), (v,)))(x, v)
  _close(tangent, float(np.sum(np.asarray(want_grad) * v)), rtol=1e-3, atol=1e-4 * scale)
  # vmap over problems: each entry equals its own gradient.
  xs = np.stack([x, x[::-1]])
  ys = np.stack([y, y[::-1]])
  ms = np.stack([mask, mask[::-1]])
  grads = jax.jit(jax.vmap(jax.grad(ours)))(xs, ys, ms)
  _close(grads[0], np.asarray(grad, np.float64), rtol=1e-4, atol=1e-6 * scale)
  want_1 = np.asarray(value_and_grad(xs[1], ys[1], ms[1])[1], np.float64)
  _close(grads[1], want_1, rtol=1e-4, atol=1e-6 * scale)


def test_gradient_in_gamma_and_delta(rng):
  """gamma and delta (traced) have their derivatives too (the custom JVP's extra tangents)."""
  cases = [
    (*_grad_case(rng, (2, 5, 4, 3), "multiclass", False), "multiclass"),
    (*_grad_case(rng, (2, 6, 2), "multilabel", True), "multilabel"),
  ]
  for x, y, m, g, w, mode in cases:
    ignore = 255 if mode == "multiclass" else None

    def ours(d, gm, x=x, y=y, m=m, mode=mode, ignore=ignore):
      return unified_focal_loss(x, y, mode=mode, mask=m, ignore_index=ignore, delta=d, gamma=gm)

    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(0.6, 0.4)
    with jax.enable_x64():
      x64 = jnp.asarray(x, jnp.float64)

      def plain(d, gm, x64=x64, g=g, w=w, mode=mode):
        return _plain_ufl(
          x64, g, w, mode, from_logits=True, per_image=False, weight=0.5, delta=d, gamma=gm
        )

      want = jax.jit(jax.grad(plain, argnums=(0, 1)))(0.6, 0.4)
    for a, b in zip(got, want, strict=True):
      _close(a, float(b), rtol=1e-4, atol=1e-6)
