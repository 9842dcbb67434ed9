"""Tests of seg_jax.models.layers: the U-Net's GroupNorm, up-convolution and max-pooling.

Each layer is checked three ways: against float64 NumPy written here from the layer's formula,
against the Flax layer it replaces (``nnx.GroupNorm``, ``nnx.ConvTranspose``: same constructor,
same parameters, so the same outputs and gradients, and the same parameter tree, which keeps
checkpoints compatible), and for the options it refuses. Tiny shapes, eager calls.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seg_jax.models.layers import GroupNorm, UpConv, max_pool


def _randomise(layer, seed):
  """Gives every parameter of ``layer`` random values (scale 1 + N(0, 0.3^2) for norms)."""
  rng = np.random.default_rng(seed)
  for name in ("kernel", "scale", "bias"):
    p = getattr(layer, name, None)
    if p is not None:
      value = rng.standard_normal(p.shape) * 0.3 + (1.0 if name == "scale" else 0.0)
      p[...] = jnp.asarray(value, p.dtype)
  return layer


def _numpy_params(layer):
  return {k: np.asarray(v, np.float64) for k, v in nnx.to_pure_dict(nnx.state(layer)).items()}


def numpy_group_norm(x, scale, bias, groups, eps):
  """Wu and He's GroupNorm: per example and group, (x - mean) / sqrt(var + eps), then affine."""
  n, c = x.shape[0], x.shape[-1]
  g = x.reshape(n, -1, groups, c // groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = g.var(axis=(1, 3), keepdims=True)
  y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
  return y * scale + bias


def numpy_up_conv(x, kernel, bias):
  """Transposed convolution with stride == kernel size k, 'VALID', in flax's convention:
  output position s * k + r (per axis) is x[s] @ kernel[k - 1 - r] + bias."""
  d = x.ndim - 2
  k = kernel.shape[:d]
  spatial = tuple(s * w for s, w in zip(x.shape[1:-1], k, strict=True))
  out = np.zeros((x.shape[0], *spatial, kernel.shape[-1]))
  for s in itertools.product(*(range(n) for n in x.shape[1:-1])):
    for r in itertools.product(*(range(w) for w in k)):
      flipped = tuple(w - 1 - ri for w, ri in zip(k, r, strict=True))
      pos = tuple(si * w + ri for si, w, ri in zip(s, k, r, strict=True))
      out[(slice(None), *pos)] = x[(slice(None), *s)] @ kernel[flipped]
  return out + bias


SHAPES = [(2, 6, 8), (2, 4, 6, 8), (1, 2, 4, 2, 8)]


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_group_norm_equals_the_formula_and_flax(shape):
  x = np.random.default_rng(0).standard_normal(shape) * 2 + 0.5
  ours = _randomise(GroupNorm(8, num_groups=4, rngs=nnx.Rngs(0)), 1)
  flax_gn = _randomise(nnx.GroupNorm(8, num_groups=4, rngs=nnx.Rngs(0)), 1)
  p = _numpy_params(ours)
  want = numpy_group_norm(x, p["scale"], p["bias"], 4, 1e-6)
  got = ours(jnp.asarray(x, jnp.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, flax_gn(jnp.asarray(x, jnp.float32)), rtol=1e-5, atol=1e-5)

  def loss(layer, x):
    return jnp.sum(jnp.sin(layer(x)))

  g_ours = nnx.grad(loss, argnums=(0, 1))(ours, jnp.asarray(x, jnp.float32))
  g_flax = nnx.grad(loss, argnums=(0, 1))(flax_gn, jnp.asarray(x, jnp.float32))
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_flax), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # bfloat16 compute: bfloat16 output, statistics in float32 (close to the float64 values).
  low = GroupNorm(8, num_groups=4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  nnx.update(low, nnx.state(ours))
  y = low(jnp.asarray(x, jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float64), want, atol=0.1)


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_up_conv_equals_the_formula_and_flax(shape):
  d = len(shape) - 2
  x = np.random.default_rng(0).standard_normal(shape)
  kw = dict(kernel_size=(2,) * d, strides=(2,) * d, padding="VALID", rngs=nnx.Rngs(0))
  ours = _randomise(UpConv(8, 3, **kw), 1)
  flax_up = _randomise(nnx.ConvTranspose(8, 3, **kw), 1)
  p = _numpy_params(ours)
  got = ours(jnp.asarray(x, jnp.float32))
  assert got.shape == (shape[0], *(2 * s for s in shape[1:-1]), 3)
  np.testing.assert_allclose(got, numpy_up_conv(x, p["kernel"], p["bias"]), atol=1e-5)
  np.testing.assert_allclose(got, flax_up(jnp.asarray(x, jnp.float32)), atol=1e-5)

  def loss(layer, x):
    return jnp.sum(jnp.sin(layer(x)))

  g_ours = nnx.grad(loss, argnums=(0, 1))(ours, jnp.asarray(x, jnp.float32))
  g_flax = nnx.grad(loss, argnums=(0, 1))(flax_up, jnp.asarray(x, jnp.float32))
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_flax), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # A stride-3 kernel and no bias follow the same formula.
  odd = _randomise(
    UpConv(8, 2, (3,) * d, strides=(3,) * d, padding="VALID", use_bias=False, rngs=nnx.Rngs(0)), 2
  )
  want = numpy_up_conv(x, _numpy_params(odd)["kernel"], 0.0)
  np.testing.assert_allclose(odd(jnp.asarray(x, jnp.float32)), want, atol=1e-5)


def test_parameter_trees_are_flaxs():
  """Same variable names, shapes and initial values as the flax layers (checkpoints load)."""
  pairs = [
    (
      GroupNorm(8, num_groups=2, rngs=nnx.Rngs(3)),
      nnx.GroupNorm(8, num_groups=2, rngs=nnx.Rngs(3)),
    ),
    (
      UpConv(4, 2, (2, 2), strides=(2, 2), padding="VALID", rngs=nnx.Rngs(3)),
      nnx.ConvTranspose(4, 2, (2, 2), strides=(2, 2), padding="VALID", rngs=nnx.Rngs(3)),
    ),
  ]
  for ours, theirs in pairs:
    a, b = nnx.to_pure_dict(nnx.state(ours)), nnx.to_pure_dict(nnx.state(theirs))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_array_equal(u, v)


def test_unsupported_options_raise_clear_errors():
  with pytest.raises(ValueError, match="strides == kernel_size"):
    UpConv(4, 2, (2, 2), strides=(1, 1), padding="VALID", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="padding='VALID'"):
    UpConv(4, 2, (2, 2), strides=(2, 2), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="kernel_dilation"):
    UpConv(4, 2, (2,), strides=(2,), padding="VALID", kernel_dilation=(2,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="reduction_axes"):
    GroupNorm(8, num_groups=2, reduction_axes=(1, -1), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="use_bias=False"):
    GroupNorm(8, num_groups=2, use_bias=False, rngs=nnx.Rngs(0))
  gn = GroupNorm(8, num_groups=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\(batch, \.\.\., 8\).*\(2, 4, 6\)"):
    gn(jnp.zeros((2, 4, 6)))
  with pytest.raises(ValueError, match="mask"):
    gn(jnp.zeros((2, 4, 8)), mask=jnp.ones((2, 4, 8), bool))
  up = UpConv(4, 2, (2, 2), strides=(2, 2), padding="VALID", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"2 spatial axes, 4.*\(2, 4, 4\)"):
    up(jnp.zeros((2, 4, 4)))


def numpy_max_pool(x, window):
  """Max over each non-overlapping window, by loops over the output positions."""
  out_shape = tuple(s // w for s, w in zip(x.shape[1:-1], window, strict=True))
  out = np.empty((x.shape[0], *out_shape, x.shape[-1]))
  for pos in itertools.product(*(range(n) for n in out_shape)):
    index = (slice(p * w, (p + 1) * w) for p, w in zip(pos, window, strict=True))
    block = x[(slice(None), *index)]
    out[(slice(None), *pos)] = block.reshape(x.shape[0], -1, x.shape[-1]).max(axis=1)
  return out


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_max_pool_equals_the_formula_and_flax(shape):
  d = len(shape) - 2
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  window = (2,) * d
  got = max_pool(jnp.asarray(x), window)
  np.testing.assert_array_equal(got, numpy_max_pool(x, window))
  np.testing.assert_array_equal(got, nnx.max_pool(jnp.asarray(x), window, strides=window))
  # Without ties the gradient is reduce_window's: 1 at each window's maximum, 0 elsewhere.
  weights = np.random.default_rng(1).standard_normal(got.shape).astype(np.float32)
  grad = jax.grad(lambda x: jnp.sum(max_pool(x, window) * weights))(jnp.asarray(x))
  flax_grad = jax.grad(lambda x: jnp.sum(nnx.max_pool(x, window, strides=window) * weights))(
    jnp.asarray(x)
  )
  np.testing.assert_array_equal(grad, flax_grad)
  # Ties (a window of zeros, as after a ReLU) share the gradient equally.
  zeros = jnp.zeros((1,) + (2,) * d + (1,))
  tied = jax.grad(lambda x: jnp.sum(max_pool(x, window)))(zeros)
  np.testing.assert_allclose(tied, np.full(zeros.shape, 0.5**d))
  with pytest.raises(ValueError, match=r"window \(2, 2\).*\(1, 3, 4, 1\)"):
    max_pool(jnp.zeros((1, 3, 4, 1)), (2, 2))
