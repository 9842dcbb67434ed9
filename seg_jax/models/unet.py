r"""U-Net (Ronneberger et al., 2015) in Flax NNX, for 1, 2 or 3 spatial dimensions.

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

The layers are Flax's but for speed: GroupNorm, the up-convolution and the max-pooling are
``seg_jax.models.layers``' (the same functions of the same parameters, faster backward passes;
see that module).
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

import jax
import jax.numpy as jnp
from flax import nnx

from seg_jax.models.layers import GroupNorm, UpConv, max_pool

NORMS = ("group", "instance", "batch", None)

# He initialisation, as in the paper (Gaussian, std sqrt(2 / fan_in)), for every convolution
# that feeds a ReLU.
_HE = nnx.initializers.he_normal()


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


def _norm_layer(norm, channels, *, num_groups, axis_name, dtype, param_dtype, rngs):
  common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
  if norm is None:
    return None
  if norm == "group":
    return GroupNorm(channels, num_groups=_group_count(channels, num_groups), **common)
  if norm == "instance":
    return nnx.InstanceNorm(channels, **common)
  return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, axis_name=axis_name, **common)


def _head(in_features, num_classes, *, spatial_dims, param_dtype, rngs):
  """The ``1 x ... x 1`` output convolution, computed in float32."""
  kernel = (1,) * spatial_dims
  return nnx.Conv(
    in_features, num_classes, kernel, dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs
  )


class ConvBlock(nnx.Module):
  r"""Two ``3 x ... x 3`` convolutions, each followed by the normalisation and a ReLU.

  Args:
    in_features: input channels.
    features: output channels of both convolutions.
    spatial_dims: number of spatial dimensions (1-3).
    norm: ``'group'``, ``'instance'``, ``'batch'`` or ``None`` (see :class:`UNet`).
    num_groups: GroupNorm groups (clipped to ``features``).
    axis_name: BatchNorm cross-device axis.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random streams for the initialisation (``params``).
  """

  def __init__(
    self,
    in_features: int,
    features: int,
    *,
    spatial_dims: int,
    norm: str | None = "group",
    num_groups: int = 8,
    axis_name: str | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.norm = norm
    for i, cin in enumerate((in_features, features)):
      conv = nnx.Conv(
        cin,
        features,
        (3,) * spatial_dims,
        padding="SAME",
        use_bias=norm is None,
        kernel_init=_HE,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
      )
      setattr(self, f"conv{i}", conv)
      layer = _norm_layer(
        norm,
        features,
        num_groups=num_groups,
        axis_name=axis_name,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
      )
      setattr(self, f"norm{i}", layer)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in range(2):
      x = getattr(self, f"conv{i}")(x)
      norm = getattr(self, f"norm{i}")
      if isinstance(norm, nnx.BatchNorm):
        x = norm(x, use_running_average=not train)
      elif norm is not None:
        x = norm(x)
      x = nnx.relu(x)
    return x


_CONFIG = (
  "in_features",
  "num_classes",
  "spatial_dims",
  "features",
  "depth",
  "norm",
  "num_groups",
  "axis_name",
  "dtype",
  "param_dtype",
  "deep_supervision",
)


class UNet(nnx.Module):
  r"""Ronneberger's U-Net for channels-last inputs ``(batch, *spatial, channels)``.

  Every kernel is built for ``spatial_dims`` (``3 x 3 x 3`` convolutions for volumes, ``3`` for
  signals). Level ``l`` (0 = full resolution) has ``features * 2**l`` channels; the bottleneck
  is level ``depth - 1``, so every spatial size must be divisible by ``2**(depth - 1)``.

  Args:
    in_features: input channels.
    num_classes: output channels of the head (use 1 for a binary problem trained with a
      sigmoid loss, ``C`` for a softmax over ``C`` classes).
    spatial_dims: number of spatial dimensions of the input, 1, 2 (default) or 3.
    features: channels at full resolution; they double at each level down.
    depth: number of resolution levels (``depth - 1`` poolings); ``depth=1`` is a single conv
      block and the head.
    norm: normalisation after each 3x3 convolution: ``'group'`` (GroupNorm, default),
      ``'instance'`` (``nnx.InstanceNorm``: per example and channel, with a learned scale and
      bias), ``'batch'`` (``nnx.BatchNorm``, momentum 0.9, epsilon 1e-5, running statistics in
      ``nnx.BatchStat`` variables, updated in place by ``__call__(..., train=True)``), or
      ``None`` / ``'none'`` (no normalisation: the paper's layers, convolutions with biases).
    num_groups: GroupNorm groups, clipped to the channel count of the layer (so
      ``features=4, num_groups=8`` uses 4 groups at level 0). A channel count not divisible by
      the clipped group count is an error.
    axis_name: for ``norm='batch'``: the mapped axis (e.g. ``'data'`` under ``jax.shard_map``)
      over which batch statistics are averaged, so they are those of the global batch. With it,
      ``__call__(..., train=True)`` must run inside that mapped axis; construction and
      ``train=False`` need no axis. Ignored by the other norms (they are per example).
    dtype: computation dtype (e.g. ``jnp.bfloat16``); normalisation statistics are reduced in
      float32 whatever it is.
    param_dtype: dtype of the parameters (keep float32 for mixed precision).
    deep_supervision: if true, also return a 1x1-conv head on every coarser decoder level.
    rngs: random streams for the initialisation (``nnx.Rngs(seed)``; the ``params`` stream).

  Returns (of ``__call__(x, *, train)``):
    float32 logits ``(batch, *spatial, num_classes)``: the head is computed in float32 from the
    last decoder features. With ``deep_supervision`` a tuple of ``depth - 1`` such logits (one
    for ``depth == 1``), finest first: full resolution, then ``1/2``, ``1/4``, ... of the input
    size, the first being the main output.

  Raises:
    ValueError: at construction, an unknown ``norm``, a GroupNorm group count that does not
    divide a level's channels, non-positive ``in_features``/``features``/``depth``/
    ``num_classes``/``num_groups`` or ``spatial_dims`` not 1-3; at call (trace) time, an input
    whose rank or channel count does not match, or a spatial size not divisible by
    ``2**(depth - 1)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = UNet(1, 3, features=8, depth=3, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 1)), train=False).shape
    (2, 32, 32, 3)
  """

  def __init__(
    self,
    in_features: int,
    num_classes: int,
    *,
    spatial_dims: int = 2,
    features: int = 32,
    depth: int = 4,
    norm: str | None = "group",
    num_groups: int = 8,
    axis_name: str | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    deep_supervision: bool = False,
    rngs: nnx.Rngs,
  ):
    config = dict(
      in_features=in_features,
      num_classes=num_classes,
      spatial_dims=spatial_dims,
      features=features,
      depth=depth,
      norm=norm,
      num_groups=num_groups,
      axis_name=axis_name,
      dtype=dtype,
      param_dtype=param_dtype,
      deep_supervision=deep_supervision,
    )
    for name in ("in_features", "num_classes", "features", "depth", "num_groups"):
      value = config[name]
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"UNet: {name} must be a positive int, got {value!r}.")
    if spatial_dims not in (1, 2, 3):
      raise ValueError(f"UNet: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
    norm = _canonical_norm(norm)
    if norm == "group":
      for level in range(depth):
        _group_count(features * 2**level, num_groups)
    # The constructor's arguments, as static attributes (``config`` gives them back).
    for name, value in config.items():
      setattr(self, name, value)
    block = dict(
      spatial_dims=spatial_dims,
      norm=norm,
      num_groups=num_groups,
      axis_name=axis_name,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    widths = [features * 2**level for level in range(depth)]
    for level, width in enumerate(widths):
      cin = widths[level - 1] if level else in_features
      setattr(self, f"down{level}", ConvBlock(cin, width, **block))
    window = (2,) * spatial_dims
    for level in reversed(range(depth - 1)):
      upconv = UpConv(
        widths[level + 1],
        widths[level],
        window,
        strides=window,
        padding="VALID",
        kernel_init=_HE,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
      )
      setattr(self, f"upconv{level}", upconv)
      setattr(self, f"up{level}", ConvBlock(2 * widths[level], widths[level], **block))

    head = dict(spatial_dims=spatial_dims, param_dtype=param_dtype, rngs=rngs)
    self.head = _head(features, num_classes, **head)
    if deep_supervision:
      for level in range(1, depth - 1):
        setattr(self, f"ds_head{level}", _head(widths[level], num_classes, **head))

  @property
  def config(self) -> dict[str, Any]:
    """The constructor's arguments but ``rngs``: ``UNet(**model.config, rngs=...)`` builds the
    same network with other initial values."""
    return {name: getattr(self, name) for name in _CONFIG}

  def _check(self, x: jax.Array) -> None:
    c = self.config
    rank = c["spatial_dims"] + 2
    if x.ndim != rank or x.shape[-1] != c["in_features"]:
      raise ValueError(
        f"UNet: input must be (batch, *spatial, channels) with spatial_dims={c['spatial_dims']} "
        f"(rank {rank}) and in_features={c['in_features']} channels, got shape "
        f"{tuple(x.shape)} (rank {x.ndim})."
      )
    factor = 2 ** (c["depth"] - 1)
    spatial = tuple(x.shape[1:-1])
    if any(s % factor for s in spatial):
      raise ValueError(
        f"UNet: every spatial size must be divisible by 2**(depth - 1) = {factor} for "
        f"depth={c['depth']}, got input shape {tuple(x.shape)} (spatial {spatial})."
      )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array | tuple[jax.Array, ...]:
    self._check(x)
    depth = self.depth
    window = (2,) * self.spatial_dims
    x = x.astype(self.dtype)

    skips = []
    for level in range(depth):
      if level:
        x = max_pool(x, window)
      x = getattr(self, f"down{level}")(x, train=train)
      skips.append(x)

    decoded = []  # coarsest first
    for level in reversed(range(depth - 1)):
      x = getattr(self, f"upconv{level}")(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = getattr(self, f"up{level}")(x, train=train)
      decoded.append(x)
    if not decoded:  # depth == 1
      decoded.append(x)

    logits = self.head(decoded[-1].astype(jnp.float32))
    if not self.deep_supervision:
      return logits
    extra = [
      getattr(self, f"ds_head{level}")(y.astype(jnp.float32))
      for level, y in zip(range(len(decoded) - 1, 0, -1), decoded[:-1], strict=True)
    ]
    return (logits, *reversed(extra))
