r"""``SegDataset``: what a data source tells the trainer, and how one example is decoded.

Every data source (``synthetic_shapes``, ``image_folder``, catalogue sets) ends up as a
:class:`SegDataset`: random-access sources of raw tfds records per split, plus a ``decode``
function that turns a record into ``(image, label)`` NumPy arrays at the record's own size.
:meth:`SegDataset.example` decodes, validates (shapes, and label values with
:func:`seg_jax.losses.check_labels`, eagerly, naming the split, index and file/id of a bad
example), then crops/resizes to :attr:`SegDataset.spatial_shape` and applies the augmentation.

Conventions:

* ``image``: float32 ``(*spatial_shape, in_channels)``; 8-bit sources are scaled to ``[0, 1]``
  (``x / 255``), 16-bit ones by ``x / 65535``, float sources are left as they are.
* ``label``: int32 ``spatial_shape`` class map with values in ``[0, num_classes)`` or
  ``ignore_index`` (when not ``None``; e.g. 255 for oxford_iiit_pet's trimap border).
* Resizing (when a record's size differs from ``spatial_shape``, and for the random scale
  augmentation) is bilinear with antialiasing for images (PIL) and nearest-neighbour for labels;
  the whole image is resized, so the aspect ratio changes for non-square records.
* Augmentation (training only), given a ``numpy.random.Generator`` seeded per example by the
  pipeline: a random zoom :math:`z \sim U[\mathrm{scale\_min}, \mathrm{scale\_max}]` crops a window
  of :math:`(H/z, W/z)` at a uniform random position and resizes it to ``spatial_shape``;
  then horizontal and vertical flips with probability 1/2 each and, if enabled, a rotation by
  :math:`k \cdot 90°`, :math:`k \sim U\{0,1,2,3\}` (square shapes only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from seg_jax.losses import check_labels

Decoder = Callable[[Mapping[str, Any]], tuple[np.ndarray, np.ndarray, str]]


@dataclasses.dataclass(frozen=True)
class Augment:
  """Augmentation settings (see the module docstring for the exact transforms).

  Attributes:
    flip_horizontal: flip left-right with probability 1/2.
    flip_vertical: flip up-down with probability 1/2.
    rotate90: rotate by a random multiple of 90 degrees (square ``spatial_shape`` only).
    scale_min, scale_max: range of the random zoom factor (``1 <= scale_min <= scale_max``);
      ``1, 1`` disables the random crop.
  """

  flip_horizontal: bool = True
  flip_vertical: bool = True
  rotate90: bool = False
  scale_min: float = 1.0
  scale_max: float = 1.25

  def __post_init__(self):
    if not 1.0 <= self.scale_min <= self.scale_max:
      raise ValueError(
        "augment: need 1 <= scale_min <= scale_max (zoom factors; the crop window is the image "
        f"divided by the zoom), got scale_min={self.scale_min}, scale_max={self.scale_max}."
      )


@dataclasses.dataclass(frozen=True, eq=False)
class SegDataset:
  """A segmentation data set: metadata plus random-access sources per split.

  Attributes:
    name: display name, e.g. ``'synthetic_shapes/balanced'``.
    num_classes: number of classes (2 for binary data; class 0 is the background).
    class_names: one name per class.
    in_channels: image channels.
    spatial_shape: ``(H, W)`` of every example the pipeline yields.
    ignore_index: label value marking pixels to ignore, or ``None``.
    sources: split name -> random-access source of raw records (``len`` and ``[i]``), e.g.
      ``tfds`` ArrayRecord data sources.
    decode: raw record -> ``(image, label, id)``: image ``(h, w, c)`` (any numeric dtype, see the
      module docstring for the scaling), integer label ``(h, w)`` and a text id (file name) used in
      error messages.
    augment: training augmentation settings.
    num_threads: threads reading and augmenting batches (grain ``ReadOptions``).
    prefetch: number of batches prepared ahead.
    num_workers: grain worker processes (0: none, the default).
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  in_channels: int
  spatial_shape: tuple[int, int]
  ignore_index: int | None
  sources: Mapping[str, Any]
  decode: Decoder
  augment: Augment = dataclasses.field(default_factory=Augment)
  num_threads: int = 2
  prefetch: int = 2
  num_workers: int = 0

  def __post_init__(self):
    if len(self.class_names) != self.num_classes:
      raise ValueError(
        f"{self.name}: {len(self.class_names)} class_names {self.class_names} for "
        f"num_classes={self.num_classes}."
      )

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.sources)

  def num_examples(self, split: str) -> int:
    """Number of examples of ``split``."""
    return len(self.source(split))

  def source(self, split: str):
    """The raw random-access source of ``split``; ``KeyError`` lists the valid splits."""
    if split not in self.sources:
      raise KeyError(f"{self.name}: unknown split {split!r}; valid splits are {self.splits}.")
    return self.sources[split]

  def example(
    self, split: str, index: int, rng: np.random.Generator | None = None
  ) -> dict[str, np.ndarray]:
    """Decodes, validates and (with ``rng``) augments example ``index`` of ``split``.

    Returns:
      ``{'image': float32 (*spatial_shape, in_channels), 'label': int32 spatial_shape}``.

    Raises:
      ValueError: the record is malformed or holds labels outside the classes; the message
        names the data set, split, index and the record's id/file.
    """
    record = self.source(split)[int(index)]
    return self.prepare(split, int(index), record, rng)

  def prepare(
    self, split: str, index: int, record: Mapping[str, Any], rng: np.random.Generator | None
  ) -> dict[str, np.ndarray]:
    """:meth:`example` for an already read ``record`` (the pipeline reads through grain)."""
    try:
      image, label, ident = self.decode(record)
    except (TypeError, ValueError) as err:
      raise ValueError(f"{self.name} split {split!r} example {index}: {err}") from err
    where = f"{self.name} split {split!r} example {index} ({ident})"
    image, label = self._validate(image, label, where)
    if rng is None:
      image, label = resize(image, label, self.spatial_shape)
    else:
      image, label = augment(image, label, self.spatial_shape, self.augment, rng)
    return {"image": image, "label": label}

  def _validate(self, image, label, where) -> tuple[np.ndarray, np.ndarray]:
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim == 2:
      image = image[..., None]
    if label.ndim == 3 and label.shape[-1] == 1:
      label = label[..., 0]
    if image.ndim != 3 or image.shape[-1] != self.in_channels:
      raise ValueError(
        f"{where}: image must be (height, width, {self.in_channels}), got shape {image.shape}."
      )
    if label.ndim != 2:
      raise ValueError(f"{where}: label must be a (height, width) class map, got {label.shape}.")
    if label.shape != image.shape[:2]:
      raise ValueError(
        f"{where}: label size {label.shape} differs from image size {image.shape[:2]}."
      )
    try:
      check_labels(label, self.num_classes, self.ignore_index)
    except (TypeError, ValueError) as err:
      raise ValueError(f"{where}: {err} Classes: {self.class_names}.") from None
    return to_float(image), label.astype(np.int32)


def to_float(image: np.ndarray) -> np.ndarray:
  """float32 image: uint8 / 255, uint16 / 65535, bool as 0/1, other dtypes unscaled."""
  if image.dtype == np.uint8:
    return image.astype(np.float32) / np.float32(255)
  if image.dtype == np.uint16:
    return image.astype(np.float32) / np.float32(65535)
  return image.astype(np.float32)


def resize(
  image: np.ndarray, label: np.ndarray, shape: tuple[int, int], box=None
) -> tuple[np.ndarray, np.ndarray]:
  """Resizes the window ``box = (x0, y0, x1, y1)`` (default: everything) to ``shape``.

  Images: bilinear with antialiasing (PIL, per channel, float32); labels: nearest neighbour.
  An identity request (full box, same size) returns copies of the inputs unchanged.
  """
  h, w = label.shape
  if box is None:
    box = (0.0, 0.0, float(w), float(h))
  if tuple(shape) == (h, w) and tuple(box) == (0.0, 0.0, float(w), float(h)):
    return image.copy(), label.copy()
  size = (int(shape[1]), int(shape[0]))  # PIL sizes are (width, height).
  channels = [
    np.asarray(
      Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
        size, Image.Resampling.BILINEAR, box=box
      )
    )
    for c in range(image.shape[-1])
  ]
  out_label = np.asarray(
    Image.fromarray(label.astype(np.int32)).resize(size, Image.Resampling.NEAREST, box=box)
  )
  return np.stack(channels, axis=-1).astype(np.float32), out_label.astype(np.int32)


def augment(
  image: np.ndarray,
  label: np.ndarray,
  shape: tuple[int, int],
  options: Augment,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """Random zoom-crop to ``shape``, flips and optional 90-degree rotation (module docstring)."""
  h, w = label.shape
  zoom = rng.uniform(options.scale_min, options.scale_max)
  ch, cw = h / zoom, w / zoom
  y0, x0 = rng.uniform(0.0, h - ch), rng.uniform(0.0, w - cw)
  flip_h, flip_v, k = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
  box = (0.0, 0.0, float(w), float(h)) if zoom == 1.0 else (x0, y0, x0 + cw, y0 + ch)
  image, label = resize(image, label, shape, box)
  if options.flip_horizontal and flip_h:
    image, label = image[:, ::-1], label[:, ::-1]
  if options.flip_vertical and flip_v:
    image, label = image[::-1], label[::-1]
  if options.rotate90 and shape[0] == shape[1] and k:
    image, label = np.rot90(image, k), np.rot90(label, k)
  return np.ascontiguousarray(image), np.ascontiguousarray(label)
