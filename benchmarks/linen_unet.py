r"""The former Linen U-Net of ``seg_jax.models`` (Ronneberger et al., 2015), kept as a reference.

``seg_jax.models.UNet`` is now a Flax NNX module with this network's topology; this file is the
Linen code it replaced, unchanged, kept only for ``benchmarks/train.py --api=linen,nnx`` (the
trainer's step on both, side by side) and ``tests/test_unet_linen_parity.py`` (same variables
and outputs). Nothing in ``seg_jax`` imports it. A Linen user of the current model wraps the NNX
module with ``flax.nnx.bridge.to_linen`` (see the README).

U-Net (Ronneberger et al., 2015) in Flax Linen, for 1, 2 or 3 spatial dimensions.

Topology, with ``F = features`` and ``L = depth`` resolution levels (level ``l`` has ``F * 2**l``
channels, the spatial size divided by ``2**l``):

.. code-block:: text

  x ─ block(F) ───────────────────────────────────── concat ─ block(F) ─ 1x1 head ─ logits
         └ maxpool ─ block(2F) ───────── concat ─ block(2F)  ┘ up-conv(F)
                        └ maxpool ─ ... ┘ up-conv(2F)
                                   └ maxpool ─ block(F * 2**(L-1))   (bottleneck)

* ``block(c)``: two ``3 x ... x 3`` convolutions with ``'SAME'`` padding, each followed by the
  normalisation and a ReLU: :math:`y = \mathrm{relu}(\mathrm{norm}(W * x + b))`.
* Down: max-pooling with window 2 and stride 2 on every spatial axis.
* Up: transposed convolution with kernel 2 and stride 2 that halves the channels ("up-conv
  2x2" in the paper), then concatenation with the encoder features of the same level (skip
  connection, encoder first) and a ``block``.
* Head: ``1 x ... x 1`` convolution to ``num_classes`` channels.

Differences from the paper, all standard: ``'SAME'`` padding instead of unpadded convolutions (so
the output has the input's spatial size and no cropping is needed), and an optional
normalisation layer after each 3x3 convolution (the paper has none; ``norm=None`` gives the
paper's layers exactly). A 3x3 convolution followed by a normalisation has no bias (the
normalisation's mean subtraction would cancel it); without normalisation it has one.

Parameter count of the classic configuration (``features=64, depth=5``, 2D, 1 input channel, 2
classes, ``norm=None``): 31,030,658, the figure quoted for the paper's network with padded
convolutions; ``tests/test_unet.py`` recomputes it from the layer formula.

References:
  O. Ronneberger, P. Fischer, T. Brox. "U-Net: Convolutional Networks for Biomedical Image
  Segmentation." MICCAI 2015, arXiv:1505.04597.
  Y. Wu, K. He. "Group Normalization." ECCV 2018, arXiv:1803.08494.
  Q. Dou et al. "3D deeply supervised network for automated segmentation of volumetric medical
  images." Medical Image Analysis 2017 (deep supervision of the decoder).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("group", "instance", "batch", None)

# He initialisation, as in the paper (Gaussian, std sqrt(2 / fan_in)), for every convolution
# that feeds a ReLU.
_HE = nn.initializers.he_normal()


def _canonical_norm(norm: str | None) -> str | None:
  if norm is None or (isinstance(norm, str) and norm.lower() == "none"):
    return None
  if norm not in NORMS:
    raise ValueError(f"UNet: unknown norm={norm!r}; valid: 'group', 'instance', 'batch', None.")
  return norm


def _group_count(channels: int, num_groups: int) -> int:
  """Groups for GroupNorm over ``channels``: ``num_groups`` clipped to ``channels``."""
  groups = min(num_groups, channels)
  if channels % groups:
    raise ValueError(
      f"UNet: norm='group' needs every level's channel count divisible by the group count, but "
      f"{channels} channels are not divisible by min(num_groups={num_groups}, {channels}) = "
      f"{groups}. Choose features (channels at level l are features * 2**l) divisible by "
      f"num_groups, or a num_groups that divides features."
    )
  return groups


class ConvBlock(nn.Module):
  r"""Two ``3 x ... x 3`` convolutions, each followed by the normalisation and a ReLU.

  Attributes:
    features: output channels of both convolutions.
    norm: ``'group'``, ``'instance'``, ``'batch'`` or ``None`` (see :class:`UNet`).
    num_groups: GroupNorm groups (clipped to ``features``).
    axis_name: BatchNorm cross-device axis.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  features: int
  norm: str | None = "group"
  num_groups: int = 8
  axis_name: str | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    spatial_dims = x.ndim - 2
    for i in range(2):
      x = nn.Conv(
        self.features,
        (3,) * spatial_dims,
        padding="SAME",
        use_bias=self.norm is None,
        kernel_init=_HE,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f"conv{i}",
      )(x)
      x = self._norm(f"norm{i}", train)(x)
      x = nn.relu(x)
    return x

  def _norm(self, name: str, train: bool):
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    if self.norm is None:
      return lambda y: y
    if self.norm == "group":
      return nn.GroupNorm(num_groups=_group_count(self.features, self.num_groups), **common)
    if self.norm == "instance":
      return nn.InstanceNorm(**common)
    if self.norm == "batch":
      return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=self.axis_name,
        **common,
      )
    raise ValueError(f"ConvBlock: unknown norm={self.norm!r}.")


class UNet(nn.Module):
  r"""Ronneberger's U-Net for channels-last inputs ``(batch, *spatial, channels)``.

  The number of spatial dimensions (1, 2 or 3) is taken from the input, and every kernel is
  built from it (``3 x 3 x 3`` convolutions for volumes, ``3`` for signals). Level ``l`` (0 =
  full resolution) has ``features * 2**l`` channels; the bottleneck is level ``depth - 1``, so
  every spatial size must be divisible by ``2**(depth - 1)``.

  Attributes:
    num_classes: output channels of the head (use 1 for a binary problem trained with a
      sigmoid loss, ``C`` for a softmax over ``C`` classes).
    features: channels at full resolution; they double at each level down.
    depth: number of resolution levels (``depth - 1`` poolings); ``depth=1`` is a single conv
      block and the head.
    norm: normalisation after each 3x3 convolution: ``'group'`` (GroupNorm, default),
      ``'instance'`` (``nn.InstanceNorm``: per example and channel, with a learned scale and
      bias), ``'batch'`` (``nn.BatchNorm``, momentum 0.9, epsilon 1e-5, statistics in the
      ``batch_stats`` collection, which must be mutable when ``train=True``), or ``None`` /
      ``'none'`` (no normalisation: the paper's layers, convolutions with biases).
    num_groups: GroupNorm groups, clipped to the channel count of the layer (so
      ``features=4, num_groups=8`` uses 4 groups at level 0). A channel count not divisible by
      the clipped group count is an error.
    axis_name: for ``norm='batch'``: the mapped axis (e.g. ``'data'`` under ``jax.shard_map``)
      over which batch statistics are averaged, so they are those of the global batch. With it,
      ``apply(..., train=True)`` must run inside that mapped axis; ``init`` and ``train=False``
      need no axis. Ignored by the other norms (they are per example).
    dtype: computation dtype (e.g. ``jnp.bfloat16``); normalisation statistics are reduced in
      float32 whatever it is.
    param_dtype: dtype of the parameters (keep float32 for mixed precision).
    deep_supervision: if true, also return a 1x1-conv head on every coarser decoder level.

  Returns (of ``__call__(x, *, train)``):
    float32 logits ``(batch, *spatial, num_classes)``: the head is computed in float32 from the
    last decoder features. With ``deep_supervision`` a tuple of ``depth - 1`` such logits (one
    for ``depth == 1``), finest first: full resolution, then ``1/2``, ``1/4``, ... of the input
    size, the first being the main output.

  Raises:
    ValueError (at trace time): input rank not 3-5, a spatial size not divisible by
    ``2**(depth - 1)``, an unknown ``norm``, a GroupNorm group count that does not divide a
    level's channels, or non-positive ``features``/``depth``/``num_classes``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = UNet(num_classes=3, features=8, depth=3)
    >>> x = jnp.zeros((2, 32, 32, 1))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(variables, x, train=False).shape
    (2, 32, 32, 3)
  """

  num_classes: int
  features: int = 32
  depth: int = 4
  norm: str | None = "group"
  num_groups: int = 8
  axis_name: str | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  deep_supervision: bool = False

  def _check(self, x: jax.Array) -> str | None:
    for name in ("num_classes", "features", "depth", "num_groups"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"UNet: {name} must be a positive int, got {value!r}.")
    norm = _canonical_norm(self.norm)
    if not 3 <= x.ndim <= 5:
      raise ValueError(
        f"UNet: input must be (batch, *spatial, channels) with 1-3 spatial dims (rank 3-5), "
        f"got shape {tuple(x.shape)} (rank {x.ndim})."
      )
    factor = 2 ** (self.depth - 1)
    spatial = tuple(x.shape[1:-1])
    if any(s % factor for s in spatial):
      raise ValueError(
        f"UNet: every spatial size must be divisible by 2**(depth - 1) = {factor} for "
        f"depth={self.depth}, got input shape {tuple(x.shape)} (spatial {spatial})."
      )
    if norm == "group":
      for level in range(self.depth):
        _group_count(self.features * 2**level, self.num_groups)
    return norm

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array | tuple[jax.Array, ...]:
    norm = self._check(x)
    spatial_dims = x.ndim - 2
    window = (2,) * spatial_dims
    block = dict(
      norm=norm,
      num_groups=self.num_groups,
      axis_name=self.axis_name,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    x = x.astype(self.dtype)

    skips = []
    for level in range(self.depth):
      if level:
        x = nn.max_pool(x, window, strides=window)
      x = ConvBlock(self.features * 2**level, name=f"down{level}", **block)(x, train=train)
      skips.append(x)

    decoded = []  # coarsest first
    for level in reversed(range(self.depth - 1)):
      x = nn.ConvTranspose(
        self.features * 2**level,
        window,
        strides=window,
        padding="VALID",
        kernel_init=_HE,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f"upconv{level}",
      )(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = ConvBlock(self.features * 2**level, name=f"up{level}", **block)(x, train=train)
      decoded.append(x)
    if not decoded:  # depth == 1
      decoded.append(x)

    def head(y, name):
      return nn.Conv(
        self.num_classes,
        (1,) * spatial_dims,
        dtype=jnp.float32,
        param_dtype=self.param_dtype,
        name=name,
      )(y.astype(jnp.float32))

    logits = head(decoded[-1], "head")
    if not self.deep_supervision:
      return logits
    extra = [
      head(y, f"ds_head{level}")
      for level, y in zip(range(len(decoded) - 1, 0, -1), decoded[:-1], strict=True)
    ]
    return (logits, *reversed(extra))
