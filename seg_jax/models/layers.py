r"""The U-Net's GroupNorm, up-convolution and max-pooling, written for speed.

``GroupNorm`` and ``UpConv`` are subclasses of the Flax layer they replace, with the same
constructor, the same parameters (names, shapes, initialisers) and the same function of them;
only ``__call__`` differs. Checkpoints and parameter trees are those of ``nnx.GroupNorm`` and
``nnx.ConvTranspose``. They exist because XLA compiles the generic forms into slow backward
passes on CPU (measured in ``benchmarks/train_variants.py``, see BENCHMARKS.md "Training: where
the JAX time goes"): the transposed convolution's gradient was the costliest layer of the train
step, and GroupNorm's normalise-then-scale form costs more than one multiply-add.
:func:`max_pool` is ``nnx.max_pool`` for non-overlapping windows as a reshape and a max.
"""

from __future__ import annotations

import math
import string

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


class GroupNorm(nnx.GroupNorm):
  r"""``nnx.GroupNorm`` over all spatial axes, computed as a per-channel affine map.

  For an example :math:`n` and a group :math:`g` of channels, with :math:`m` the number of
  values in the group (spatial size times channels per group),

  .. math::

    \mu_{ng} = \frac{1}{m} \sum x, \qquad
    \sigma^2_{ng} = \max\Big(0, \frac{1}{m} \sum x^2 - \mu_{ng}^2\Big), \qquad
    y_{n\ldots c} = x_{n\ldots c}\, a_{nc} + b_{nc},

  with :math:`a_{nc} = \gamma_c / \sqrt{\sigma^2_{ng(c)} + \epsilon}` and
  :math:`b_{nc} = \beta_c - \mu_{ng(c)} a_{nc}`: Flax's GroupNorm (Wu and He, 2018) with its
  default ``use_fast_variance=True``, the same function of the same parameters. The statistics
  come from per-channel sums of :math:`x` and :math:`x^2` over the spatial axes, and the output
  is one multiply-add per value, so forward and backward read the activations fewer times than
  the subtract-normalise-scale form. Statistics are computed in at least float32, the output is
  in ``dtype``.

  Supported: the defaults of ``nnx.GroupNorm`` for ``reduction_axes`` (all but the batch axis),
  ``axis_name`` (none), ``use_scale`` and ``use_bias``; ``mask`` is not. Anything else is a
  ``ValueError`` at construction or call.
  """

  def __init__(self, num_features: int, *args, **kwargs):
    for name in ("reduction_axes", "axis_name", "axis_index_groups"):
      if kwargs.get(name) is not None:
        raise ValueError(f"GroupNorm: {name} is not supported, got {kwargs[name]!r}.")
    for name in ("use_scale", "use_bias", "use_fast_variance"):
      if kwargs.get(name, True) is not True:
        raise ValueError(f"GroupNorm: {name}=False is not supported.")
    super().__init__(num_features, *args, **kwargs)

  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    if mask is not None:
      raise ValueError("GroupNorm: mask is not supported.")
    channels = self.num_groups * self.group_size
    if x.ndim < 2 or x.shape[-1] != channels:
      raise ValueError(f"GroupNorm: input must be (batch, ..., {channels}), got shape {x.shape}.")
    x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]), dtype=self.dtype)
    stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
    n, c, g = x.shape[0], x.shape[-1], self.num_groups
    spatial = tuple(range(1, x.ndim - 1))
    x32 = x.astype(stat_dtype)
    count = self.group_size * math.prod(x.shape[1:-1])
    s1 = jnp.sum(x32, axis=spatial).reshape(n, g, c // g).sum(-1)
    s2 = jnp.sum(jnp.square(x32), axis=spatial).reshape(n, g, c // g).sum(-1)
    mean = s1 / count
    var = jnp.maximum(s2 / count - jnp.square(mean), 0.0)
    inv = jnp.repeat(lax.rsqrt(var + self.epsilon), self.group_size, axis=1)  # (n, c)
    a = inv * scale.astype(stat_dtype)
    b = bias.astype(stat_dtype) - jnp.repeat(mean, self.group_size, axis=1) * a
    shape = (n,) + (1,) * len(spatial) + (c,)
    y = x32 * a.reshape(shape) + b.reshape(shape)
    return y.astype(self.dtype or x.dtype)


class UpConv(nnx.ConvTranspose):
  r"""``nnx.ConvTranspose`` with ``strides == kernel_size`` and ``'VALID'`` padding, as one
  matrix product and a depth-to-space reshape.

  With stride equal to the kernel size the windows do not overlap: output position
  :math:`s \cdot k + r` (per spatial axis, :math:`0 \le r < k`) is
  :math:`y = x_s^\top \tilde W_r + b`, where :math:`\tilde W` is the kernel with its spatial
  axes reversed (``lax.conv_transpose``, which Flax calls with ``transpose_kernel=False``, flips
  them). That is one ``einsum`` of the input ``(n, *s, cin)`` with the kernel
  ``(*k, cin, cout)`` into ``(n, s_1, k_1, ..., cout)``, reshaped to ``(n, s_1 k_1, ...,
  cout)``: the same function of the same parameters as the Flax layer, whose CPU gradient XLA
  compiles far more slowly than a matrix product's.

  Other strides or paddings, a kernel dilation, a mask or ``transpose_kernel=True`` are a
  ``ValueError`` at construction.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size, **kwargs):
    kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    strides = kwargs.get("strides")
    strides = (strides,) if isinstance(strides, int) else strides
    strides = tuple(strides) if strides is not None else None
    if strides != kernel_size or kwargs.get("padding") != "VALID":
      raise ValueError(
        f"UpConv: needs strides == kernel_size and padding='VALID', got kernel_size="
        f"{kernel_size}, strides={strides}, padding={kwargs.get('padding')!r}."
      )
    for name in ("kernel_dilation", "mask"):
      if kwargs.get(name) is not None:
        raise ValueError(f"UpConv: {name} is not supported, got {kwargs[name]!r}.")
    if kwargs.get("transpose_kernel", False):
      raise ValueError("UpConv: transpose_kernel=True is not supported.")
    super().__init__(in_features, out_features, kernel_size, **kwargs)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size = tuple(self.kernel_size)
    d = len(kernel_size)
    if x.ndim != d + 2 or x.shape[-1] != self.in_features:
      raise ValueError(
        f"UpConv: input must be (batch, {d} spatial axes, {self.in_features}), got shape {x.shape}."
      )
    bias = self.bias[...] if self.use_bias else None
    x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
    kernel = jnp.flip(kernel, axis=tuple(range(d)))
    s, k = string.ascii_lowercase[:d], string.ascii_lowercase[d : 2 * d]
    out = "".join(a + b for a, b in zip(s, k, strict=True))
    y = jnp.einsum(
      f"N{s}I,{k}IO->N{out}O",
      x,
      kernel,
      precision=self.precision,
      preferred_element_type=self.preferred_element_type,
    )
    spatial = tuple(a * b for a, b in zip(x.shape[1:-1], kernel_size, strict=True))
    y = y.reshape((x.shape[0], *spatial, self.out_features))
    return y if bias is None else y + bias


def max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  r"""Max-pooling of ``(batch, *spatial, channels)`` with stride equal to the window, 'VALID'.

  The same values as ``nnx.max_pool(x, window, strides=window)``, computed as a reshape of each
  spatial axis into ``(size // w, w)`` and a max over the window axes instead of a
  ``reduce_window``, whose gradient (``select_and_scatter``) XLA compiles into a slower
  backward pass. Convention where they differ: the gradient of a window whose maximum is tied
  goes to the tied positions in equal shares (``jnp.max``'s rule) instead of all to one of
  them. In the U-Net the pooled activations come out of a ReLU, so ties are zeros, whose
  gradient the ReLU sets to 0 either way; ties among positive floats are not seen in practice.

  Args:
    x: input ``(batch, *spatial, channels)``; every spatial size divisible by its window.
    window: window (and stride) per spatial axis.

  Returns:
    ``(batch, *(size // w), channels)``.

  Raises:
    ValueError: if ``window`` does not have one entry per spatial axis or does not divide the
    spatial sizes.
  """
  window = tuple(window)
  spatial = x.shape[1:-1]
  if len(window) != len(spatial) or any(s % w for s, w in zip(spatial, window, strict=True)):
    raise ValueError(
      f"max_pool: window {window} must have one entry per spatial axis of x and divide its "
      f"sizes; got x of shape {x.shape}."
    )
  shape = [x.shape[0]]
  for size, w in zip(spatial, window, strict=True):
    shape += [size // w, w]
  y = x.reshape(*shape, x.shape[-1])
  return y.max(axis=tuple(range(2, 2 * len(window) + 1, 2)))
