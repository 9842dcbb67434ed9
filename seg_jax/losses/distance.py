r"""Exact Euclidean distance transforms in JAX, and the distance maps of the boundary losses.

:func:`distance_transform_edt` is an exact, jittable Euclidean distance transform for batches of
1-3D images (the JAX counterpart of ``scipy.ndimage.distance_transform_edt``).
:func:`signed_distance_map` (Kervadec's boundary loss) and :func:`boundary_distance_map`
(Karimi's Hausdorff loss) build the per-class maps the losses in :mod:`seg_jax.losses.boundary`
use from it.

Algorithm. The squared distance transform is separable (Saito & Toriwaki 1994; Felzenszwalb &
Huttenlocher 2012): with ``f_0 = 0`` on background and ``+inf`` on foreground pixels, one pass per
spatial axis ``k`` (spacing ``s_k``) computes

.. math:: f_k(\ldots, i, \ldots) = \min_j \; f_{k-1}(\ldots, j, \ldots) + s_k^2 (i - j)^2,

and the distance is :math:`\sqrt{f_d}`. The first pass (last spatial axis, where :math:`f_0` is 0
or inf) is the distance to the nearest background pixel of the line, from a running max/min of
background indices: :math:`O(N \log n)` work for ``N`` pixels. Each further pass takes the
offsets ``k = |i - j|`` in increasing order, as ``min(f(i - k), f(i + k)) + s^2 k^2`` on two
shifted copies of the whole array (contiguous slices along any axis: no transposes, no
``n x n`` candidate array), and stops as soon as ``s^2 k^2`` reaches every pixel's current value,
since no larger offset can lower it. A pass thus costs :math:`O(N \min(n_k, D/s_k))`, ``D``
the largest distance it finds in its group of images (over the axes done so far), and
:math:`O(N n_k)` at worst (an image whose background is a single far corner); memory is
:math:`O(N)` (the padded array is 3x the input along one axis). On CPU the batch is transformed
in small groups of images, one after another, so that each loop works in cache and stops at its
own group's largest distance. Typical segmentation masks have ``D`` of a few tens of pixels. On
the project's (busy) 2-core CPU: ~25-35 ms at ``(8, 256, 256)`` for smooth blob masks, ~60 ms
for random masks, ~160-200 ms in the worst case; ~25-70 ms at ``(2, 64, 64, 64)`` (worst case
~110-180 ms). The exact lower-envelope algorithm of Felzenszwalb & Huttenlocher is ``O(N)`` per
pass but needs a data-dependent stack per line that XLA would run one step at a time; a one-shot
``min`` over all ``n x n`` candidates is fast only where XLA's CPU backend fuses it into a
vectorised reduction (without its YNN fusion it took over 1 s per pass at ``(8, 256, 256)``).
For unit spacing every squared distance is an integer below ``2**24`` (axis lengths up to
~4096), so float32 holds it exactly and the result equals scipy's up to the float32 rounding of
the final square root; with a spacing the sums of squares carry float32 rounding (relative error
~1e-7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _spatial_sampling(sampling, ndim: int, *, fn: str) -> tuple[float, ...]:
  """Checks ``sampling`` (None, a positive number, or one positive number per spatial dim)."""
  if sampling is None:
    return (1.0,) * ndim
  try:
    arr = np.asarray(sampling, np.float64)
  except (TypeError, ValueError, jax.errors.TracerArrayConversionError) as e:
    raise TypeError(
      f"{fn}: sampling must be concrete Python/NumPy numbers (the voxel spacing is static), "
      f"got {sampling!r}."
    ) from e
  if arr.ndim == 0:
    arr = np.full((ndim,), float(arr))
  if arr.shape != (ndim,):
    raise ValueError(
      f"{fn}: sampling must be a number or have one value per spatial dim ({ndim}), got "
      f"{sampling!r} (shape {arr.shape})."
    )
  if not np.all(np.isfinite(arr) & (arr > 0)):
    raise ValueError(f"{fn}: sampling values must be finite and > 0, got {sampling!r}.")
  return tuple(float(v) for v in arr)


def _line_distance(fg: jax.Array, axis: int, spacing: float) -> jax.Array:
  """Squared distance to the nearest background pixel of the same line along ``axis``, exact.

  The first separable pass, where the input is 0 / inf, in ``O(n log n)`` work per line: the
  nearest background pixel on each side comes from a running max / min of background indices.
  Lines without background get ``+inf``.
  """
  n = fg.shape[axis]
  idx = jax.lax.broadcasted_iota(jnp.int32, fg.shape, axis)
  before = jax.lax.cummax(jnp.where(fg, -2 * n, idx), axis=axis)
  after = jax.lax.cummin(jnp.where(fg, 2 * n, idx), axis=axis, reverse=True)
  steps = jnp.minimum(idx - before, after - idx)  # > n when the line has no background
  d = steps.astype(jnp.float32) * jnp.float32(spacing)
  return jnp.where(steps <= n, d * d, jnp.float32(jnp.inf))


def _parabola_pass(f: jax.Array, axis: int, spacing: float) -> jax.Array:
  """``out[.., i, ..] = min_j f[.., j, ..] + (spacing * (i - j))**2`` along ``axis``, exactly.

  Offsets ``k = |i - j|`` are taken in increasing order, each as two shifted copies of ``f``
  (contiguous slices, whatever the axis: no transpose); the loop stops once ``(k * spacing)**2``
  reaches every pixel's current value (no larger offset can lower it) among lines that hold a
  finite value, so it runs ``min(n, max distance / spacing + 1)`` steps.
  """
  n = f.shape[axis]
  if n == 1:
    return f
  pad = [(0, 0)] * f.ndim
  pad[axis] = (n - 1, n - 1)
  padded = jnp.pad(f, pad, constant_values=jnp.inf)
  reachable = jnp.isfinite(f).any(axis=axis, keepdims=True)  # lines with any finite candidate
  step = jnp.float32(spacing)

  def offset_cost(k):
    d = k.astype(jnp.float32) * step
    return d * d

  def not_done(state):
    k, out = state
    return (k < n) & jnp.any(reachable & (out > offset_cost(k)))

  def relax(state):
    k, out = state
    after = jax.lax.dynamic_slice_in_dim(padded, n - 1 + k, n, axis)  # f[i + k]
    before = jax.lax.dynamic_slice_in_dim(padded, n - 1 - k, n, axis)  # f[i - k]
    return k + 1, jnp.minimum(out, jnp.minimum(after, before) + offset_cost(k))

  return jax.lax.while_loop(not_done, relax, (jnp.int32(1), f))[1]


def distance_transform_edt(mask: jax.Array, *, sampling=None) -> jax.Array:
  r"""Exact Euclidean distance transform of a batch of 1-3D images, in JAX.

  For every pixel :math:`x` of each image, the distance to the nearest background (zero) pixel of
  the same image:

  .. math:: D(x) = \min_{y:\, \mathrm{mask}(y) = 0} \sqrt{\textstyle\sum_k s_k^2 (x_k - y_k)^2},

  so background pixels get 0 and foreground (nonzero) pixels their distance to the background, as
  ``scipy.ndimage.distance_transform_edt`` computes for one image. Jittable and vmappable; not
  differentiable (the input is a boolean mask; the output is constant under its gradient).

  Algorithm: exact separable min over squared distances along each spatial axis, stopping each
  pass once no farther candidate can help: ``O(N (log n_d + sum_{k<d} min(n_k, D / s_k)))`` time
  for ``N`` pixels, axis lengths ``n_k`` and largest distance ``D``, ``O(N)`` memory (see the
  module docstring). Exact for unit spacing up to float32 rounding of the square root.

  Convention where scipy differs: an image with no zero pixel has no background to measure
  against, and every pixel of it gets ``+inf`` (the distance to the empty set). scipy instead
  returns the distance to a phantom background pixel just outside the image (an artefact of its
  algorithm). The losses never see this ``inf``: :func:`signed_distance_map` and
  :func:`boundary_distance_map` define their maps as 0 for images without a boundary.

  Args:
    mask: ``(batch, *spatial)`` array with 1, 2 or 3 spatial dims; the leading axis is always
      the batch (pass ``mask[None]`` for a single image). Nonzero (True) entries are foreground,
      whose distance is measured; zero entries are background. Any dtype.
    sampling: voxel spacing along the spatial axes: ``None`` (1 everywhere), a positive number
      (isotropic), or one positive number per spatial dim, like scipy's ``sampling``. Static
      (Python or NumPy numbers).

  Returns:
    float32 ``(batch, *spatial)`` distances (``+inf`` throughout an image with no zero pixel).

  Raises:
    ValueError: ``mask`` has not 2-4 dims or has an empty dim; bad ``sampling``.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import distance_transform_edt
    >>> m = jnp.array([[0, 1, 1, 1, 0, 1]], bool)
    >>> distance_transform_edt(m).tolist()
    [[0.0, 1.0, 2.0, 1.0, 0.0, 1.0]]
  """
  fn = "distance_transform_edt"
  shape = tuple(np.shape(mask))
  if not 2 <= len(shape) <= 4:
    raise ValueError(
      f"{fn}: mask must be (batch, *spatial) with 1-3 spatial dims (rank 2-4), got shape "
      f"{shape} (rank {len(shape)}); add a leading batch axis for a single image (mask[None])."
    )
  if min(shape) == 0:
    raise ValueError(f"{fn}: mask has an empty dimension, shape {shape}.")
  spacing = _spatial_sampling(sampling, len(shape) - 1, fn=fn)
  mask = jnp.asarray(mask)
  fg = mask if mask.dtype == jnp.bool_ else mask != 0
  return jax.lax.stop_gradient(jnp.sqrt(_squared_edt(fg, range(1, len(shape)), spacing)))


# On CPU, images are transformed in groups of at most this many pixels (256 KiB of float32; one
# image at a time if larger), one group after another: each pass's loop then works in cache and
# stops at its own group's largest distance. Measured on 2 CPU cores, the signed maps at
# (8, 256, 256, 3) take ~0.15-0.3 s this way against ~0.6 s in one loop over the whole batch.
# Accelerators take the whole batch at once.
_CPU_GROUP_PIXELS = 2**16
_ACCELERATOR_GROUP_PIXELS = 2**26


def _squared_edt(fg: jax.Array, axes, spacing) -> jax.Array:
  """Squared EDT of boolean ``fg`` over the spatial ``axes`` (axis 0 and others are batch axes)."""
  axes = tuple(axes)
  batch = fg.shape[0]
  pixels = max(1, int(np.prod(fg.shape[1:])))
  target = _CPU_GROUP_PIXELS if jax.default_backend() == "cpu" else _ACCELERATOR_GROUP_PIXELS
  group = max(1, min(batch, target // pixels))

  def transform(block):
    sq = _line_distance(block, axes[-1], spacing[-1])
    for axis, step in zip(axes[:-1], spacing[:-1], strict=True):
      sq = _parabola_pass(sq, axis, step)
    return sq

  if group == batch:
    return transform(fg)
  groups = -(-batch // group)
  pad = [(0, groups * group - batch)] + [(0, 0)] * (fg.ndim - 1)
  blocks = jnp.pad(fg, pad).reshape((groups, group, *fg.shape[1:]))  # padding: background
  out = jax.lax.map(transform, blocks)
  return out.reshape((groups * group, *fg.shape[1:]))[:batch]


def _class_masks(masks, *, fn: str) -> jax.Array:
  """Checks ``(batch, *spatial, channels)`` class masks and returns them as booleans."""
  shape = tuple(np.shape(masks))
  if not 3 <= len(shape) <= 5:
    raise ValueError(
      f"{fn}: masks must be (batch, *spatial, channels) with 1-3 spatial dims (rank 3-5), got "
      f"shape {shape} (rank {len(shape)})."
    )
  if min(shape) == 0:
    raise ValueError(f"{fn}: masks has an empty dimension, shape {shape}.")
  m = jnp.asarray(masks)
  return m if m.dtype == jnp.bool_ else m > 0.5


def _inside_outside_edt(pos: jax.Array, spacing) -> tuple[jax.Array, jax.Array, jax.Array]:
  """EDTs of a ``(batch, *spatial, C)`` boolean mask and of its complement, in one call.

  Returns ``(d_in, d_out, has_boundary)``: ``d_in`` is each inside pixel's distance to the
  outside, ``d_out`` each outside pixel's distance to the inside (0 elsewhere; +inf where the
  class or its complement is empty), and ``has_boundary`` ``(batch, 1.., C)`` is True where the
  class is neither empty nor the whole image.
  """
  axes = tuple(range(1, pos.ndim - 1))
  both = jnp.sqrt(_squared_edt(jnp.concatenate([pos, ~pos]), axes, spacing))
  d_in, d_out = both[: pos.shape[0]], both[pos.shape[0] :]
  has_boundary = pos.any(axes, keepdims=True) & (~pos).any(axes, keepdims=True)
  return d_in, d_out, has_boundary


def signed_distance_map(masks: jax.Array, *, sampling=None) -> jax.Array:
  r"""Signed distance to each class boundary, as Kervadec et al.'s boundary loss uses it.

  For each image and class ``c`` with region :math:`G` (pixels where ``masks[..., c] > 0.5``),

  .. math::
     \phi_G(x) = \begin{cases} D_{G}(x) & x \notin G \\ -(D_{\bar G}(x) - h) & x \in G \end{cases}

  where :math:`D_G(x)` is the Euclidean distance from :math:`x` to the nearest pixel of
  :math:`G`, :math:`D_{\bar G}(x)` the distance to the nearest pixel outside :math:`G`, and
  ``h = min(sampling)`` (1 for unit spacing). So the map is positive outside, ``h`` on the outer
  neighbours of the object along the finest axis, 0 on the object's inner boundary pixels and
  negative deeper inside: the zero level set runs through the object's boundary pixels.

  Conventions: for unit spacing this is exactly ``one_hot2dist`` of the reference implementation
  (``dist(neg) * neg - (dist(pos) - 1) * pos``). With a spacing the reference still subtracts 1
  (in physical units, which makes inner boundary pixels positive when the spacing is below 1); we
  subtract the smallest spacing instead, so the map scales with an isotropic spacing. A class that
  is absent from the image, or fills all of it, has no boundary: its map is 0 everywhere (the
  reference leaves absent classes at 0; a full class would give scipy's phantom-pixel values).

  Args:
    masks: ``(batch, *spatial, channels)`` class masks (one-hot labels, booleans or soft labels
      thresholded at 0.5), 1-3 spatial dims.
    sampling: voxel spacing, as in :func:`distance_transform_edt`.

  Returns:
    float32 map of ``masks.shape`` (no gradient).

  References:
    Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed, "Boundary loss for highly
    unbalanced segmentation", MIDL 2019 and Medical Image Analysis 67, 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses import signed_distance_map
    >>> g = jnp.array([[0, 0, 1, 1, 1, 0]], jnp.float32)[..., None]
    >>> signed_distance_map(g)[..., 0].tolist()
    [[2.0, 1.0, 0.0, -1.0, 0.0, 1.0]]
  """
  fn = "signed_distance_map"
  pos = _class_masks(masks, fn=fn)
  spacing = _spatial_sampling(sampling, pos.ndim - 2, fn=fn)
  d_in, d_out, has_boundary = _inside_outside_edt(pos, spacing)
  h = jnp.float32(min(spacing))
  phi = jnp.where(pos, h - d_in, d_out)
  return jax.lax.stop_gradient(jnp.where(has_boundary, phi, 0.0))


def boundary_distance_map(masks: jax.Array, *, sampling=None) -> jax.Array:
  r"""Unsigned distance to each class boundary, as Karimi & Salcudean's Hausdorff loss uses it.

  For each image and class with region :math:`G` (pixels where ``masks[..., c] > 0.5``),
  :math:`d_G(x) = D_{\bar G}(x)` inside :math:`G` and :math:`D_G(x)` outside (the distance to the
  nearest pixel of the other side), i.e. ``edt(fg) + edt(bg)`` as in the public implementations
  of the loss. It is at least the smallest spacing everywhere when the class has a boundary. A
  class absent from the image or filling all of it has no boundary: its map is 0 (MONAI's
  ``HausdorffDTLoss`` convention).

  Args:
    masks: ``(batch, *spatial, channels)`` class masks (booleans, one-hot, or soft labels /
      probabilities thresholded at 0.5), 1-3 spatial dims.
    sampling: voxel spacing, as in :func:`distance_transform_edt`.

  Returns:
    float32 map of ``masks.shape`` (no gradient).

  References:
    Karimi, Salcudean, "Reducing the Hausdorff distance in medical image segmentation with
    convolutional neural networks", IEEE TMI 39(2), 2020 (arXiv 2019).

  Example:
    >>> import jax.numpy as jnp
    >>> from seg_jax.losses.distance import boundary_distance_map
    >>> g = jnp.array([[0, 0, 1, 1, 1, 0]], jnp.float32)[..., None]
    >>> boundary_distance_map(g)[..., 0].tolist()
    [[2.0, 1.0, 1.0, 2.0, 1.0, 1.0]]
  """
  fn = "boundary_distance_map"
  pos = _class_masks(masks, fn=fn)
  spacing = _spatial_sampling(sampling, pos.ndim - 2, fn=fn)
  d_in, d_out, has_boundary = _inside_outside_edt(pos, spacing)
  d = jnp.where(pos, d_in, d_out)
  return jax.lax.stop_gradient(jnp.where(has_boundary, d, 0.0))
